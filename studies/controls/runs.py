"""The IMP and SWAMP run directories the controls are measured on, and the grid they form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.artifacts.checkpoint import build_model, load_checkpoint
from core.artifacts.rundir import RunDir, read_metrics
from core.errors import UserError
from landscape.batches import ArgumentError
from landscape.permutations import permutation_spec
from studies.grid.manifest import MANIFEST, cycles_done
from studies.manifest import check_fields, method_roles, read_json_object, read_study

# What find_runs reads of a run's config.json; a config.json without them is not a run's and is skipped.
RUN_KEYS = {"model": str, "particles": int, "swa": bool, "seed": int, "rewind_epochs": int}


@dataclass(frozen=True)
class Run:
    """One IMP or SWAMP run directory and what its ``config.json`` says of it."""

    path: Path
    model: str
    method: str  # imp or swamp
    seed: int
    rewind: int
    particles: int
    cycles: tuple[int, ...]  # the finished ones

    def average(self, cycle: int) -> Path:
        return self.path / f"cycle_{cycle:02d}" / "average.safetensors"

    def metrics(self, cycle: int) -> dict[str, Any]:
        """The cycle's ``metrics.json``, checked (:func:`core.artifacts.rundir.read_metrics`)."""
        return read_metrics(RunDir(self.path), cycle)


Grid = dict[tuple[str, str], dict[int, Run]]  # (model, method) -> seed -> run


def _config_method(cfg: dict[str, Any]) -> str | None:
    """imp (one particle, no SWA), swamp (N > 1 particles with SWA from the first cycle) or None; one-shot
    pruning (``pruning_schedule``, :mod:`training.oneshot`) is neither."""
    if cfg.get("pruning_schedule"):
        return None
    if cfg["particles"] == 1 and not cfg["swa"]:
        return "imp"
    return "swamp" if cfg["particles"] > 1 and cfg["swa"] and not cfg.get("particles_from_cycle") else None


def _study_methods(study: Path) -> dict[Path, str]:
    """Sub-run directory -> imp or swamp for the sub-runs of a study (:mod:`studies.grid.cli`) whose method plays
    the role ``imp`` or ``swamp`` (:func:`studies.manifest.method_roles`); the other arms are left out."""
    manifest = read_study(study)
    roles = method_roles(manifest)
    return {study / entry["path"]: roles.of[entry["method"]] for entry in manifest["runs"]
            if roles.of.get(entry["method"]) in ("imp", "swamp")}


def find_runs(root: Path) -> list[Run]:
    """Every IMP or SWAMP run directory with a finished cycle under ``root`` (others are skipped), sorted.

    Inside a study directory (``STUDY/runs/NAME`` beside a ``study.json``) a sub-run counts only when its
    method plays the role ``imp`` or ``swamp``, so the other SWAMP arms (N = 2, 8) are not mixed in. Two runs
    of the same model, method, seed and rewind point are refused: they would be one seed of the grid.

    Example:
        >>> [(r.model, r.method, r.seed) for r in find_runs(Path("runs/controls"))][:1]  # doctest: +SKIP
        [('cnn1d', 'imp', 0)]
    """
    runs: dict[tuple[str, str, int, int], Run] = {}
    studies: dict[Path, dict[Path, str]] = {}
    for config in sorted(Path(root).rglob("config.json")):
        remedy = f"restore it, or move {config.parent} out of {root}"
        cfg = read_json_object(config, remedy)
        if not RUN_KEYS.keys() <= cfg.keys():
            continue
        check_fields(config, cfg, {**RUN_KEYS, **({"cycles": int} if "cycles" in cfg else {})}, remedy)
        study = config.parent.parent.parent
        if config.parent.parent.name == "runs" and (study / MANIFEST).is_file():
            method = studies.setdefault(study, _study_methods(study)).get(config.parent)
        else:
            method = _config_method(cfg)
        cycles = tuple(range(min(cfg.get("cycles", 0), cycles_done(config.parent))))
        if not method or not cycles:
            continue
        run = Run(config.parent, cfg["model"], method, cfg["seed"], cfg["rewind_epochs"], cfg["particles"], cycles)
        key = (run.model, run.method, run.seed, run.rewind)
        if key in runs:
            raise UserError(f"{runs[key].path} and {run.path} are both {run.method} runs of {run.model}, seed "
                            f"{run.seed}, rewind {run.rewind}; give a directory holding one of them")
        runs[key] = run
    if not runs:
        raise UserError(f"{root} holds no finished IMP or SWAMP run directory (config.json with a cycle)")
    return sorted(runs.values(), key=lambda r: r.path)


def grid_runs(runs: Sequence[Run], rewind: int) -> Grid:
    """The runs at rewind point ``rewind``, as (model, method) -> seed -> run."""
    out: Grid = {}
    for run in runs:
        if run.rewind == rewind:
            out.setdefault((run.model, run.method), {})[run.seed] = run
    return out


def unalignable_models(runs: Sequence[Run], *, trust_code: bool = False) -> dict[str, str]:
    """Model name -> why weight matching refuses it (:func:`landscape.permutations.permutation_spec`); building a
    ``PACKAGE.MODULE:CALLABLE`` model (user code) needs ``trust_code``."""
    out = {}
    for model in sorted({r.model for r in runs}):
        first = next(r for r in runs if r.model == model)
        ckpt = load_checkpoint(first.average(first.cycles[0]), trust_code=trust_code)
        try:
            permutation_spec(build_model(ckpt, "cpu"))
        except ArgumentError as exc:
            out[model] = str(exc)
    return out


def accuracy_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Test accuracy and loss of every cycle's solution (its ``metrics.json``)."""
    return [{"model": r.model, "method": r.method, "seed": r.seed, "rewind": r.rewind, "cycle": k,
             "sparsity": r.metrics(k)["sparsity"], "test_acc": r.metrics(k)["average"]["test_acc"],
             "test_loss": r.metrics(k)["average"]["test_loss"]} for r in runs for k in r.cycles]
