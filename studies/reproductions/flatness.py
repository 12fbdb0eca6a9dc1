"""Flatness or averaging: the Hessian traces of IMP, SWA alone, particles alone and SWAMP on the same seeds.

Choi et al. (2024) attribute SWAMP's gain to flatter solutions. The arms of :mod:`studies.reproductions.mechanisms`
separate the two ingredients that could flatten a solution, SWA within a particle and averaging across particles;
this module measures each cycle solution's Hessian trace (:func:`landscape.tools.hessian_report.analyse_checkpoint`:
Hutch++ of Meyer et al. 2021 with :data:`PROBES` products, over :data:`SAMPLES` seeded training samples, on the
unpruned coordinates, BatchNorm in eval mode) and judges, per architecture and pruned sparsity, with the one rule
(:func:`studies.verdict.paired_verdicts`) on the relative paired difference

    d_s = 100 (tr H_A,s - tr H_B,s) / tr H_B,s   (percent of B's trace, same seed s),

with the claim ``less`` and delta = :data:`EFFECT` percent (a solution counts as flatter when its trace is
smaller by at least a tenth). Each trace is cached as ``OUT/flatness/RUN-cKK.json`` (resumable, written
atomically).

``python -m studies.reproductions.flatness --out runs/ensembles --seeds 0-11 --jobs 2`` measures (or reads) every
trace and writes ``OUT/flatness.csv``; ``--from-csv`` prints the tables of docs/reproductions.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from core.artifacts.atomic import atomic_write_text
from studies.reproductions.common import csv_pair, map_processes, median, seed_values, study_main, verdict_lines
from studies.reproductions.ensembles import MODELS
from studies.reproductions.mechanisms import RUN_NAMES
from studies.verdict import TRACE_EFFECT, Claim

METHODS = ("IMP", "SWA only (N=1)", "particles only (N=4, no SWA)", "SWAMP (N=4)")
COMPARISONS = (("SWA only (N=1)", "IMP", "SWA alone gives flatter solutions than IMP"),
               ("particles only (N=4, no SWA)", "IMP", "averaging particles alone gives flatter solutions than IMP"),
               ("SWAMP (N=4)", "IMP", "SWAMP finds flatter solutions than IMP"),
               ("SWAMP (N=4)", "SWA only (N=1)", "SWAMP is flatter than SWA alone"),
               ("SWAMP (N=4)", "particles only (N=4, no SWA)", "SWAMP is flatter than particles without SWA"))
CYCLES = (1, 3, 5)  # pruned cycles: 50%, 87.5% and 96.9% sparsity
PROBES, SAMPLES = 16, 256
EFFECT = TRACE_EFFECT  # percent of the control's trace
FIELDS = ["model", "method", "seed", "cycle", "sparsity", "trace", "stderr"]
TYPES = {"model": str, "method": str, "seed": int, "cycle": int, "sparsity": float, "trace": float,
         "stderr": float}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "flatness")


def measure(run: Path, cycle: int, cache: Path, data_dir: Path) -> dict[str, float]:
    """The trace of ``run``'s cycle solution and its standard error (cached in ``cache``)."""
    path = cache / f"{run.name}-c{cycle:02d}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from landscape.tools.hessian_report import HessianOptions, analyse_checkpoint

    report = analyse_checkpoint(run / f"cycle_{cycle:02d}" / "average.safetensors",
                                HessianOptions(method="hutchpp", probes=PROBES, samples=SAMPLES, seed=0), "cpu",
                                str(data_dir)).to_json()
    value = {"trace": report["trace"], "stderr": report["stderr"], "sparsity": report["sparsity"]}
    atomic_write_text(path, json.dumps(value))
    return value


def measure_all(out: Path, seeds: Sequence[int], jobs: int = 1, data_dir: Path = Path("data"),
                cycles: Sequence[int] = CYCLES) -> list[dict[str, object]]:
    """Measure (or read) every trace of ``seeds``; returns the rows of ``flatness.csv`` (also written). Runs that
    are not finished are left out."""
    cache = out / "flatness"
    cache.mkdir(parents=True, exist_ok=True)
    tasks = [(model, method, seed, cycle) for model in MODELS for seed in seeds for method in METHODS
             for cycle in cycles
             if (out / f"{model}-{RUN_NAMES[method]}-s{seed}" / f"cycle_{cycle:02d}" / "metrics.json").is_file()]

    found = map_processes(measure, [(out / f"{model}-{RUN_NAMES[method]}-s{seed}", cycle, cache, data_dir)
                                    for model, method, seed, cycle in tasks], jobs)  # traces: not thread-safe
    rows: list[dict[str, object]] = [
        {"model": model, "method": method, "seed": seed, "cycle": cycle, "sparsity": v["sparsity"],
         "trace": round(v["trace"], 6), "stderr": round(v["stderr"], 6)}
        for (model, method, seed, cycle), v in zip(tasks, found, strict=True)]
    write_csv(rows, out / "flatness.csv")
    return rows


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown tables: the median trace per arm, then one verdict table per comparison of
    :data:`COMPARISONS` (Holm over the architectures x sparsities of each).

    Example:
        >>> rows = [{"model": "mlp", "method": m, "seed": s, "cycle": 1, "sparsity": 0.5,
        ...          "trace": (2.0 if m == "SWAMP (N=4)" else 4.0) + 0.1 * s, "stderr": 0.1}
        ...         for m in METHODS for s in range(6)]
        >>> [line for line in tables(rows).splitlines() if line.startswith("| mlp | 50.0% | -4")][0][:40]
        '| mlp | 50.0% | -47.1% | [-49.3, -45.0] '
    """
    cells = sorted({(str(r["model"]), int(r["cycle"]), float(r["sparsity"])) for r in rows},  # type: ignore
                   key=lambda c: (list(MODELS).index(c[0]), c[1]))
    lines = ["| model | sparsity | " + " | ".join(f"{m}: median trace (seeds)" for m in METHODS) + " |",
             "|---|---|" + "---|" * len(METHODS)]
    for model, cycle, sparsity in cells:
        parts = []
        for m in METHODS:
            values = sorted(seed_values(rows, "trace", model=model, method=m, cycle=cycle).values())
            parts.append(f"{median(values):.4g} ({len(values)})" if values else "-")
        lines.append(f"| {model} | {100 * sparsity:.1f}% | " + " | ".join(parts) + " |")
    for a, b, sentence in COMPARISONS:
        family = {}
        for model, cycle, sparsity in cells:
            ta, tb = (seed_values(rows, "trace", model=model, method=x, cycle=cycle) for x in (a, b))
            seeds = sorted(set(ta) & set(tb))
            family[f"{model} | {100 * sparsity:.1f}%"] = [100 * (ta[s] - tb[s]) / tb[s] for s in seeds]
        lines += verdict_lines(f"**{sentence}** (A = {a}, B = {b}; d = 100 (tr A - tr B) / tr B in %, claim: less by "
                               f"{EFFECT:g}%", family, Claim("less", EFFECT), digits=1, unit="%")
    return "\n".join(lines)



def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "flatness", __doc__, lambda a: measure_all(a.out, a.seeds, a.jobs, a.data_dir), read_csv,
                      tables, runs_help="folder of the runs of studies.reproductions.mechanisms")


if __name__ == "__main__":
    raise SystemExit(main())
