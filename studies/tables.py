"""A study directory as pandas tables: what the figure notebooks read.

One row per (sub-run, cycle[, pair or sample]) with the sub-run's ``method`` and ``seed`` (from
``study.json``, :mod:`studies.grid.cli`), its ``cycle`` and ``density`` / ``sparsity``; the landscape
tables come from the cached measurements of :mod:`studies.analyse`. Methods are told apart by their
``role`` (:func:`studies.manifest.method_roles`), never by their names. :func:`mean_std` aggregates
over seeds (sample standard deviation, ddof = 1; NaN with one seed).

Cost is counted in particle-epochs (one particle trained for one epoch), cumulative up to cycle k:
rewind_epochs + epochs * sum_{j <= k} N_j for iterative methods (N_j = 1 before SWAMP+'s start
cycle), and rewind_epochs + epochs * (1 + [k > 0]) for one-shot pruning (dense training, then one
training at density d_k). ``cumulative_seconds`` counts the same cycles' wall-clock time (the
ticket's training not included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import UserError
from studies.manifest import (
    ANALYSIS,
    MethodRoles,
    measurement_remedy,
    method_roles,
    read_json_object,
    read_measurement,
)
from studies.manifest import read_study as read_manifest  # study.json checked for what the study layer reads

METRIC_COLUMNS = ["average_test_acc", "ensemble_test_acc", "particle_test_acc_mean", "average_test_loss"]
CONFIG_KEYS = {"epochs": int, "rewind_epochs": int, "particles": int, "particles_from_cycle": int}  # what _cost reads


def method_label(method: dict[str, Any], role: str) -> str:
    """A legend label of a method playing ``role``, e.g. ``SWAMP (N=4)`` or ``SWAMP+ (N=4 from cycle 5)``."""
    n = method["particles"]
    if role == "oneshot":
        return "one-shot " + ("random" if method.get("prune_method") == "random" else "magnitude")
    if role == "imp":
        return "IMP"
    if role == "swa":
        return "IMP + SWA (N=1)"
    if role == "particles":
        return f"particles, no SWA (N={n})"
    if role == "swamp-plus":
        return f"SWAMP+ (N={n} from cycle {method.get('particles_from_cycle', 0)})"
    if role in ("swamp", "swamp-n"):
        return f"SWAMP (N={n})"
    return method["name"]


def methods_frame(root: str | Path) -> pd.DataFrame:
    """The study's methods with their settings, ``role`` and legend ``label``, in the study's order."""
    manifest = read_manifest(root)
    methods, roles = manifest["methods"], method_roles(manifest)
    frame = pd.DataFrame(methods).rename(columns={"name": "method"})
    frame["role"] = [roles.of[m["name"]] for m in methods]
    frame["label"] = [method_label(m, roles.of[m["name"]]) for m in methods]
    return frame


def method_labels(root: str | Path) -> dict[str, str]:
    """``{method: legend label}``."""
    frame = methods_frame(root)
    return dict(zip(frame["method"], frame["label"], strict=True))


def _one_shot(config: dict[str, Any]) -> bool:
    return config.get("pruning_schedule") == "one-shot"


def _cost(config: dict[str, Any], cycle: int) -> int:
    """Particle-epochs to reach cycle ``cycle``'s sparsity, the ticket's epochs included."""
    epochs, ticket = config["epochs"], config["rewind_epochs"]
    if _one_shot(config):
        return ticket + epochs * (1 + (cycle > 0))
    return ticket + epochs * sum(config["particles"] if j >= config["particles_from_cycle"] else 1
                                 for j in range(cycle + 1))


def seconds_to_reach(config: dict[str, Any], seconds: pd.Series) -> list[float]:
    """Wall-clock seconds of the cycles needed for each cycle's sparsity (the ticket's not included):
    all cycles so far for iterative pruning; the dense cycle and the cycle itself for one-shot pruning,
    whose sparsities are trained independently of each other (as ``_cost`` counts them)."""
    if _one_shot(config):
        dense = float(seconds.iloc[0])
        return [dense + (float(s) if k > 0 else 0.0) for k, s in enumerate(seconds)]
    return [float(s) for s in seconds.cumsum()]


def accuracy_frame(root: str | Path) -> pd.DataFrame:
    """Every finished cycle of every sub-run: ``results.csv`` plus method, seed, role, label and cost."""
    root = Path(root)
    methods = methods_frame(root).set_index("method")
    frames = []
    for run in read_manifest(root)["runs"]:
        results = root / run["path"] / "results.csv"
        if not results.is_file():
            continue
        config = read_json_object(root / run["path"] / "config.json",
                                  f"restore it, or delete {root / run['path']} and rerun python -m studies.grid to "
                                  "train that sub-run again", CONFIG_KEYS)
        frame = pd.read_csv(results)
        frame.insert(0, "seed", run["seed"])
        frame.insert(0, "method", run["method"])
        frame["role"] = methods.at[run["method"], "role"]
        frame["label"] = methods.at[run["method"], "label"]
        frame["particle_epochs"] = [_cost(config, k) for k in frame["cycle"]]
        frame["cumulative_seconds"] = seconds_to_reach(config, frame["seconds"])
        frames.append(frame)
    if not frames:
        raise UserError(f"no sub-run of {root} has finished a cycle yet; let python -m studies.grid run first")
    return pd.concat(frames, ignore_index=True)


def chosen_cycles(done: Sequence[int], cycles: Sequence[int] | None, what: str) -> list[int]:
    """The cycles of ``done`` (finished by ``what``) that ``--cycles`` chooses (all if None); one
    :class:`UserError` line if none is finished or ``--cycles`` names one that is not."""
    if not done:
        raise UserError(f"no cycle is finished by {what}; let the studies run further")
    missing = [k for k in cycles or () if k not in done]
    if missing:
        raise UserError(f"--cycles {missing[0]} is not finished by {what} (cycles {', '.join(map(str, done))})")
    return [k for k in done if cycles is None or k in cycles]


def mean_std(frame: pd.DataFrame, by: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Mean, standard deviation over seeds and number of seeds of ``values`` per group ``by``.

    Rows of the same seed within a group (e.g. the pairs of one cycle) are first averaged, so the
    spread is between seeds.
    """
    per_seed = frame.groupby([*by, "seed"], sort=False)[list(values)].mean().reset_index()
    grouped = per_seed.groupby(list(by), sort=False)[list(values)]
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    out["seeds"] = grouped.size()
    return out.reset_index()


def _measured(root: Path, kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    runs = {r["name"]: r for r in read_manifest(root)["runs"]}
    for path in sorted((root / ANALYSIS / kind).glob("*/cycle_*.json")):
        obj = read_measurement(root, path)
        run = runs.get(obj["run"])
        if run is not None:
            yield path, {**obj, "method": run["method"], "seed": run["seed"]}


def measurements(root: str | Path, kind: str) -> Iterator[dict[str, Any]]:
    """The cached JSON objects of one kind (:data:`studies.analyse.KINDS`), with method and seed."""
    return (obj for _, obj in _measured(Path(root), kind))


def _measured_rows(root: Path, kind: str, rows: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> pd.DataFrame:
    """``rows(measurement)`` of every measurement of ``kind``, with densities; a measurement without the
    entries ``rows`` reads is one :class:`UserError` naming its file."""
    out = []
    for path, obj in _measured(root, kind):
        try:
            out += rows(obj)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise UserError(f"{path} is damaged (not a {kind} measurement: {type(err).__name__} {err}); "
                            f"{measurement_remedy(root)}") from None
    return _with_density(root, out)


def _densities(root: Path) -> dict[tuple[str, int], float]:
    acc = accuracy_frame(root)
    return {(m, int(c)): float(d) for m, c, d in zip(acc["method"], acc["cycle"], acc["density"], strict=True)}


def _with_density(root: Path, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows with the density of their method's cycle (mean over seeds are equal up to rounding)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    densities = _densities(root)
    frame["density"] = [densities[(m, int(c))] for m, c in zip(frame["method"], frame["cycle"], strict=True)]
    frame["sparsity"] = 1.0 - frame["density"]
    return frame


def barrier_frame(root: str | Path, kind: str) -> pd.DataFrame:
    """One row per measured pair and split: Frankle barriers of loss and error (``kind`` = pairs or
    consecutive; a consecutive row's cycle is the later one)."""
    def rows(obj: dict[str, Any]) -> list[dict[str, Any]]:
        pairs = obj["pairs"] if kind == "pairs" else [{"i": obj["cycle"] - 1, "j": obj["cycle"], **obj}]
        return [{"method": obj["method"], "seed": obj["seed"], "cycle": obj["cycle"], "i": pair["i"], "j": pair["j"],
                 "split": split, "loss_barrier": b["loss"], "error_barrier": b["error"]}
                for pair in pairs for split, b in pair["barrier"].items()]

    return _measured_rows(Path(root), kind, rows)


def hull_frame(root: str | Path, split: str = "test") -> pd.DataFrame:
    """One row per hull sample: its loss and accuracy, the worst vertex's loss and the centroid's."""
    def rows(obj: dict[str, Any]) -> list[dict[str, Any]]:
        vertex_max = obj["summary"][split]["vertex_loss_max"]
        centroid = obj["centroid"][split]
        return [{"method": obj["method"], "seed": obj["seed"], "cycle": obj["cycle"], "sample": n,
                 "loss": loss, "acc": acc, "vertex_loss_max": vertex_max,
                 "centroid_loss": centroid["loss"], "below_worst_vertex": loss <= vertex_max}
                for n, (loss, acc) in enumerate(zip(obj["hull"][split]["loss"], obj["hull"][split]["acc"],
                                                    strict=True))]

    return _measured_rows(Path(root), "hull", rows)


def hessian_frame(root: str | Path) -> pd.DataFrame:
    """One row per solution: Hutchinson trace and its standard error."""
    return _measured_rows(Path(root), "hessian", lambda o: [
        {"method": o["method"], "seed": o["seed"], "cycle": o["cycle"], "trace": o["trace"], "stderr": o["stderr"],
         "probes": o["probes"], "samples": o["samples"]}])


def planes(root: str | Path) -> list[dict[str, Any]]:
    """The loss planes that were computed (those with three particles), by cycle."""
    return [o for o in measurements(root, "plane") if "skipped" not in o]


def roles(root: str | Path) -> MethodRoles:
    """The role of every method of the study (:func:`studies.manifest.method_roles`): ``roles(root)["swamp"]``
    is its SWAMP method."""
    return method_roles(read_manifest(root))
