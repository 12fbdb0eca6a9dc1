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

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.artifacts.atomic import atomic_write_text
from studies.reproductions.ensembles import MODELS, _seeds
from studies.reproductions.mechanisms import RUN_NAMES
from studies.verdict import Claim, paired_verdicts

METHODS = ("IMP", "SWA only (N=1)", "particles only (N=4, no SWA)", "SWAMP (N=4)")
COMPARISONS = (("SWA only (N=1)", "IMP", "SWA alone gives flatter solutions than IMP"),
               ("particles only (N=4, no SWA)", "IMP", "averaging particles alone gives flatter solutions than IMP"),
               ("SWAMP (N=4)", "IMP", "SWAMP finds flatter solutions than IMP"),
               ("SWAMP (N=4)", "SWA only (N=1)", "SWAMP is flatter than SWA alone"),
               ("SWAMP (N=4)", "particles only (N=4, no SWA)", "SWAMP is flatter than particles without SWA"))
CYCLES = (1, 3, 5)  # pruned cycles: 50%, 87.5% and 96.9% sparsity
PROBES, SAMPLES = 16, 256
EFFECT = 10.0  # percent of the control's trace
FIELDS = ["model", "method", "seed", "cycle", "sparsity", "trace", "stderr"]


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

    def one(task: tuple[str, str, int, int]) -> dict[str, object]:
        model, method, seed, cycle = task
        v = measure(out / f"{model}-{RUN_NAMES[method]}-s{seed}", cycle, cache, data_dir)
        return {"model": model, "method": method, "seed": seed, "cycle": cycle, "sparsity": v["sparsity"],
                "trace": round(v["trace"], 6), "stderr": round(v["stderr"], 6)}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(one, tasks))
    write_csv(rows, out / "flatness.csv")
    return rows


def write_csv(rows: Sequence[dict[str, object]], path: Path) -> None:
    """``rows`` as CSV with :data:`FIELDS`, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict[str, object]]:
    """The rows of a ``flatness.csv`` (numbers parsed)."""
    with open(path, newline="") as f:
        return [{"model": r["model"], "method": r["method"], "seed": int(r["seed"]), "cycle": int(r["cycle"]),
                 "sparsity": float(r["sparsity"]), "trace": float(r["trace"]), "stderr": float(r["stderr"])}
                for r in csv.DictReader(f)]


def _traces(rows: Sequence[dict[str, object]], model: str, method: str, cycle: int) -> dict[int, float]:
    return {int(r["seed"]): float(r["trace"]) for r in rows  # type: ignore[call-overload,arg-type]
            if r["model"] == model and r["method"] == method and r["cycle"] == cycle}


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
            values = sorted(_traces(rows, model, m, cycle).values())
            parts.append(f"{_median(values):.4g} ({len(values)})" if values else "-")
        lines.append(f"| {model} | {100 * sparsity:.1f}% | " + " | ".join(parts) + " |")
    for a, b, sentence in COMPARISONS:
        family = {}
        for model, cycle, sparsity in cells:
            ta, tb = _traces(rows, model, a, cycle), _traces(rows, model, b, cycle)
            seeds = sorted(set(ta) & set(tb))
            family[f"{model} | {100 * sparsity:.1f}%"] = [100 * (ta[s] - tb[s]) / tb[s] for s in seeds]
        family = {label: d for label, d in family.items() if d}  # cells the arms share no seed of
        if not family:
            continue
        lines += ["", f"**{sentence}** (A = {a}, B = {b}; d = 100 (tr A - tr B) / tr B, claim: less by "
                      f"{EFFECT:g}%, Holm over {len(family)})", "",
                  "| model | sparsity | mean d | simultaneous interval | wins/ties/losses | Holm p | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for v in paired_verdicts(family, Claim("less", EFFECT)):
            lines.append(f"| {v.label} | {v.mean:+.1f}% | [{v.low:+.1f}, {v.high:+.1f}] ({100 * v.level:.1f}%) | "
                         f"{v.record()} | {v.p_holm:.2g} | **{v.outcome}** |")
    return "\n".join(lines)


def _median(values: Sequence[float]) -> float:
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.reproductions.flatness",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ensembles"),
                        help="folder of the runs of studies.reproductions.mechanisms (default %(default)s)")
    parser.add_argument("--seeds", type=_seeds, default=list(range(12)), help="seeds, e.g. 0-11 (default 0-11)")
    parser.add_argument("--jobs", type=int, default=1, help="traces at once, one thread each (default %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="MNIST-1D cache (default %(default)s)")
    parser.add_argument("--from-csv", type=Path, metavar="CSV",
                        help="print the tables of a flatness.csv (e.g. docs/data/flatness-mnist1d.csv); measure "
                             "nothing")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    try:
        rows = read_csv(args.from_csv) if args.from_csv else measure_all(args.out, args.seeds, args.jobs,
                                                                         args.data_dir)
    except (RuntimeError, OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(tables(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
