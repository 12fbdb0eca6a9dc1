"""Are consecutive cycles' solutions linearly connected, and SWAMP's better than IMP's?

Each IMP cycle rewinds to the ticket and retrains under a smaller mask, so the solutions of cycles k − 1 and k
share their initialisation, ticket and batch order and differ in the mask and what training under it did. The
earlier study (docs/earlier-results.md) found them connected for every method and read "SWAMP's consecutive
solutions are better connected than IMP's" as not holding, on one floating-point realisation with the earlier
rule. This study judges both claims by the one rule on all three architectures of the controls grid, with the
null the controls use: the solutions of two different seeds at the same cycle.

================  ==============================================================================================
method            runs (MNIST-1D, ticket after 2 dense epochs, 4 cycles at 50% pruning; cnn1d 8, the MLP 32,
                  transformer1d 64 epochs per cycle; :mod:`studies.reproductions.controls` and
                  :mod:`studies.reproductions.ingredients` under the same ``--out``)
================  ==============================================================================================
``IMP``           ``OUT/grid/MODEL-imp-sS``
``SWA only``      ``OUT/ingredients/MODEL-swa-sS`` (one particle with SWA)
``SWAMP``         ``OUT/grid/MODEL-swamp-sS`` (four SWA particles, weight-averaged)
================  ==============================================================================================

Per method, seed s and cycle k in 1..3, two test-error barriers (:func:`studies.reproductions.connectivity.measure`:
11 points on the straight line, BatchNorm recomputed at every point; the pruned weights are the zeros they are):
``consecutive``, between the solutions of cycles k − 1 and k of seed s, and ``seed pair``, between the cycle-k
solutions of seed s and of the next seed (cyclically over the seeds, as the controls pair them:
:func:`studies.controls.measurements.seed_groups`). Verdicts (:func:`studies.verdict.paired_verdicts`, Holm over
the model x cycle comparisons of each family, delta = 1 point of test error fixed before the measurements):

* consecutive solutions are connected where different seeds' are not: consecutive − seed pair, ``less``;
* SWAMP's (SWA alone's) consecutive solutions are better connected than IMP's: the difference of their
  consecutive barriers, ``less``.

``python -m studies.reproductions.consecutive --out runs/controls --seeds 0-11 --jobs 2`` measures (cached one
JSON per pair under ``OUT/analysis/consecutive``) and writes ``OUT/consecutive.csv`` and ``OUT/consecutive.png``;
``--from-csv docs/data/consecutive-mnist1d.csv`` prints the tables from the committed per-seed data. Pairs whose
runs are not finished are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from studies.reproductions.common import (
    csv_pair,
    label_axes,
    mean_half,
    mean_se,
    save_png,
    seed_values,
    study_main,
    verdict_lines,
)
from studies.reproductions.connectivity import measure
from studies.reproductions.controls import CYCLES, GRID
from studies.verdict import BARRIER_EFFECT, Claim

MODELS = tuple(GRID)
RUNS = {"IMP": ("grid", "imp"), "SWA only": ("ingredients", "swa"), "SWAMP": ("grid", "swamp")}
# method -> (folder under OUT, run name)
METHODS = tuple(RUNS)
PAIRS = ("consecutive", "seed pair")
FIELDS = ["model", "method", "pair", "seed", "cycle", "sparsity", "error_barrier", "loss_barrier"]
TYPES = {k: int if k in ("seed", "cycle") else float if k in ("sparsity", "error_barrier", "loss_barrier") else str
         for k in FIELDS}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "consecutive")


def endpoints(out: Path, model: str, method: str, pair: str, seed: int, cycle: int, seeds: Sequence[int]
              ) -> tuple[Path, Path]:
    """The two solutions of ``pair`` for ``method``'s run of ``seed`` at ``cycle`` (the later cycle's second).

    Example:
        >>> a, b = endpoints(Path("r"), "mlp", "SWA only", "seed pair", 11, 2, range(12))
        >>> [p.relative_to("r/ingredients").as_posix() for p in (a, b)]
        ['mlp-swa-s11/cycle_02/average.safetensors', 'mlp-swa-s0/cycle_02/average.safetensors']
    """
    folder, name = RUNS[method]
    def solution(s: int, k: int) -> Path:
        return out / folder / f"{model}-{name}-s{s}" / f"cycle_{k:02d}" / "average.safetensors"

    if pair == "consecutive":
        return solution(seed, cycle - 1), solution(seed, cycle)
    ordered = sorted(seeds)
    return solution(seed, cycle), solution(ordered[(ordered.index(seed) + 1) % len(ordered)], cycle)


def measure_all(out: Path, seeds: Sequence[int], jobs: int = 1, data_dir: Path = Path("data"),
                cycles: Sequence[int] = range(1, CYCLES)) -> list[dict[str, object]]:
    """Measure (or read) every pair's barriers for ``seeds``; returns the rows of ``consecutive.csv`` (also
    written). Pairs whose solutions or metrics are missing are left out."""
    cache = out / "analysis" / "consecutive"
    cache.mkdir(parents=True, exist_ok=True)

    def ready(task: tuple[str, str, str, int, int]) -> bool:
        return all(p.is_file() and (p.parent / "metrics.json").is_file() for p in endpoints(out, *task, seeds))

    tasks = [task for model in MODELS for method in METHODS for seed in seeds for cycle in cycles for pair in PAIRS
             if ready(task := (model, method, pair, seed, cycle))]

    def one(task: tuple[str, str, str, int, int]) -> dict[str, object]:
        model, method, pair, seed, cycle = task
        name = f"{model}-{RUNS[method][1]}-{pair.replace(' ', '-')}-s{seed}-c{cycle:02d}"
        v = measure(*endpoints(out, *task, seeds), cache, name, data_dir)
        return {"model": model, "method": method, "pair": pair, "seed": seed, "cycle": cycle,
                "sparsity": round(v["sparsity"], 6), "error_barrier": round(v["error_barrier"], 4),
                "loss_barrier": round(v["loss_barrier"], 6)}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(one, tasks))
    write_csv(rows, out / "consecutive.csv")
    return rows


def _cells(rows: Sequence[dict[str, object]]) -> list[tuple[str, int, float]]:
    found = {(str(r["model"]), int(r["cycle"]), float(r["sparsity"])) for r in rows}  # type: ignore[call-overload]
    return sorted(found, key=lambda c: (MODELS.index(c[0]) if c[0] in MODELS else len(MODELS), c[0], c[1]))


def _values(rows: Sequence[dict[str, object]], model: str, method: str, pair: str, cycle: int,
            key: str = "error_barrier") -> dict[int, float]:
    return seed_values(rows, key, model=model, method=method, pair=pair, cycle=cycle)


def _differences(a: dict[int, float], b: dict[int, float]) -> list[float]:
    return [a[s] - b[s] for s in sorted(a) if s in b]


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown tables: test-error and test-loss barriers of each method's consecutive solutions and seed pairs
    (mean ± standard error over seeds), then the verdicts of the one rule.

    Example:
        >>> rows = [{"model": "mlp", "method": m, "pair": p, "seed": s, "cycle": 1, "sparsity": 0.5,
        ...          "error_barrier": (0.2 if p == "consecutive" else 30.0) + 0.1 * s, "loss_barrier": 0.01}
        ...         for m in METHODS for p in PAIRS for s in range(6)]
        >>> print(tables(rows).splitlines()[2])
        | mlp | 50.0% | 0.45 ± 0.08 | 30.25 ± 0.08 | 0.45 ± 0.08 | 30.25 ± 0.08 | 0.45 ± 0.08 | 30.25 ± 0.08 |
    """
    cells = _cells(rows)
    columns = [(m, p) for m in METHODS for p in PAIRS]
    lines: list[str] = []
    for key, what, digits in (("error_barrier", "test-error barrier (points)", 2),
                              ("loss_barrier", "test-loss barrier (nats)", 3)):
        header = " | ".join(f"{m}, {p}: {what}" for m, p in columns)
        lines += ([""] if lines else []) + [f"| model | sparsity (later cycle) | {header} |",
                  "|---|---|" + "---|" * len(columns)]
        for model, cycle, sparsity in cells:
            lines.append(f"| {model} | {100 * sparsity:.1f}% | " + " | ".join(
                mean_se(list(_values(rows, model, m, p, cycle, key).values()), digits) for m, p in columns) + " |")
    family = {f"{m} | {model} | {100 * sparsity:.1f}%": _differences(_values(rows, model, m, "consecutive", cycle),
                                                                       _values(rows, model, m, "seed pair", cycle))
              for m in METHODS for model, cycle, sparsity in cells}
    lines += verdict_lines("**Consecutive solutions are connected where different seeds' are not** (A = the "
                           "barrier between cycles k − 1 and k of seed s, B = between the cycle-k solutions of seed s "
                           f"and the next seed; test-error barrier in points; claim: smaller by {BARRIER_EFFECT:g} "
                           "point", family, Claim("less", BARRIER_EFFECT), columns="method | model | sparsity")
    for method in METHODS[1:]:
        family = {f"{model} | {100 * sparsity:.1f}%": _differences(_values(rows, model, method, "consecutive", cycle),
                                                                     _values(rows, model, "IMP", "consecutive", cycle))
                  for model, cycle, sparsity in cells}
        lines += verdict_lines(f"**{method}'s consecutive solutions are better connected than IMP's** (A = {method}'s "
                               "consecutive barrier, B = IMP's, same seed and cycles; test-error barrier in points; "
                               f"claim: smaller by {BARRIER_EFFECT:g} point", family, Claim("less", BARRIER_EFFECT))
    return "\n".join(lines)


def figure(rows: Sequence[dict[str, object]], path: Path) -> None:
    """Per architecture: each method's consecutive and seed-pair test-error barriers against the later cycle's
    sparsity (mean and 95% t interval over seeds, symmetric-log axis); written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _cells(rows)
    models = list(dict.fromkeys(c[0] for c in cells))
    fig, axes = plt.subplots(1, len(models), figsize=(4.4 * len(models), 4.6), dpi=150, squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        mine = [(c, s) for m, c, s in cells if m == model]
        seeds = 0
        for k, method in enumerate(METHODS):
            for pair, style in zip(PAIRS, ("-", ":"), strict=True):
                values = [list(_values(rows, model, method, pair, c).values()) for c, _ in mine]
                seeds = max(seeds, *map(len, values))
                points = [mean_half(v) for v in values]
                ax.errorbar([100 * s + (k - 1) * 0.6 for _, s in mine], [p[0] for p in points],
                            yerr=[p[1] for p in points], ls=style, marker="osD"[k], ms=4, capsize=2, lw=1,
                            color=f"C{k}", label=f"{method}, {pair}")
        ax.axhline(BARRIER_EFFECT, color="grey", lw=0.8, ls="--", label=f"{BARRIER_EFFECT:g} point")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(-0.3, 200)
        ax.set_yticks([0, 0.5, 1, 10, 100], ["0", "0.5", "1", "10", "100"])
        label_axes(ax, "sparsity of the later cycle (% of weights pruned)",
                   "test-error barrier (points; linear below 1, log above)",
                   f"{model}: cycles k-1 to k (solid), seed pairs (dotted)\nmean and 95% interval of {seeds} seeds")
    fig.suptitle("Linear connectivity of consecutive IMP, SWA and SWAMP solutions, beside different seeds' "
                 "(MNIST-1D, controls grid)", fontsize=10)
    save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "consecutive", __doc__, lambda a: measure_all(a.out, a.seeds, a.jobs, a.data_dir),
                      read_csv, tables, figure=figure, default_out="runs/controls",
                      runs_help="folder of the controls grid's runs (and the ingredients study's)")


if __name__ == "__main__":
    raise SystemExit(main())
