"""The controls' measurements cached one JSON file each under ``ROOT/analysis/controls``, computed only when
missing (so an interrupted run continues), optionally in worker processes.

``ROOT/analysis/controls/settings.json`` records :meth:`Settings.recorded`; every file
``KIND/KEY.json`` (:class:`studies.controls.measurements.Measurement`) holds ``{"kind", "key", "seconds",
"row"}``, ``row`` being one row of :attr:`Controls.rows`. Accuracies are read from the runs' ``metrics.json``
each time (they are not measurements).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.artifacts.atomic import remove_stale_temporaries
from core.artifacts.lock import exclusive
from core.artifacts.outputs import enclosing_run
from core.artifacts.ownership import check_usable_directory
from core.errors import UserError
from core.options import flag_of
from core.progress import tqdm
from landscape.tools.cli import write_json
from studies.controls.measurements import KINDS, Controls, Measurement, Settings, measure_row, plan_measurements
from studies.controls.runs import Run, accuracy_rows, find_runs, unalignable_models
from studies.grid.workers import WorkerPool, check_jobs, set_threads, worker_threads
from studies.manifest import ANALYSIS, read_json_object

SETTINGS_FILE = "settings.json"
_SECONDS = {"particle_hulls": "hulls", "seed_hulls": "hulls"}  # the seconds of both hull kinds are summed


def cache_dir(root: str | Path) -> Path:
    """Where the controls of the runs under ``root`` are cached: ``ROOT/analysis/controls``."""
    return Path(root) / ANALYSIS / "controls"


def result_path(cache: Path, m: Measurement) -> Path:
    return cache / m.kind / f"{m.key}.json"


@dataclass(frozen=True)
class CachedControls:
    """What the cache holds now: the rows of the cached measurements (``controls``), how many planned
    measurements are ``missing`` of ``planned``, and the ``command`` that computes them."""

    controls: Controls
    missing: int
    planned: int
    command: str


def _command(root: Path, settings: Settings) -> str:
    return shlex.join(["python", "-m", "studies.controls", str(root), *settings.flags()])


def _plan(root: Path, settings: Settings) -> tuple[list[Run], dict[str, str], list[Measurement]]:
    runs = find_runs(root)
    if not any(r.rewind == settings.rewind for r in runs):
        raise UserError(f"no run under {root} has --rewind-epochs {settings.rewind}; pass --rewind")
    unalignable = unalignable_models(runs, trust_code=settings.trust_code)
    return runs, unalignable, plan_measurements(runs, settings, unalignable)


def check_settings(cache: Path, settings: Settings) -> None:
    """The measurements of one cache share their settings; the first run records them in ``settings.json``."""
    path = cache / SETTINGS_FILE
    body = settings.recorded()
    if path.is_file():
        saved = read_json_object(path, f"delete {cache} to recompute everything")
        if saved != body:
            name = next((k for k in body if saved.get(k) != body[k]), None)
            what = f" ({flag_of(name)} {saved.get(name)}, not {body[name]})" if name else ""
            raise UserError(f"{path} records other controls settings{what}; rerun with the recorded flags, or "
                            f"delete {cache} to recompute everything")
    write_json(path, body)


def read_settings(cache: Path) -> Settings:
    """The :class:`Settings` recorded in ``cache`` (``data_dir`` None, ``trust_code`` False)."""
    names = list(Settings().recorded())
    saved = read_json_object(cache / SETTINGS_FILE, f"delete {cache} to recompute everything",
                             dict.fromkeys(names, int))
    settings = Settings(**{k: saved[k] for k in names})
    settings.validate()
    return settings


def _compute(m: Measurement, settings: Settings, cache: Path) -> Path:
    start = time.perf_counter()
    row = measure_row(m, settings)
    path = result_path(cache, m)
    write_json(path, {"kind": m.kind, "key": m.key, "seconds": time.perf_counter() - start, "row": row})
    return path


def _compute_in_worker(m: Measurement, settings: Settings, cache: Path, threads: int) -> Path:
    """One measurement in a worker process (``jobs`` > 1), with its share of the torch threads."""
    set_threads(threads)
    return _compute(m, settings, cache)


def _compute_all(todo: Sequence[Measurement], settings: Settings, cache: Path, jobs: int,
                 progress: bool | None) -> None:
    bar = tqdm(total=len(todo), desc="controls", unit="measurement", disable=None if progress is None else not progress)
    if jobs == 1 or len(todo) <= 1:
        for m in todo:
            _compute(m, settings, cache)
            bar.update()
    else:
        threads = worker_threads(jobs)
        with WorkerPool(jobs) as pool:
            futures = [pool.submit(_compute_in_worker, m, settings, cache, threads) for m in todo]
            for future in as_completed(futures):
                future.result()
                bar.update()
    bar.close()


def _read(cache: Path, m: Measurement, remedy: str) -> tuple[dict[str, Any], float]:
    """The row and seconds of a cached measurement, refused (one line) unless it is that measurement's."""
    path = result_path(cache, m)
    obj = read_json_object(path, remedy, {"kind": str, "key": str, "row": dict})
    row = obj["row"]
    if (obj["kind"], obj["key"]) != (m.kind, m.key) or any(row.get(k) != v for k, v in m.labels.items()):
        raise UserError(f"{path} is damaged or was measured on other runs (its labels are not "
                        f"{m.labels}); {remedy}")
    seconds = obj.get("seconds")
    return row, float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else 0.0


def _collect(root: Path, cache: Path, settings: Settings, runs: Sequence[Run], unalignable: dict[str, str],
             plan: Sequence[Measurement]) -> Controls:
    """The :class:`Controls` of the measurements of ``plan`` that are cached."""
    remedy = f"delete it and rerun {_command(root, settings)} to compute it again"
    rows: dict[str, list[dict[str, Any]]] = {"accuracy": accuracy_rows(runs), **{kind: [] for kind in KINDS}}
    seconds: dict[str, float] = {}
    for m in plan:
        if result_path(cache, m).is_file():
            row, took = _read(cache, m, remedy)
            rows[m.kind].append(row)
            group = _SECONDS.get(m.kind, m.kind)
            seconds[group] = seconds.get(group, 0.0) + took
    return Controls(settings, rows, unalignable, seconds)


def measure(root: str | Path, settings: Settings | None = None, jobs: int = 1, progress: bool | None = None,
            log: Callable[[str], None] | None = None) -> Controls:
    """Every control and treatment of the package docstring for the runs under ``root``, computing only the
    measurements missing from ``ROOT/analysis/controls`` (see the module docstring); ``settings`` None: the
    defaults.

    With ``jobs`` > 1 the measurements are computed in that many (spawned) worker processes, each with ``1/jobs``
    of the torch threads; every measurement is seeded, so the rows are the same as with one process (given the
    same threads per process). A cache made with other settings is refused (one :class:`UserError` line).
    ``log`` gets one line: how many measurements were computed now and how many read from the cache.

    Example:
        >>> controls = measure("runs/controls", Settings(rewind=2), jobs=2)  # doctest: +SKIP
        >>> sorted(controls.rows)[:2]  # doctest: +SKIP
        ['accuracy', 'flatness']
    """
    check_jobs(jobs)
    settings = settings or Settings()
    settings.validate()
    root = Path(root)
    cache = cache_dir(root)
    if (run := enclosing_run(cache)) is not None:
        raise UserError(f"{root} is inside the run {run}: the controls cache {cache} would be written into the run; "
                        "give the directory that holds the runs")
    runs, unalignable, plan = _plan(root, settings)
    check_usable_directory(cache, SETTINGS_FILE, "controls cache", "ROOT/analysis/controls")
    cache.mkdir(parents=True, exist_ok=True)
    with exclusive(cache, "controls cache"):  # one measuring process per cache
        check_settings(cache, settings)
        remove_stale_temporaries(cache)  # of a killed run
        todo = [m for m in plan if not result_path(cache, m).is_file()]
        _compute_all(todo, settings, cache, jobs, progress)
    if log is not None:
        log(f"{len(todo)} measurements computed now, {len(plan) - len(todo)} read from {cache}")
    return _collect(root, cache, settings, runs, unalignable, plan)


def cached_controls(root: str | Path, *, trust_code: bool = False) -> CachedControls | None:
    """What ``ROOT/analysis/controls`` holds, computing nothing; None when it has no ``settings.json`` (no
    controls were measured there). The settings are the recorded ones, ``data_dir`` None. Which models weight
    matching refuses is found by building one of each: a ``PACKAGE.MODULE:CALLABLE`` model needs ``trust_code``.

    Example:
        >>> state = cached_controls("runs/controls")  # doctest: +SKIP
        >>> state.missing, len(state.controls.rows["flatness"])  # doctest: +SKIP
        (0, 72)
    """
    root = Path(root)
    cache = cache_dir(root)
    if not (cache / SETTINGS_FILE).is_file():
        return None
    settings = replace(read_settings(cache), trust_code=trust_code)
    runs, unalignable, plan = _plan(root, settings)
    controls = _collect(root, cache, settings, runs, unalignable, plan)
    done = sum(len(controls.rows[kind]) for kind in KINDS)
    return CachedControls(controls, len(plan) - done, len(plan), _command(root, settings))
