"""A control beside every landscape verdict (issue 17; docs/controls.md), on a directory of runs.

The runs are ``python -m training.imp`` (IMP: one particle, no SWA) and ``python -m training.swamp``
(SWAMP: N > 1 particles with SWA) run directories anywhere under ROOT; model, method, seed and rewind
point (``--rewind-epochs``) are read from each ``config.json``. The *grid* is the runs at one rewind point
(``--rewind``, default 2); every rewind point of a model is used only by the rewind table. Per model:

* **connectivity**: the test loss / error barrier (Frankle et al. 2020, ``points`` on the line, BatchNorm
  recomputed) between the particles of one SWAMP cycle (treatment: one ticket, one mask) beside the
  barrier between the solutions of two different seeds at the same cycle (control: another ticket, mask
  and data order), for IMP and SWAMP, raw and after weight matching (Ainsworth et al. 2023,
  :mod:`landscape.align`); "n/a" where alignment refuses the model;
* **hull**: uniform samples of the convex hull (:func:`landscape.subspace.hull_landscape`) of K particles
  of one cycle beside that of K solutions of K different seeds at the same cycle (K = ``--hull-vertices``);
  reported: mean hull loss minus the vertices' mean loss, largest hull loss minus the worst vertex's,
  and the fraction of samples at or below the worst vertex;
* **flatness**: raw Hessian trace and the BatchNorm-invariant traces (:func:`landscape.flatness.
  normalized_trace`, per layer and per channel) of SWAMP and IMP solutions, paired by seed, and their
  Spearman rank correlation with test accuracy over all (method, seed, cycle) points (also with ranks
  taken within each cycle, which removes the common trend with sparsity);
* **rewind point**: particle-pair barriers and SWAMP - IMP accuracy at every rewind point found;
* **accuracy**: SWAMP - IMP test accuracy of the grid, paired by seed.

Spread rule ("beyond the seed spread"): a paired difference (same seed) is resolved when it has the same
sign on every seed and |mean| > its standard deviation; a treatment is separated from an unpaired control
when the intervals mean +- std (std over seeds, or over seed pairs) do not overlap. Means +- sample std;
wins/ties/losses count seeds.

``python -m studies.controls ROOT [--rewind 2] [--json OUT]`` prints the Markdown tables.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape.artifacts import EvalOptions, checkpoint_data, run_particles
from landscape.barrier import checkpoint_barrier
from landscape.batches import ArgumentError
from landscape.cli import write_json
from landscape.flatness import normalized_trace
from landscape.hessian_report import HessianOptions, training_batches
from landscape.permutations import permutation_spec
from landscape.subspace import hull_landscape
from studies.claims import Paired, paired
from training.artifacts.checkpoint import build_model, load_checkpoint
from training.errors import ArgumentParser, UserError, run_cli


@dataclass(frozen=True)
class Settings:
    """What is measured and how; each field is a flag of ``python -m studies.controls``."""

    rewind: int = 2
    points: int = 11
    hull_samples: int = 32
    hull_vertices: int = 3
    probes: int = 32
    hessian_samples: int = 1024
    data_dir: str | None = None


@dataclass(frozen=True)
class Run:
    path: Path
    model: str
    method: str  # imp or swamp
    seed: int
    rewind: int
    particles: int
    cycles: tuple[int, ...]

    def average(self, cycle: int) -> Path:
        return self.path / f"cycle_{cycle:02d}" / "average.safetensors"

    def metrics(self, cycle: int) -> dict[str, Any]:
        return json.loads((self.path / f"cycle_{cycle:02d}" / "metrics.json").read_text())


@dataclass(frozen=True)
class Controls:
    """Every measured row, by kind (``accuracy``, ``particle_pairs``, ``seed_pairs``, ``particle_hulls``,
    ``seed_hulls``, ``flatness``), the settings, which models alignment refuses, and seconds per kind."""

    settings: Settings
    rows: dict[str, list[dict[str, Any]]]
    unalignable: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "rows": self.rows, "unalignable": self.unalignable,
                "seconds": self.seconds}


def find_runs(root: Path) -> list[Run]:
    """Every finished-cycle IMP or SWAMP run directory under ``root`` (others are skipped), sorted."""
    runs = []
    for config in sorted(root.rglob("config.json")):
        cfg = json.loads(config.read_text())
        if not {"model", "particles", "swa", "seed", "rewind_epochs"} <= cfg.keys():
            continue
        method = "imp" if cfg["particles"] == 1 and not cfg["swa"] else \
            "swamp" if cfg["particles"] > 1 and cfg["swa"] and not cfg.get("particles_from_cycle") else None
        cycles = tuple(k for k in range(int(cfg.get("cycles", 0)))
                       if (config.parent / f"cycle_{k:02d}" / "metrics.json").is_file())
        if method and cycles:
            runs.append(Run(config.parent, cfg["model"], method, int(cfg["seed"]), int(cfg["rewind_epochs"]),
                            int(cfg["particles"]), cycles))
    if not runs:
        raise UserError(f"{root} holds no finished IMP or SWAMP run directory (config.json with a cycle)")
    return runs


def _grid(runs: Sequence[Run], rewind: int) -> dict[tuple[str, str], dict[int, Run]]:
    out: dict[tuple[str, str], dict[int, Run]] = {}
    for run in runs:
        if run.rewind == rewind:
            out.setdefault((run.model, run.method), {})[run.seed] = run
    return out


def _barrier(a: Path, b: Path, settings: Settings, align: bool) -> dict[str, float | None]:
    options = EvalOptions(("test",), data_dir=settings.data_dir, progress=False)
    result = checkpoint_barrier(a, b, settings.points, options, allow_mask_union=True,
                                align="weights" if align else None)
    row = {"loss": result.barrier["test"].loss, "error": result.barrier["test"].error,
           "aligned_loss": None, "aligned_error": None}
    if result.aligned is not None:
        row.update(aligned_loss=result.aligned.barrier["test"].loss, aligned_error=result.aligned.barrier["test"].error)
    return row


def _hull(paths: Sequence[Path], settings: Settings) -> dict[str, float]:
    options = EvalOptions(("test",), data_dir=settings.data_dir, progress=False)
    result = hull_landscape(list(paths), settings.hull_samples, options, allow_mask_union=True)
    summary, vertices = result.summary["test"], result.vertices["test"].loss
    return {"excess_mean": summary.hull_loss_mean - float(np.mean(vertices)),
            "excess_max": summary.hull_loss_max - summary.vertex_loss_max,
            "frac_below": summary.hull_frac_below_vertex_max, "hull_loss_mean": summary.hull_loss_mean}


def unalignable_models(runs: Sequence[Run]) -> dict[str, str]:
    """Model name -> why weight matching refuses it (:func:`landscape.permutations.permutation_spec`)."""
    out = {}
    for model in sorted({r.model for r in runs}):
        ckpt = load_checkpoint(next(r for r in runs if r.model == model).average(0))
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


def particle_pair_rows(runs: Sequence[Run], settings: Settings) -> list[dict[str, Any]]:
    """Raw barrier of every particle pair of every cycle of every SWAMP run (all rewind points)."""
    rows = []
    for r in runs:
        if r.method != "swamp":
            continue
        for k in r.cycles:
            particles = run_particles(r.path, k)
            for i, j in combinations(range(len(particles)), 2):
                rows.append({"model": r.model, "seed": r.seed, "rewind": r.rewind, "cycle": k, "pair": [i, j],
                             "sparsity": r.metrics(k)["sparsity"],
                             **_barrier(particles[i], particles[j], settings, align=False)})
    return rows


def seed_pair_rows(grid: dict[tuple[str, str], dict[int, Run]], settings: Settings,
                   unalignable: dict[str, str]) -> list[dict[str, Any]]:
    """Raw and aligned barrier between the solutions of two seeds at the same cycle (the grid's runs)."""
    rows = []
    for (model, method), seeds in sorted(grid.items()):
        for i, j in combinations(sorted(seeds), 2):
            for k in sorted(set(seeds[i].cycles) & set(seeds[j].cycles)):
                rows.append({"model": model, "method": method, "cycle": k, "seeds": [i, j],
                             "sparsity": seeds[i].metrics(k)["sparsity"],
                             **_barrier(seeds[i].average(k), seeds[j].average(k), settings,
                                        align=model not in unalignable)})
    return rows


def hull_rows(grid: dict[tuple[str, str], dict[int, Run]], settings: Settings) -> tuple[list[dict], list[dict]]:
    """Hulls of K particles of one SWAMP cycle (per seed) and of K seeds' solutions (per method and cycle)."""
    K = settings.hull_vertices
    particle_rows, seed_rows = [], []
    for (model, method), seeds in sorted(grid.items()):
        if len(seeds) >= K:
            chosen = sorted(seeds)[:K]
            for k in sorted(set.intersection(*(set(seeds[s].cycles) for s in chosen))):
                seed_rows.append({"model": model, "method": method, "cycle": k, "seeds": chosen,
                                  "sparsity": seeds[chosen[0]].metrics(k)["sparsity"],
                                  **_hull([seeds[s].average(k) for s in chosen], settings)})
        if method != "swamp":
            continue
        for seed, r in sorted(seeds.items()):
            for k in r.cycles:
                particles = run_particles(r.path, k)
                if len(particles) >= K:
                    particle_rows.append({"model": model, "seed": seed, "cycle": k,
                                          "sparsity": r.metrics(k)["sparsity"], **_hull(particles[:K], settings)})
    return particle_rows, seed_rows


def flatness_rows(grid: dict[tuple[str, str], dict[int, Run]], settings: Settings) -> list[dict[str, Any]]:
    """Raw and BatchNorm-invariant Hessian traces (per layer and per channel) of every grid solution, on a
    seeded subset of ``hessian_samples`` training samples, restricted to the unpruned coordinates."""
    options = HessianOptions(samples=settings.hessian_samples, batch_size=512)
    batches: dict[str, list] = {}
    rows = []
    for (model, method), seeds in sorted(grid.items()):
        for seed, r in sorted(seeds.items()):
            for k in r.cycles:
                ckpt = load_checkpoint(r.average(k))
                key = json.dumps(ckpt.dataset, sort_keys=True)
                if key not in batches:
                    batches[key] = training_batches(checkpoint_data(ckpt, "cpu", settings.data_dir), options)
                net, masks = build_model(ckpt, "cpu"), dict(ckpt.masks)
                # the fused CPU attention kernels have no double backward: the math kernel has
                with sdpa_kernel([SDPBackend.MATH]):
                    layer = normalized_trace(net, batches[key], probes=settings.probes, masks=masks)
                    channel = normalized_trace(net, batches[key], probes=settings.probes, masks=masks,
                                               granularity="channel") if layer.layers else layer
                rows.append({"model": model, "method": method, "seed": seed, "cycle": k,
                             "sparsity": r.metrics(k)["sparsity"], "test_acc": r.metrics(k)["average"]["test_acc"],
                             "raw": layer.raw, "raw_stderr": layer.raw_stderr,
                             "normalized": layer.normalized if layer.layers else None,
                             "normalized_stderr": layer.normalized_stderr if layer.layers else None,
                             "channel": channel.normalized if channel.layers else None,
                             "channel_stderr": channel.normalized_stderr if channel.layers else None,
                             "other": layer.other, "layers": list(layer.layers)})
    return rows


def measure(root: Path, settings: Settings = Settings()) -> Controls:
    """Every control and treatment of the module docstring for the runs under ``root``."""
    runs = find_runs(root)
    grid = _grid(runs, settings.rewind)
    if not grid:
        raise UserError(f"no run under {root} has --rewind-epochs {settings.rewind}; pass --rewind")
    unalignable = unalignable_models(runs)
    rows: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}

    def timed(kind: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        seconds[kind] = time.perf_counter() - start
        return out

    rows["accuracy"] = accuracy_rows(runs)
    rows["particle_pairs"] = timed("particle_pairs", lambda: particle_pair_rows(runs, settings))
    rows["seed_pairs"] = timed("seed_pairs", lambda: seed_pair_rows(grid, settings, unalignable))
    rows["particle_hulls"], rows["seed_hulls"] = timed("hulls", lambda: hull_rows(grid, settings))
    rows["flatness"] = timed("flatness", lambda: flatness_rows(grid, settings))
    return Controls(settings, rows, unalignable, seconds)


# ---- tables -------------------------------------------------------------------------------------------------

def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def _cell(values: Sequence[float], scale: float = 1.0, digits: int = 4) -> str:
    mean, std, n = _stats(values)
    if n < 2:
        return "n/a" if n == 0 else f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def separation(treatment: Sequence[float], control: Sequence[float]) -> str:
    """``below`` / ``above`` when mean +- std of the treatment lies wholly below / above the control's,
    else ``overlap``; ``n/a`` without both."""
    (mt, st, nt), (mc, sc, nc) = _stats(treatment), _stats(control)
    if not nt or not nc:
        return "n/a"
    if mt + st < mc - sc:
        return "below"
    return "above" if mt - st > mc + sc else "overlap"


def resolved(p: Paired) -> str:
    """A paired difference beyond the seed spread: the same sign on every seed and |mean| > std."""
    if p.seeds < 2 or not abs(p.mean) > p.std:
        return "no"
    if p.positive == p.seeds:
        return "higher"
    return "lower" if p.negative == p.seeds else "no"


def _per_seed(rows: Sequence[dict], key: str, **where: Any) -> list[float]:
    """``key`` averaged over the rows of each seed that match ``where`` (e.g. the pairs of one cycle)."""
    by_seed: dict[int, list[float]] = {}
    for r in rows:
        if all(r[k] == v for k, v in where.items()) and r[key] is not None:
            by_seed.setdefault(r["seed"], []).append(r[key])
    return [statistics.fmean(v) for _, v in sorted(by_seed.items())]


def _select(rows: Sequence[dict], key: str, **where: Any) -> list[float]:
    return [r[key] for r in rows if all(r[k] == v for k, v in where.items()) and r[key] is not None]


def _sparsity(rows: Sequence[dict], **where: Any) -> str:
    values = _select(rows, "sparsity", **where)
    return f"{100 * statistics.fmean(values):.1f}%" if values else "–"


def _models(controls: Controls, kind: str) -> list[str]:
    return sorted({r["model"] for r in controls.rows[kind]})


def _cycles(rows: Sequence[dict], **where: Any) -> list[int]:
    return sorted({r["cycle"] for r in rows if all(r[k] == v for k, v in where.items())})


def connectivity_table(controls: Controls, metric: str = "loss") -> str:
    """Particle pairs (treatment) beside seed pairs (control), raw and aligned, per model and cycle."""
    scale, digits = (100.0, 2) if metric == "error" else (1.0, 4)
    pp, sp, rewind = controls.rows["particle_pairs"], controls.rows["seed_pairs"], controls.settings.rewind
    lines = ["| model | sparsity | SWAMP particle pairs (seeds) | SWAMP seed pairs, raw | SWAMP seed pairs, aligned | "
             "IMP seed pairs, raw | IMP seed pairs, aligned | particles vs aligned SWAMP seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for model in _models(controls, "seed_pairs"):
        for k in _cycles(sp, model=model):
            treat = _per_seed(pp, metric, model=model, cycle=k, rewind=rewind)
            cells = [_cell(_select(sp, key, model=model, method=method, cycle=k), scale, digits)
                     for method in ("swamp", "imp") for key in (metric, f"aligned_{metric}")]
            control = _select(sp, f"aligned_{metric}", model=model, method="swamp", cycle=k)
            lines.append(f"| {model} | {_sparsity(sp, model=model, cycle=k)} | {_cell(treat, scale, digits)} "
                         f"({len(treat)}) | {' | '.join(cells)} | {separation(treat, control)} |")
    return "\n".join(lines)


def hull_table(controls: Controls) -> str:
    """The particles' hull (treatment, per seed) beside the hull of solutions of different seeds (control)."""
    ph, sh = controls.rows["particle_hulls"], controls.rows["seed_hulls"]
    lines = ["| model | sparsity | measure | SWAMP particles (per seed) | SWAMP seeds | IMP seeds | "
             "particles vs SWAMP seeds |", "|---|---|---|---|---|---|---|"]
    names = {"excess_mean": "mean hull loss − mean vertex loss", "excess_max": "max hull loss − worst vertex",
             "frac_below": "fraction ≤ worst vertex"}
    for model in _models(controls, "seed_hulls"):
        for k in _cycles(sh, model=model):
            for key, name in names.items():
                treat, control = _select(ph, key, model=model, cycle=k), _select(sh, key, model=model,
                                                                                 method="swamp", cycle=k)
                lines.append(f"| {model} | {_sparsity(sh, model=model, cycle=k)} | {name} | {_cell(treat)} | "
                             f"{_cell(control)} | {_cell(_select(sh, key, model=model, method='imp', cycle=k))} | "
                             f"{separation(treat, control)} |")
    return "\n".join(lines)


def _paired_rows(rows: Sequence[dict], value: str, model: str, a: str = "swamp", b: str = "imp",
                 **where: Any) -> list[Paired]:
    frame = pd.DataFrame([r for r in rows if r["model"] == model and r.get(value) is not None
                          and all(r[k] == v for k, v in where.items())])
    return paired(frame, value, a, b) if len(frame) else []


def flatness_table(controls: Controls) -> str:
    """SWAMP against IMP per flatness measure, paired by seed (SWAMP lower = flatter)."""
    rows = controls.rows["flatness"]
    lines = ["| model | sparsity | measure | IMP | SWAMP | SWAMP − IMP | wins/ties/losses | beyond spread |",
             "|---|---|---|---|---|---|---|---|"]
    names = {"raw": "raw trace", "normalized": "BN-invariant, per layer", "channel": "BN-invariant, per channel"}
    for model in _models(controls, "flatness"):
        for key, name in names.items():
            for p in _paired_rows(rows, key, model):
                cells = [_cell(_select(rows, key, model=model, method=m, cycle=p.cycle), digits=2)
                         for m in ("imp", "swamp")]
                lines.append(f"| {model} | {100 * p.sparsity:.1f}% | {name} | {' | '.join(cells)} | "
                             f"{p.mean:+.2f} ± {p.std:.2f} | {p.record()} | {resolved(p)} |")
            if not _paired_rows(rows, key, model):
                lines.append(f"| {model} | all | {name} | n/a (no layer followed by BatchNorm) | | | | |")
    return "\n".join(lines)


def _within_cycle_ranks(frame: pd.DataFrame, key: str) -> np.ndarray:
    return frame.groupby("cycle")[key].rank().to_numpy()


def correlation_rows(controls: Controls) -> list[dict[str, Any]]:
    """Spearman rho between each flatness measure and test accuracy over all (method, seed, cycle) points,
    and the correlation of ranks taken within each cycle (Pearson of within-cycle ranks)."""
    out = []
    for model in _models(controls, "flatness"):
        frame = pd.DataFrame([r for r in controls.rows["flatness"] if r["model"] == model])
        for key in ("raw", "normalized", "channel"):
            part = frame.dropna(subset=[key])
            if len(part) < 3:
                continue
            rho, p = stats.spearmanr(part[key], part["test_acc"])
            within, within_p = stats.pearsonr(_within_cycle_ranks(part, key), _within_cycle_ranks(part, "test_acc"))
            out.append({"model": model, "measure": key, "points": len(part), "rho": float(rho), "p": float(p),
                        "within_cycle_rho": float(within), "within_cycle_p": float(within_p)})
    return out


def correlation_table(controls: Controls) -> str:
    names = {"raw": "raw trace", "normalized": "BN-invariant, per layer", "channel": "BN-invariant, per channel"}
    lines = ["| model | measure | points | Spearman rho with test accuracy (p) | within-cycle rank correlation (p) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {names[r['measure']]} | {r['points']} | {r['rho']:+.2f} ({r['p']:.3f}) | "
              f"{r['within_cycle_rho']:+.2f} ({r['within_cycle_p']:.3f}) |" for r in correlation_rows(controls)]
    return "\n".join(lines)


def accuracy_table(controls: Controls) -> str:
    """Test accuracy of the grid's IMP and SWAMP solutions and SWAMP − IMP, paired by seed."""
    rows = [r for r in controls.rows["accuracy"] if r["rewind"] == controls.settings.rewind]
    lines = ["| model | sparsity | IMP (%) | SWAMP (%) | SWAMP − IMP (points) | wins/ties/losses | beyond spread |",
             "|---|---|---|---|---|---|---|"]
    for model in sorted({r["model"] for r in rows}):
        for p in _paired_rows(rows, "test_acc", model):
            cells = [_cell(_select(rows, "test_acc", model=model, method=m, cycle=p.cycle), 100, 2)
                     for m in ("imp", "swamp")]
            lines.append(f"| {model} | {100 * p.sparsity:.1f}% | {' | '.join(cells)} | {100 * p.mean:+.2f} ± "
                         f"{100 * p.std:.2f} | {p.record()} | {resolved(p)} |")
    return "\n".join(lines)


def rewind_table(controls: Controls) -> str:
    """Per model with several rewind points: particle-pair barriers and SWAMP − IMP accuracy at each."""
    acc, pp = controls.rows["accuracy"], controls.rows["particle_pairs"]
    lines = ["| model | rewind epochs | sparsity | particle-pair loss barrier | particle-pair error barrier (%) | "
             "IMP (%) | SWAMP (%) | SWAMP − IMP (points) | wins/ties/losses | beyond spread |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model in sorted({r["model"] for r in acc}):
        rewinds = sorted({r["rewind"] for r in acc if r["model"] == model})
        if len(rewinds) < 2:
            continue
        for rewind in rewinds:
            for p in _paired_rows(acc, "test_acc", model, rewind=rewind):
                cells = [_cell(_select(acc, "test_acc", model=model, method=m, rewind=rewind, cycle=p.cycle), 100, 2)
                         for m in ("imp", "swamp")]
                where = {"model": model, "rewind": rewind, "cycle": p.cycle}
                barriers = f"{_cell(_per_seed(pp, 'loss', **where))} | {_cell(_per_seed(pp, 'error', **where), 100, 2)}"
                lines.append(f"| {model} | {rewind} | {100 * p.sparsity:.1f}% | {barriers} | {' | '.join(cells)} | "
                             f"{100 * p.mean:+.2f} ± {100 * p.std:.2f} | {p.record()} | {resolved(p)} |")
    return "\n".join(lines)


def report(controls: Controls) -> Iterator[str]:
    """The Markdown sections, in order."""
    s = controls.settings
    yield (f"Grid: rewind point {s.rewind} epochs; barriers at {s.points} points (test split, BatchNorm "
           f"recomputed); hulls of {s.hull_vertices} vertices, {s.hull_samples} samples; Hessian traces with "
           f"{s.probes} probes on {s.hessian_samples} training samples, unpruned coordinates.")
    for model, why in controls.unalignable.items():
        yield f"Alignment refuses {model} (its aligned cells are n/a): {why}"
    yield "### Connectivity: test loss barrier\n\n" + connectivity_table(controls, "loss")
    yield "### Connectivity: test error barrier (%)\n\n" + connectivity_table(controls, "error")
    yield "### Hull (test loss)\n\n" + hull_table(controls)
    yield "### Flatness: SWAMP against IMP\n\n" + flatness_table(controls)
    yield "### Flatness against test accuracy\n\n" + correlation_table(controls)
    yield "### Rewind point\n\n" + rewind_table(controls)
    yield "### Accuracy: SWAMP against IMP\n\n" + accuracy_table(controls)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m studies.controls", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="directory holding IMP and SWAMP run directories (any depth)")
    defaults = Settings()
    parser.add_argument("--rewind", type=int, default=defaults.rewind,
                        help=f"--rewind-epochs of the grid's runs (default {defaults.rewind})")
    parser.add_argument("--points", type=int, default=defaults.points, help="points on each line (default 11)")
    parser.add_argument("--hull-samples", type=int, default=defaults.hull_samples, help="samples per hull (default 32)")
    parser.add_argument("--hull-vertices", type=int, default=defaults.hull_vertices,
                        help="vertices K of every hull (default 3)")
    parser.add_argument("--probes", type=int, default=defaults.probes, help="Hutchinson probes (default 32)")
    parser.add_argument("--hessian-samples", type=int, default=defaults.hessian_samples,
                        help="training samples of the Hessian (default 1024)")
    parser.add_argument("--data-dir", default=None, help="where the data set is read (default data/)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write every row as JSON")
    args = parser.parse_args(argv)
    if args.hull_vertices < 2 or args.probes < 2 or args.points < 2 or args.hull_samples < 1:
        raise UserError("--hull-vertices, --probes and --points must be >= 2 and --hull-samples >= 1")
    settings = Settings(args.rewind, args.points, args.hull_samples, args.hull_vertices, args.probes,
                        args.hessian_samples, args.data_dir)
    controls = measure(args.root, settings)
    print("\n\n".join(report(controls)))
    if args.json:
        write_json(args.json, {**controls.to_json(), "correlations": correlation_rows(controls)})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
