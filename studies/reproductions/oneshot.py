"""Iterative or one-shot pruning: IMP beside one-shot magnitude and random pruning, 12 seeds, the one rule.

IMP's premise (Frankle & Carbin 2019; Frankle et al. 2020), which SWAMP builds on: pruning a little per cycle and
retraining beats pruning the dense solution to the same sparsity in one step, and a magnitude mask beats a random
one. This study runs both baselines (:mod:`training.oneshot`: cycle 0 trains the dense network from the ticket
exactly as IMP does; cycle k starts again from the ticket with the dense solution pruned in one step to IMP's
density 0.5^k, by global magnitude or uniformly at random) in the setting of the ensembles study
(:mod:`studies.reproductions.ensembles`: cnn1d with BatchNorm, 16 epochs per cycle, ticket after 8 dense epochs,
6 cycles to 96.9% sparsity, seeds 0-11), beside that study's IMP and SWAMP (N = 4) runs (same names under the same
``--out``). Every run of seed s shares the dense ticket, so every difference is paired by seed.

Verdicts (:func:`studies.verdict.paired_verdicts`, the project's one rule; delta = 0.5 points of accuracy, fixed
before the runs; Holm over the sparsities of each family):

* "iterative pruning is more accurate than one-shot pruning": IMP − one-shot magnitude, ``greater``, at 75-96.9%
  (up to 50% the two are the same network: IMP's first pruning is one step from the dense solution too);
* "a magnitude mask is more accurate than a random one": one-shot magnitude − one-shot random, ``greater``, at
  50-96.9%.

``python -m studies.reproductions.oneshot --out runs/ensembles --seeds 0-11 --jobs 2`` runs (or resumes) every run,
writes ``OUT/oneshot.csv`` (model, method, seed, cycle, sparsity, test accuracy), prints the tables of
docs/reproductions.md and draws ``OUT/oneshot.png``; ``--from-csv docs/data/oneshot-mnist1d.csv`` prints the tables
from the committed per-seed data without running anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from studies.reproductions import common, ensembles
from studies.reproductions.common import csv_pair, label_axes, mean_half, mean_se, save_png, study_main, verdict_lines
from studies.reproductions.lottery import run_all_resuming
from studies.verdict import Claim

MODELS = ("cnn1d",)
EFFECT = ensembles.EFFECT
RUNS = {"IMP": ("imp", "imp-j0", []), "SWAMP (N=4)": ("swamp", "swamp", ["--particles", str(ensembles.PARTICLES)]),
        "one-shot magnitude": ("oneshot", "oneshot-magnitude", []),
        "one-shot random": ("oneshot", "oneshot-random", ["--prune-method", "random"])}  # (program, name, flags)
METHODS = tuple(RUNS)
FAMILIES = (("IMP", "one-shot magnitude", "iterative pruning (IMP) is more accurate than one-shot magnitude pruning",
             2),
            ("one-shot magnitude", "one-shot random", "a one-shot magnitude mask is more accurate than a random one",
             1))
# (A, B, claim, first cycle compared): IMP's first pruning (cycle 1) prunes the dense solution in one step, as
# one-shot pruning does, so IMP and one-shot magnitude are the same network up to cycle 1
FIELDS = ["model", "method", "seed", "cycle", "sparsity", "test_acc"]
TYPES = {"model": str, "method": str, "seed": int, "cycle": int, "sparsity": float, "test_acc": float}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "oneshot")


def run_all(out: Path, seeds: Sequence[int], jobs: int = 1, quick: bool = False,
            data_dir: Path = Path("data")) -> list[dict[str, object]]:
    """Run (or resume) every run of ``seeds`` under ``out``; returns the rows of ``oneshot.csv`` (also written)."""
    runs = {}
    for model in MODELS:
        for seed in seeds:
            for method, (program, name, flags) in RUNS.items():
                path = out / f"{model}-{name}-s{seed}"
                runs[model, method, seed] = (ensembles.run_command(program, model, seed, ensembles.MODELS[model], path,
                                                                   quick, data_dir, *flags), path)
    run_all_resuming(runs.values(), jobs)
    rows = ensembles.accuracy_rows({key: path for key, (_, path) in runs.items()})
    write_csv(rows, out / "oneshot.csv")
    return rows


def figure(rows: Sequence[dict[str, object]], path: Path) -> None:
    """Each arm's test accuracy against sparsity (mean and 95% t interval over seeds); written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [(c, s) for m, c, s in ensembles._grid(rows) if m == MODELS[0]]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    for k, method in enumerate(METHODS):
        points = [mean_half(list(ensembles._values(rows, MODELS[0], method, c).values())) for c, _ in grid]
        ax.errorbar([100 * s + (k - 1.5) * 0.4 for _, s in grid], [p[0] for p in points], yerr=[p[1] for p in points],
                    marker="osD^"[k], ms=4, capsize=2, lw=1, color=f"C{k}", label=method)
    seeds = len(ensembles._values(rows, MODELS[0], "IMP", grid[0][0]))
    label_axes(ax, "sparsity (% of weights pruned)", "test accuracy (%)",
               f"cnn1d: iterative (IMP, SWAMP) against one-shot pruning\nmean and 95% interval of {seeds} seeds",
               legend_size=7.5)
    fig.suptitle("Iterative or one-shot pruning (MNIST-1D, 16 epochs per cycle, 50% per cycle)", fontsize=10)
    save_png(fig, path)


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown tables of docs/reproductions.md: test accuracy per arm (mean ± standard error over seeds), then
    one verdict table per claim of :data:`FAMILIES` over the pruned cycles (the one rule).

    Example:
        >>> rows = [{"model": "cnn1d", "method": m, "seed": s, "cycle": 0, "sparsity": 0.0, "test_acc": 90.0 + s}
        ...         for m in METHODS for s in range(2)]
        >>> print(tables(rows).splitlines()[2])
        | cnn1d | 0.0% | 90.50 ± 0.50 | 90.50 ± 0.50 | 90.50 ± 0.50 | 90.50 ± 0.50 |
    """
    grid = ensembles._grid(rows)
    lines = ["| model | sparsity | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for model, cycle, sparsity in grid:
        cells = [mean_se(list(ensembles._values(rows, model, m, cycle).values())) for m in METHODS]
        lines.append(f"| {model} | {100 * sparsity:.1f}% | " + " | ".join(cells) + " |")
    for a, b, sentence, first in FAMILIES:
        family = {f"{model} | {100 * sparsity:.1f}%": ensembles.difference(rows, model, a, b, cycle)
                  for model, cycle, sparsity in grid if cycle >= first}
        lines += verdict_lines(f"**\"{sentence}\"** (A = {a}, B = {b}; test accuracy, points; claim: greater, "
                               f"δ = {EFFECT}", family, Claim("greater", EFFECT))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "oneshot", __doc__, common.trainer(run_all), read_csv, tables, quick=True, figure=figure)


if __name__ == "__main__":
    raise SystemExit(main())
