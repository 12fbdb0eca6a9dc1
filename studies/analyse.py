"""``python -m studies.analyse DIR``: the landscape measurements of a study, cached as JSON.

Reads a study directory of :mod:`studies.grid.cli` and writes, atomically, one file per measurement
``DIR/analysis/KIND/RUN/cycle_KK.json``; a rerun computes only the missing ones, so it can be
interrupted and continued, and the notebooks only read files. For every finished cycle k it measures
barriers between the particles (``pairs``) and between consecutive cycles' solutions (``consecutive``),
the particles' convex hull (``hull``), loss planes (``plane``) and Hessian traces (``hessian``): the
table of :mod:`studies.measurements`.

Runs are chosen by their method's role (:func:`studies.manifest.method_roles`): "SWAMP" is the
method of role ``swamp`` (N = 4 in the full grid), IMP, SWA and particles those of roles ``imp``,
``swa`` and ``particles``. The measurements and their settings are one registry,
:data:`studies.measurements.MEASUREMENTS` (``--only`` takes its names), where a new one is added.
``analysis/settings.json`` records the :class:`~studies.measurements.AnalysisSettings`; a study made
with ``--quick`` gets :data:`~studies.measurements.QUICK_SETTINGS`. With ``--launcher submitit-local`` or
``slurm`` (:mod:`studies.grid.launchers`, docs/cluster.md) each sub-run's missing measurements are one
submitit job, and the command waits for them (the same files as in one process).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from core.artifacts.jsonfile import BadJSON, read_json
from core.artifacts.lock import LOCK_NAME, exclusive
from core.artifacts.ownership import check_usable_directory
from core.device import resolve_device
from core.errors import ArgumentParser, UserError, run_cli
from core.options import add_dataclass_arguments, from_args, to_json
from core.progress import tqdm
from landscape.tools.artifacts import EvalOptions
from landscape.tools.cli import write_json
from studies.grid.launchers import SUBMITIT, LauncherOptions, add_launcher_flags, check_device, launcher_options
from studies.grid.manifest import cycles_done
from studies.grid.workers import WorkerPool, check_jobs, set_threads, worker_threads
from studies.manifest import ANALYSIS, method_roles, read_study
from studies.measurements import KINDS as KINDS  # the names, as before the registry had a module of its own
from studies.measurements import (
    MEASUREMENTS,
    QUICK_SETTINGS,
    AnalysisSettings,
    Where,
    result_path,
)


@dataclass(frozen=True)
class Job:
    """One measurement: ``compute()`` returns its JSON object."""

    kind: str
    run: str
    cycle: int
    compute: Callable[[], dict[str, Any]]

    def path(self, root: Path) -> Path:
        return result_path(root, self.kind, self.run, self.cycle)


def plan_jobs(root: Path, manifest: dict[str, Any], settings: AnalysisSettings, options: EvalOptions,
              device: str) -> list[Job]:
    """Every measurement the notebooks read, for the cycles that exist now."""
    roles = method_roles(manifest)
    first_seed = manifest["seeds"][0]
    jobs = []
    for entry in manifest["runs"]:
        run = root / entry["path"]
        done = list(range(cycles_done(run)))
        for kind, measurement in MEASUREMENTS.items():
            if entry["method"] not in roles.methods(*measurement.roles) or (
                    measurement.first_seed and entry["seed"] != first_seed):
                continue
            for k in measurement.cycles(done):
                jobs.append(Job(kind, entry["name"], k, _measure(kind, run, k, settings, options, device)))
    return jobs


def _measure(kind: str, run: Path, k: int, settings: AnalysisSettings, options: EvalOptions,
             device: str) -> Callable[[], dict[str, Any]]:
    at = Where(run, k, settings, options, device)
    return lambda: MEASUREMENTS[kind].measure(at)


def default_settings(manifest: dict[str, Any]) -> AnalysisSettings:
    return QUICK_SETTINGS if manifest.get("quick") else AnalysisSettings()


def check_settings(root: Path, settings: AnalysisSettings) -> None:
    """Measurements of one study must share their settings; the first analysis records them."""
    path = root / ANALYSIS / "settings.json"
    body = to_json(settings)
    if path.is_file():
        try:
            saved = read_json(path)
        except (OSError, BadJSON) as err:
            raise UserError(f"{path} is unreadable ({err}); delete {root / ANALYSIS} to recompute everything") \
                from None
        if saved != body:
            what = "records other analysis settings" if isinstance(saved, dict) else "is not a settings object"
            raise UserError(f"{path} {what}; delete {root / ANALYSIS} to recompute everything")
    write_json(path, body)


def _compute(job: Job, root: Path) -> Path:
    # the study's names last: a barrier set's own "run" is a path
    write_json(job.path(root), {**job.compute(), "kind": job.kind, "run": job.run, "cycle": job.cycle})
    return job.path(root)


def _compute_in_worker(kind: str, run: str, cycle: int, root: Path, settings: AnalysisSettings,
                       options: EvalOptions, device: str, threads: int) -> Path:
    """One measurement in a worker process (``jobs`` > 1), rebuilt from picklable arguments."""
    set_threads(threads)
    measure = _measure(kind, root / "runs" / run, cycle, settings, options, device)
    return _compute(Job(kind, run, cycle, measure), root)


def _controls_only(analysis: Path) -> bool:
    """Whether ``analysis`` is a directory holding only what ``python -m studies.controls`` writes there."""
    return analysis.is_dir() and not analysis.is_symlink() and \
        {p.name for p in analysis.iterdir()} - {LOCK_NAME} == {"controls"} and (analysis / "controls").is_dir()


def analyse_study(root: str | Path, settings: AnalysisSettings | None = None, kinds: Sequence[str] | None = None,
                  device: str = "cpu", data_dir: str | None = None, progress: bool | None = None,
                  jobs: int = 1, launch: LauncherOptions | None = None, *, trust_code: bool = False) -> list[Path]:
    """Compute every missing measurement of the study; returns the files written now.

    With ``jobs`` > 1 the measurements are spread over that many (spawned) worker processes, each with
    ``1/jobs`` of the torch threads; every measurement is seeded by ``settings.seed``, so the files are
    the same as with one process (given the same threads per process). ``launch`` (default: ``processes``
    with ``jobs``) chooses the launcher (:mod:`studies.grid.launchers`); with a submitit one, each sub-run's
    missing measurements are one job (:func:`_compute_chunk`, on the device ``device`` names on the
    job's node), and the call waits for them all. ``trust_code`` (``--trust-code``) allows the
    ``PACKAGE.MODULE:CALLABLE`` model or data set the study's checkpoints name (user code, imported only then).
    ``kinds``: the names of :data:`~studies.measurements.MEASUREMENTS` to compute (None: all).
    """
    launch = launch or LauncherOptions(jobs=jobs)
    check_jobs(launch.jobs)
    kinds = tuple(MEASUREMENTS) if kinds is None else kinds
    check_kinds(kinds)
    root = Path(root)
    manifest = read_study(root)
    settings = settings or default_settings(manifest)
    settings.validate()
    if not _controls_only(root / ANALYSIS):  # python -m studies.controls may have written analysis/controls first
        check_usable_directory(root / ANALYSIS, "settings.json", "study analysis", "DIR/analysis")
    (root / ANALYSIS).mkdir(parents=True, exist_ok=True)
    with exclusive(root / ANALYSIS, "analysis directory"):  # one analysing process per study
        check_settings(root, settings)
        options = settings.eval_options(device, data_dir, False, trust_code)
        return _analyse(root, manifest, settings, kinds, device, options, progress, launch)


def _analyse(root: Path, manifest: dict[str, Any], settings: AnalysisSettings, kinds: Sequence[str], device: str,
             options: EvalOptions, progress: bool | None, launch: LauncherOptions) -> list[Path]:
    todo = [j for j in plan_jobs(root, manifest, settings, options, device)
            if j.kind in kinds and not j.path(root).is_file()]
    disable = None if progress is None else not progress
    bar = tqdm(total=len(todo), desc="analysis", unit="measurement", disable=disable)
    written: list[Path] = []
    jobs = launch.jobs
    if launch.name in SUBMITIT and todo:
        _analyse_in_jobs(root, todo, settings, options, device, launch, written, bar)
        bar.close()
        return written
    if jobs == 1 or len(todo) <= 1:
        for job in todo:
            written.append(_compute(job, root))
            bar.update()
        bar.close()
        return written
    from concurrent.futures import as_completed

    threads = worker_threads(jobs)
    with WorkerPool(jobs) as pool:
        futures = [pool.submit(_compute_in_worker, j.kind, j.run, j.cycle, root, settings, options, device, threads)
                   for j in todo]
        for future in as_completed(futures):
            written.append(future.result())
            bar.update()
    bar.close()
    return written


def _compute_chunk(items: Sequence[tuple[str, str, int]], root: Path, settings: AnalysisSettings,
                   options: EvalOptions, device: str, threads: int | None) -> tuple[list[Path], str | None]:
    """The measurements ``items`` (kind, run, cycle) of one submitit job, on the device ``device`` names
    here (the job's node); returns the files written and a user error that stopped it (None: none), which
    the analysing command reports."""
    written: list[Path] = []
    try:
        here = str(resolve_device(device))
        for kind, run, cycle in items:
            written.append(_compute_in_worker(kind, run, cycle, root, settings, replace(options, device=here), here,
                                              threads))
    except UserError as err:
        return written, str(err)
    return written, None


def _analyse_in_jobs(root: Path, todo: Sequence[Job], settings: AnalysisSettings, options: EvalOptions, device: str,
                     launch: LauncherOptions, written: list[Path], bar: Any) -> None:
    """``todo`` as one submitit job per sub-run (its chunk of measurements), the job folder ``analysis/jobs``."""
    from studies.grid.submitit_launcher import run_jobs

    chunks: dict[str, list[tuple[str, str, int]]] = {}
    for job in todo:
        chunks.setdefault(job.run, []).append((job.kind, job.run, job.cycle))

    def done(result: tuple[list[Path], str | None]) -> None:
        paths, error = result
        written.extend(paths)
        bar.update(len(paths))
        if error is not None:
            raise UserError(error)

    run_jobs(launch, (root / ANALYSIS / "jobs").absolute(), f"analyse-{root.absolute().name}", _compute_chunk,
             [(items, root, settings, options, device) for items in chunks.values()], done)


def check_kinds(kinds: Sequence[str]) -> None:
    if not kinds or not set(kinds) <= set(MEASUREMENTS) or len(set(kinds)) != len(kinds):
        raise UserError(f"--only takes a comma-separated subset of {', '.join(MEASUREMENTS)}, not {','.join(kinds)!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m studies.analyse",
        description="Compute the landscape measurements of a study directory (barriers, hulls, planes, Hessian "
                    "traces) into DIR/analysis/; rerun to continue. The JSON it writes: docs/format.md.")
    parser.add_argument("study", metavar="DIR", help="a study directory of python -m studies.grid")
    parser.add_argument("--only", default=",".join(MEASUREMENTS), metavar="KIND,...",
                        help="measurements to compute, a comma-separated subset of " + ", ".join(MEASUREMENTS) +
                             " (default all): " + ", ".join(f"{kind} = {m.about}" for kind, m in MEASUREMENTS.items()))
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda or cuda:N (default auto: the first GPU if there is one; with "
                             "--launcher slurm, of each job's node)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="where the data set is read and cached (default data/ in the working directory; never "
                             "where a checkpoint says)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar (default: only on a terminal)")
    parser.add_argument("--jobs", type=int, default=1, metavar="K",
                        help="compute K measurements at once in separate processes (e.g. one per CPU core), or "
                             "with --launcher submitit-local K jobs at once (default 1)")
    add_launcher_flags(parser, "sub-run's chunk of measurements")
    add_dataclass_arguments(parser, EvalOptions, only=("trust_code",))

    def shown(value: Any) -> str:
        return ",".join(value) if isinstance(value, tuple) else str(value)

    add_dataclass_arguments(parser, AnalysisSettings, unset=True, default_words={
        f.name: f"{shown(f.default)}; {shown(getattr(QUICK_SETTINGS, f.name))} for --quick studies"
        for f in fields(AnalysisSettings)})
    return parser


def parse_analysis(argv: Sequence[str] | None) -> tuple[argparse.Namespace, AnalysisSettings | None, list[str]]:
    """The flags, the validated settings (None: the study's defaults) and the measurement kinds of
    ``python -m studies.analyse`` (the launcher's settings in ``args.launch``); every flag is checked and
    nothing is written."""
    args = build_parser().parse_args(argv)
    args.launch = launcher_options(args)
    kinds = args.only.split(",")
    check_kinds(kinds)
    args.device = check_device(args.device, args.launch.name)
    settings = None
    if any(getattr(args, f.name) is not None for f in fields(AnalysisSettings)):
        settings = from_args(AnalysisSettings, args, base=default_settings(read_study(args.study)))
        settings.validate()
    return args, settings, kinds


def main(argv: Sequence[str] | None = None) -> int:
    args, settings, kinds = parse_analysis(argv)
    written = analyse_study(args.study, settings, kinds, args.device, args.data_dir, args.progress,
                            launch=args.launch, trust_code=args.trust_code)
    print(f"{len(written)} measurements written under {Path(args.study) / ANALYSIS}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, rerun="rerun the same command to continue (finished measurements are kept)"))
