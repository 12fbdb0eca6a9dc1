"""The controls' Markdown tables: each treatment beside its control (means +- sample std over seeds, or over seed
pairs; wins/ties/losses count seeds), with the verdict of the project's one rule in the last column
(:mod:`studies.controls.verdicts`: paired t intervals, Holm over model x sparsity, "does not hold" only where the
interval excludes the paper's effect; "too few seeds" below 6).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from studies.claims import Paired, paired
from studies.controls.cache import cache_dir, cached_controls
from studies.controls.measurements import Controls
from studies.controls.verdicts import label, outcomes


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
             "IMP seed pairs, raw | IMP seed pairs, aligned | particles below SWAMP seed pairs (one rule, test error: "
             "raw / aligned) |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = outcomes(controls)
    for model in _models(controls, "seed_pairs"):
        for k in _cycles(sp, model=model):
            treat = _per_seed(pp, metric, model=model, cycle=k, rewind=rewind)
            cells = [_cell(_select(sp, key, model=model, method=method, cycle=k), scale, digits)
                     for method in ("swamp", "imp") for key in (metric, f"aligned_{metric}")]
            where = f"{model} | {_sparsity(sp, model=model, cycle=k)}"
            verdict = " / ".join(verdicts.get((key, where), "n/a") for key in ("connected", "connected_aligned"))
            lines.append(f"| {where} | {_cell(treat, scale, digits)} ({len(treat)}) | {' | '.join(cells)} | "
                         f"{verdict} |")
    return "\n".join(lines)


def hull_table(controls: Controls) -> str:
    """The particles' hull (treatment, per seed) beside the hull of solutions of different seeds (control)."""
    ph, sh = controls.rows["particle_hulls"], controls.rows["seed_hulls"]
    lines = ["| model | sparsity | measure | SWAMP particles (per seed) | SWAMP seeds | IMP seeds | "
             "particles below SWAMP seeds (one rule) |", "|---|---|---|---|---|---|---|"]
    verdicts = outcomes(controls)
    names = {"excess_mean": "mean hull loss − mean vertex loss", "excess_max": "max hull loss − worst vertex",
             "frac_below": "fraction ≤ worst vertex"}
    for model in _models(controls, "seed_hulls"):
        for k in _cycles(sh, model=model):
            for key, name in names.items():
                treat, control = _select(ph, key, model=model, cycle=k), _select(sh, key, model=model,
                                                                                 method="swamp", cycle=k)
                where = f"{model} | {_sparsity(sh, model=model, cycle=k)}"
                verdict = verdicts.get(("hull", where), "n/a") if key == "excess_mean" else "–"
                lines.append(f"| {where} | {name} | {_cell(treat)} | {_cell(control)} | "
                             f"{_cell(_select(sh, key, model=model, method='imp', cycle=k))} | {verdict} |")
    return "\n".join(lines)


def _paired_rows(rows: Sequence[dict], value: str, model: str, a: str = "swamp", b: str = "imp",
                 **where: Any) -> list[Paired]:
    frame = pd.DataFrame([r for r in rows if r["model"] == model and r.get(value) is not None
                          and all(r[k] == v for k, v in where.items())])
    return paired(frame, value, a, b) if len(frame) else []


def flatness_table(controls: Controls) -> str:
    """SWAMP against IMP per flatness measure, paired by seed (SWAMP lower = flatter)."""
    rows = controls.rows["flatness"]
    lines = ["| model | sparsity | measure | IMP | SWAMP | SWAMP − IMP | wins/ties/losses | SWAMP flatter (one rule, "
             "delta 10%) |", "|---|---|---|---|---|---|---|---|"]
    names = {"raw": "raw trace", "normalized": "BN-invariant, per layer", "channel": "BN-invariant, per channel"}
    families = {"raw": "flatter_raw", "normalized": "flatter_layer", "channel": "flatter_channel"}
    verdicts = outcomes(controls)
    for model in _models(controls, "flatness"):
        for key, name in names.items():
            for p in _paired_rows(rows, key, model):
                cells = [_cell(_select(rows, key, model=model, method=m, cycle=p.cycle), digits=2)
                         for m in ("imp", "swamp")]
                verdict = verdicts.get((families[key], label((model, 0, p.cycle, p.sparsity))), "n/a")
                lines.append(f"| {model} | {100 * p.sparsity:.1f}% | {name} | {' | '.join(cells)} | "
                             f"{p.mean:+.2f} ± {p.std:.2f} | {p.record()} | {verdict} |")
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
    lines = ["| model | sparsity | IMP (%) | SWAMP (%) | SWAMP − IMP (points) | wins/ties/losses | SWAMP more accurate "
             "(one rule, delta 0.5) |", "|---|---|---|---|---|---|---|"]
    verdicts = outcomes(controls)
    for model in sorted({r["model"] for r in rows}):
        for p in _paired_rows(rows, "test_acc", model):
            cells = [_cell(_select(rows, "test_acc", model=model, method=m, cycle=p.cycle), 100, 2)
                     for m in ("imp", "swamp")]
            verdict = verdicts.get(("more_accurate", label((model, 0, p.cycle, p.sparsity))), "n/a")
            lines.append(f"| {model} | {100 * p.sparsity:.1f}% | {' | '.join(cells)} | {100 * p.mean:+.2f} ± "
                         f"{100 * p.std:.2f} | {p.record()} | {verdict} |")
    return "\n".join(lines)


def rewind_table(controls: Controls) -> str:
    """Per model with several rewind points: particle-pair barriers and SWAMP − IMP accuracy at each."""
    acc, pp = controls.rows["accuracy"], controls.rows["particle_pairs"]
    lines = ["| model | rewind epochs | sparsity | particle-pair loss barrier | particle-pair error barrier (%) | "
             "IMP (%) | SWAMP (%) | SWAMP − IMP (points) | wins/ties/losses | SWAMP below IMP (one rule, delta 0.5) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = outcomes(controls)
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
                verdict = ("grid" if rewind == controls.settings.rewind else
                           verdicts.get(("needs_stable", label((model, rewind, p.cycle, p.sparsity), True)), "n/a"))
                lines.append(f"| {model} | {rewind} | {100 * p.sparsity:.1f}% | {barriers} | {' | '.join(cells)} | "
                             f"{100 * p.mean:+.2f} ± {100 * p.std:.2f} | {p.record()} | {verdict} |")
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
    yield ("### Flatness against test accuracy\n\n" + correlation_table(controls) + "\n\nDescriptive only: the "
           "points share seeds and cycles and are not independent, and the method moves both; the verdict is the "
           "paired family `flatter_more_accurate` of `studies.controls.verdicts`.")
    yield "### Rewind point\n\n" + rewind_table(controls)
    yield "### Accuracy: SWAMP against IMP\n\n" + accuracy_table(controls)


def controls_section(root: str | Path, *, trust_code: bool = False) -> str | None:
    """The controls cached under ``ROOT/analysis/controls`` as a Markdown section (``python -m studies.report``),
    reading only the cache: the tables of :func:`report`, each treatment beside its control; while measurements
    are missing, only how many and the command that computes them. None: no controls were measured there.
    ``trust_code``: as in :func:`studies.controls.cached_controls`.

    Example:
        >>> print(controls_section("runs/controls"))  # doctest: +SKIP
        ## Controls: each treatment beside its control
        ...
    """
    state = cached_controls(root, trust_code=trust_code)
    if state is None:
        return None
    head = "## Controls: each treatment beside its control"
    if state.missing:
        return (f"{head}\n\n{state.missing} of {state.planned} control measurements are not in "
                f"{cache_dir(root)} yet; compute them with: {state.command}")
    return "\n\n".join([head, f"Cached by `{state.command}` (docs/controls.md).", *report(state.controls)])
