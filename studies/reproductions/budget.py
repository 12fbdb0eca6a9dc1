"""SWAMP's gain over IMP against the training budget per cycle, at 12 seeds, judged by the one rule.

The earlier budget studies (docs/earlier-results.md, 6 seeds, the superseded rule) found SWAMP ahead of IMP only
where each cycle trains briefly (4-8 epochs per cycle on cnn1d) and never ahead of IMP given SWAMP's compute. This
study asks the same three questions in the setting of the ensembles study (:mod:`studies.reproductions.ensembles`:
cnn1d with BatchNorm, ticket after 8 dense epochs, half of the remaining weights pruned per cycle by global
magnitude, 6 cycles to 96.9% sparsity), at E = 4, 8 and 16 epochs per particle per cycle:

=======================  =============================================  =====================================
arm (per budget E)       run                                            particle-epochs per cycle (IMP@E = 1)
=======================  =============================================  =====================================
``IMP``                  ``training.imp``, E epochs per cycle           1
``SWAMP (N=4)``          ``training.swamp --particles 4``, E epochs     4
``IMP x4 epochs``        ``training.imp``, 4 E epochs per cycle         4 (equal to SWAMP)
=======================  =============================================  =====================================

Every run of seed s starts from the same dense ticket (the ticket's 8 epochs do not depend on E), so every
difference is paired by seed. The 16-epoch runs and IMP at 64 epochs are the ensembles study's (same names under
the same ``--out``: a finished run is not trained again).

Verdicts (:func:`studies.verdict.paired_verdicts`, the project's one rule; delta = 0.5 points of accuracy, fixed
before the runs; Holm over each family):

* "SWAMP is more accurate than IMP at the same epochs per cycle": SWAMP@E − IMP@E, ``greater``, budgets x
  sparsities;
* "SWAMP is more accurate than IMP at equal training compute": SWAMP@E − IMP@4E, ``greater``, budgets x
  sparsities;
* "SWAMP's gain over IMP is larger with shorter cycles" (the earlier studies' reading):
  (SWAMP@E − IMP@E) − (SWAMP@16 − IMP@16) for E = 4, 8, ``greater``, budgets x sparsities.

``python -m studies.reproductions.budget --out runs/ensembles --seeds 0-11 --jobs 2`` runs (or resumes) every run,
writes ``OUT/budget.csv`` (model, epochs, method, seed, cycle, sparsity, test accuracy), prints the tables of
docs/reproductions.md and draws ``OUT/budget.png``; ``--from-csv docs/data/budget-mnist1d.csv`` prints the tables
from the committed per-seed data without running anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from studies.reproductions import common, ensembles
from studies.reproductions.common import csv_pair, label_axes, mean_half, mean_se, save_png, study_main, verdict_lines
from studies.reproductions.lottery import accuracies, run_resuming
from studies.verdict import Claim

MODELS = ("cnn1d",)
BUDGETS = (4, 8, 16)  # epochs per particle per cycle
REFERENCE = 16  # the budget the shrinking-gain family compares against (the ensembles study's)
PARTICLES = ensembles.PARTICLES
EFFECT = ensembles.EFFECT
METHODS = ("IMP", "SWAMP (N=4)", "IMP x4 epochs")
FIELDS = ["model", "epochs", "method", "seed", "cycle", "sparsity", "test_acc"]
TYPES = {"model": str, "epochs": int, "method": str, "seed": int, "cycle": int, "sparsity": float, "test_acc": float}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "budget")


def run_name(model: str, module: str, epochs: int) -> str:
    """The folder name (before ``-sSEED``) of the ``module`` run (``imp`` or ``swamp``) at ``epochs`` per cycle:
    the ensembles study's name where that study has the same run, else ``MODEL-MODULE-eEPOCHS``.

    Example:
        >>> run_name("cnn1d", "imp", 4), run_name("cnn1d", "imp", 64), run_name("cnn1d", "swamp", 16)
        ('cnn1d-imp-e4', 'cnn1d-imp4x', 'cnn1d-swamp')
    """
    base = ensembles.MODELS.get(model)
    shared = {("imp", base): "imp-j0", ("imp", None if base is None else PARTICLES * base): "imp4x",
              ("swamp", base): "swamp"}
    return f"{model}-{shared.get((module, epochs), f'{module}-e{epochs}')}"


def _arms(model: str) -> dict[tuple[int, str], tuple[str, int]]:
    """(budget, method) -> (module, epochs per cycle) of the run behind that arm."""
    return {(e, method): (module, e * factor) for e in BUDGETS
            for method, module, factor in (("IMP", "imp", 1), ("SWAMP (N=4)", "swamp", 1),
                                           ("IMP x4 epochs", "imp", PARTICLES))}


def run_all(out: Path, seeds: Sequence[int], jobs: int = 1, quick: bool = False,
            data_dir: Path = Path("data")) -> list[dict[str, object]]:
    """Run (or resume) every run of ``seeds`` under ``out``, cheapest first; returns the rows of ``budget.csv``
    (also written)."""
    runs: dict[tuple[str, str, int, int], tuple[list[str], Path]] = {}
    for model in MODELS:
        for seed in seeds:
            for module, epochs in set(_arms(model).values()):
                path = out / f"{run_name(model, module, epochs)}-s{seed}"
                extra = ["--particles", str(PARTICLES)] if module == "swamp" else []
                runs[model, module, epochs, seed] = (ensembles.run_command(module, model, seed, epochs, path, quick,
                                                                           data_dir, *extra), path)
    cost = {key: key[2] * (PARTICLES if key[1] == "swamp" else 1) for key in runs}
    order = sorted(runs, key=lambda key: (cost[key], key[3]))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda key: run_resuming(*runs[key]), order))
    rows: list[dict[str, object]] = []
    for model in MODELS:
        for seed in seeds:
            for (budget, method), (module, epochs) in _arms(model).items():
                for cycle, (sparsity, acc) in sorted(accuracies(runs[model, module, epochs, seed][1]).items()):
                    rows.append({"model": model, "epochs": budget, "method": method, "seed": seed, "cycle": cycle,
                                 "sparsity": sparsity, "test_acc": round(acc, 4)})
    write_csv(rows, out / "budget.csv")
    return rows


def _values(rows: Sequence[dict[str, object]], model: str, budget: int, method: str, cycle: int) -> dict[int, float]:
    """seed -> test accuracy of one arm at one cycle."""
    return {int(r["seed"]): float(r["test_acc"]) for r in rows  # type: ignore[call-overload,arg-type]
            if r["model"] == model and r["epochs"] == budget and r["method"] == method and r["cycle"] == cycle}


def _grid(rows: Sequence[dict[str, object]]) -> list[tuple[str, int, int, float]]:
    """(model, budget, cycle, sparsity) of the rows, in the study's order."""
    seen = {(str(r["model"]), int(r["epochs"]), int(r["cycle"])): float(r["sparsity"])  # type: ignore[call-overload]
            for r in rows}
    return [key + (seen[key],) for key in sorted(seen)]


def _gain(rows: Sequence[dict[str, object]], model: str, budget: int, cycle: int, baseline: str) -> dict[int, float]:
    """seed -> SWAMP@budget minus ``baseline``@budget (points) at ``cycle``."""
    a, b = _values(rows, model, budget, "SWAMP (N=4)", cycle), _values(rows, model, budget, baseline, cycle)
    return {s: a[s] - b[s] for s in sorted(a) if s in b}


def families(rows: Sequence[dict[str, object]]) -> list[tuple[str, dict[str, list[float]]]]:
    """(heading, family) of the study's three claims; each family's labels are ``model | epochs | sparsity``."""
    grid = _grid(rows)
    same, cost, shrink = {}, {}, {}
    for model, budget, cycle, sparsity in grid:
        label = f"{model} | {budget} | {100 * sparsity:.1f}%"
        same[label] = list(_gain(rows, model, budget, cycle, "IMP").values())
        cost[label] = list(_gain(rows, model, budget, cycle, "IMP x4 epochs").values())
        if budget != REFERENCE:
            short, long = _gain(rows, model, budget, cycle, "IMP"), _gain(rows, model, REFERENCE, cycle, "IMP")
            shrink[label] = [short[s] - long[s] for s in short if s in long]
    return [("**\"SWAMP is more accurate than IMP at the same epochs per cycle\"** (SWAMP@E − IMP@E, points; "
             f"claim: greater, δ = {EFFECT}", same),
            ("**\"SWAMP is more accurate than IMP at equal training compute\"** (SWAMP@E − IMP@4E, points; claim: "
             f"greater, δ = {EFFECT}", cost),
            (f"**\"SWAMP's gain over IMP is larger with shorter cycles\"** ((SWAMP − IMP)@E − (SWAMP − IMP)@{REFERENCE}"
             f", points; claim: greater, δ = {EFFECT}", shrink)]


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown tables of docs/reproductions.md: test accuracy per arm (mean ± standard error over seeds), then
    the verdict table of each claim (:func:`families`, the one rule).

    Example:
        >>> rows = [{"model": "cnn1d", "epochs": e, "method": m, "seed": s, "cycle": 0, "sparsity": 0.0,
        ...          "test_acc": 90.0 + s} for e in BUDGETS for m in METHODS for s in range(2)]
        >>> print(tables(rows).splitlines()[2])
        | cnn1d | 4 | 0.0% | 90.50 ± 0.50 | 90.50 ± 0.50 | 90.50 ± 0.50 |
    """
    lines = ["| model | epochs per cycle E | sparsity | IMP@E | SWAMP (N=4)@E | IMP@4E |", "|---|---|---|---|---|---|"]
    for model, budget, cycle, sparsity in _grid(rows):
        cells = [mean_se(list(_values(rows, model, budget, m, cycle).values())) for m in METHODS]
        lines.append(f"| {model} | {budget} | {100 * sparsity:.1f}% | " + " | ".join(cells) + " |")
    for heading, family in families(rows):
        lines += verdict_lines(heading, family, Claim("greater", EFFECT),
                               columns="model | epochs per cycle E | sparsity")
    return "\n".join(lines)


def figure(rows: Sequence[dict[str, object]], path: Path) -> None:
    """SWAMP's gain over IMP at the same epochs (left) and over IMP with 4x the epochs (right) against sparsity,
    one line per budget, mean and 95% t interval over seeds; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = _grid(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.2), dpi=150)
    for ax, baseline, title in ((axes[0], "IMP", "SWAMP − IMP, same epochs per cycle"),
                                (axes[1], "IMP x4 epochs", "SWAMP − IMP with 4x the epochs (equal compute)")):
        _gain_lines(ax, rows, grid, baseline)
        seeds = len(_values(rows, grid[0][0], grid[0][1], "IMP", grid[0][2]))
        label_axes(ax, "sparsity (% of weights pruned)", "test accuracy difference, same seed (points)",
                   f"cnn1d: {title}\nmean and 95% interval of {seeds} seeds")
    fig.suptitle("SWAMP's gain over IMP against the epochs per cycle (MNIST-1D, 6 cycles at 50% pruning)",
                 fontsize=10)
    save_png(fig, path)


def _gain_lines(ax: Any, rows: Sequence[dict[str, object]], grid: Sequence[tuple[str, int, int, float]],
                baseline: str) -> None:
    for n, budget in enumerate(BUDGETS):
        cells = [(m, c, s) for m, b, c, s in grid if b == budget]
        points = [mean_half(list(_gain(rows, m, budget, c, baseline).values())) for m, c, _ in cells]
        ax.errorbar([100 * s + (n - 1) * 0.4 for *_, s in cells], [p[0] for p in points],
                    yerr=[p[1] for p in points], marker="os^"[n], ms=4, capsize=2, lw=1, color=f"C{n}",
                    label=f"E = {budget} epochs per cycle")
    ax.axhline(0, color="black", lw=0.8, label=f"{baseline} (zero line)")


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "budget", __doc__, common.trainer(run_all), read_csv, tables, quick=True, figure=figure)


if __name__ == "__main__":
    raise SystemExit(main())
