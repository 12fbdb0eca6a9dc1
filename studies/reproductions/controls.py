"""The controls grid at 12 seeds, judged by the one verdict rule: every landscape claim of SWAMP beside its null.

The measurements are those of :mod:`studies.controls` (docs/controls.md): particle-pair barriers beside seed-pair
barriers (raw and after weight matching), hulls of particles beside hulls of different seeds' solutions, raw and
BatchNorm-invariant Hessian traces of SWAMP and IMP, test accuracy, and the rewind sweep. This module trains the
grid (or resumes it), measures it, keeps one per-seed row per number (``controls.csv``, committed as
docs/data/controls-mnist1d.csv) and prints every table and verdict from those rows alone.

Grid: MNIST-1D, IMP and SWAMP (N = 4), ticket after 2 dense epochs, 4 cycles pruning half of the remaining
weights (sparsity 0, 50, 75, 87.5%); cnn1d (BatchNorm) with 8 epochs per cycle (96% dense, above the published
CNN's 94%), the MLP with 32 epochs per cycle (65% dense, as in the ensembles study) and transformer1d with 64
(89% dense; a dense probe gave 83-87% at 32 epochs and no gain beyond 64); seeds 0-11. Rewind
sweep: cnn1d at rewind points 0, 1, 4, 8 beside the grid's 2. The unpaired controls pair each seed s with the
next (:func:`studies.controls.measurements.seed_groups`): the seed pair (s, s + 1) and the seed hull (s, s + 1,
s + 2), indices modulo the 12 seeds, so every seed has one control and each solution serves in 2 (3) of them.

Verdicts (:func:`studies.verdict.paired_verdicts`; Holm over model x sparsity of each family; delta fixed
before the measurements):

=====================================  =============================================  =========  ==============
claim                                  A - B per seed                                 direction  delta
=====================================  =============================================  =========  ==============
particles are connected, seeds not     particle error barrier - seed pair's (SWAMP)   less       1 point
... and after weight matching          particle error barrier - aligned seed pair's   less       1 point
the particles' hull is low-loss        particle hull excess - seed hull's (SWAMP)     less       0.1 nats
SWAMP is flatter (raw trace)           100 (SWAMP - IMP) / IMP                        less       10%
... BatchNorm-invariant (cnn1d)        the same of sum ||theta_l||^2 tr H_ll          less       10%
the flatter solution is more accurate  accuracy of the flatter (raw trace) - other's  greater    0.5 points
SWAMP is more accurate than IMP        SWAMP - IMP test accuracy                      greater    0.5 points
a ticket at rewind r is unstable       particle error barrier at r - at 2             greater    1 point
SWAMP needs a stable ticket            SWAMP - IMP accuracy at rewind r               less       0.5 points
=====================================  =============================================  =========  ==============

The hull excess is the mean test loss of 32 uniform samples of the hull minus the mean of its 3 vertices'.

``python -m studies.reproductions.controls --out runs/controls --seeds 0-11 --jobs 2`` trains, measures (cached
under ``OUT/analysis/controls``) and writes ``OUT/controls.csv`` and ``OUT/controls.png``; ``--from-csv`` prints
the tables of a committed CSV.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from studies.controls.measurements import Settings
from studies.controls.verdicts import REWIND, TRACES, label, rows_of, values, verdict_families
from studies.reproductions.common import csv_pair, label_axes, mean_half, mean_se, save_png, study_main, verdict_lines
from studies.reproductions.lottery import run_all_resuming

GRID = {"cnn1d": 8, "mlp": 32, "transformer1d": 64}  # model -> epochs per cycle (each at its capacity)
CYCLES, RATIO, PARTICLES = 4, 0.5, 4
SWEEP = (0, 1, 4, 8)  # cnn1d's other rewind points
FIELDS = ["model", "rewind", "measure", "method", "seed", "cycle", "sparsity", "value"]
TYPES: dict[str, Callable[[str], Any]] = {
    k: int if k in ("rewind", "seed", "cycle") else float if k in ("sparsity", "value") else str for k in FIELDS}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "controls")


def train_commands(out: Path, seeds: Sequence[int], data_dir: Path, quick: bool = False
                   ) -> list[tuple[list[str], Path]]:
    """(command, run folder) of every run: the grid of both models, then cnn1d's rewind sweep.

    Example:
        >>> cmd, run = train_commands(Path("r"), [3], Path("data"))[1]
        >>> run.as_posix(), " ".join(cmd[3:11])
        ('r/grid/cnn1d-swamp-s3', '--model cnn1d --epochs 8 --seed 3 --rewind-epochs 2')
    """
    def one(module: str, model: str, seed: int, rewind: int, run: Path) -> tuple[list[str], Path]:
        epochs = 1 if quick else GRID[model]
        cmd = [sys.executable, "-m", f"training.{module}", "--model", model, "--epochs", str(epochs), "--seed",
               str(seed), "--rewind-epochs", str(rewind), "--cycles",
               str(2 if quick else CYCLES), "--prune-ratio", str(RATIO), "--no-progress", "--device", "cpu",
               "--data-dir", str(data_dir), "--out", str(run)]
        return ([*cmd, "--particles", str(PARTICLES)] if module == "swamp" else cmd), run

    grid = [one(m, model, s, REWIND, out / "grid" / f"{model}-{m}-s{s}")
            for s in seeds for model in GRID for m in ("imp", "swamp")]
    sweep = [one(m, "cnn1d", s, r, out / "rewind" / f"cnn1d-{m}-r{r}-s{s}")
             for r in (SWEEP[:1] if quick else SWEEP) for s in seeds for m in ("imp", "swamp")]
    return grid + sweep


def run(args: Any) -> list[dict[str, object]]:
    """Train (or resume) every run under ``args.out``, measure the controls (``args.jobs`` at once) and write
    ``OUT/controls.csv``; returns its rows."""
    from studies.controls.cache import measure

    quick = getattr(args, "quick", False)
    last = f"cycle_{(2 if quick else CYCLES) - 1:02d}"
    run_all_resuming(train_commands(args.out, args.seeds, args.data_dir, quick), args.jobs, last)
    settings = Settings(rewind=REWIND, data_dir=str(args.data_dir))
    rows = rows_of(measure(args.out, settings, args.jobs, progress=False))
    write_csv(rows, args.out / "controls.csv")
    return rows


def _cells(rows: Sequence[Mapping[str, object]], cells: Sequence[tuple], columns: Sequence[tuple],
           digits: int = 2, rewind: bool = False) -> list[str]:
    """One Markdown row per cell: mean +- standard error over seeds of each column ``(measure, match)`` or
    ``(measure, match, digits)``; ``n/a`` where a cell has no value."""
    found = [(values(rows, c[0], **c[1]), c[2] if len(c) > 2 else digits) for c in columns]  # one pass per column
    return [f"| {label(cell, rewind)} | " + " | ".join(mean_se(list(v[cell].values()), d) if v.get(cell) else "n/a"
                                                      for v, d in found) + " |" for cell in cells]


def tables(rows: Sequence[Mapping[str, object]]) -> str:
    """The Markdown tables of docs/controls.md: accuracy, connectivity, hull, flatness and rewind (mean +- standard
    error over seeds), then every verdict family of the one rule.

    Example:
        >>> rows = [{"model": "mlp", "rewind": 2, "measure": "test_acc", "method": m, "seed": s, "cycle": 0,
        ...          "sparsity": 0.0, "value": 60.0 + s + (1.0 if m == "swamp" else 0.0)}
        ...         for m in ("imp", "swamp") for s in range(6)]
        >>> print(tables(rows).splitlines()[2])
        | mlp | 0.0% | 62.50 ± 0.76 | 63.50 ± 0.76 | 6 |
    """
    grid = {"rewind": REWIND}
    acc = values(rows, "test_acc", method="imp", **grid)
    lines = ["| model | sparsity | IMP test accuracy (%) | SWAMP (N = 4) | seeds |", "|---|---|---|---|---|"]
    lines += [line[:-1] + f"| {len(acc[c])} |" for c, line in
              zip(acc, _cells(rows, acc, [("test_acc", {"method": m, **grid}) for m in ("imp", "swamp")]),
                  strict=True)]
    barrier_cols = [("particle_error", grid), ("seed_error", {"method": "swamp", **grid}),
                    ("seed_error_aligned", {"method": "swamp", **grid}), ("seed_error", {"method": "imp", **grid}),
                    ("seed_error_aligned", {"method": "imp", **grid})]
    loss_cols = [(k.replace("error", "loss"), m) for k, m in barrier_cols]
    head = "particle pairs | SWAMP seed pairs | SWAMP, aligned | IMP seed pairs | IMP, aligned"
    lines += ["", f"| model | sparsity | test-error barrier (points): {head} |", "|---|---|---|---|---|---|---|"]
    lines += _cells(rows, acc, barrier_cols)
    lines += ["", f"| model | sparsity | test-loss barrier (nats): {head} |", "|---|---|---|---|---|---|---|"]
    lines += _cells(rows, acc, loss_cols, 4)
    lines += ["", "| model | sparsity | particle hull: excess (nats) | fraction ≤ worst vertex | SWAMP seed hull: "
              "excess | fraction ≤ worst vertex | IMP seed hull: excess |", "|---|---|---|---|---|---|---|"]
    lines += _cells(rows, acc, [("particle_hull_excess", grid), ("particle_hull_below", grid),
                                ("seed_hull_excess", {"method": "swamp", **grid}),
                                ("seed_hull_below", {"method": "swamp", **grid}),
                                ("seed_hull_excess", {"method": "imp", **grid})], 3)
    lines += ["", "| model | sparsity | " + " | ".join(f"IMP {n} | SWAMP {n}" for n in TRACES.values()) + " |",
              "|---|---|" + "---|" * 2 * len(TRACES)]
    lines += _cells(rows, acc, [(k, {"method": m, **grid}) for k in TRACES for m in ("imp", "swamp")], 1)
    sweep = sorted(values(rows, "test_acc", method="imp", model="cnn1d"), key=lambda c: (c[1], c[2]))
    lines += ["", "| model | rewind | sparsity | particle error barrier (points) | particle loss barrier | "
              "IMP accuracy (%) | SWAMP accuracy (%) |", "|---|---|---|---|---|---|---|"]
    lines += _cells(rows, sweep, [("particle_error", {"model": "cnn1d"}, 2), ("particle_loss", {"model": "cnn1d"}, 4),
                                  ("test_acc", {"model": "cnn1d", "method": "imp"}, 2),
                                  ("test_acc", {"model": "cnn1d", "method": "swamp"}, 2)], rewind=True)
    for fam in verdict_families(rows):
        columns = "model | rewind | sparsity" if fam.key in ("unstable", "needs_stable") else "model | sparsity"
        lines += verdict_lines(fam.heading, fam.family, fam.claim, columns=columns, unit=fam.unit,
                               digits=4 if fam.key == "hull" else 2)
    return "\n".join(lines)


def figure(rows: Sequence[Mapping[str, object]], path: Path) -> None:
    """Four panels with 95% intervals over seeds: SWAMP - IMP accuracy, particle and seed-pair error barriers,
    SWAMP's relative trace difference, and the particle barrier against the rewind point."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, grid_axes = plt.subplots(2, 2, figsize=(11, 8))
    axes = grid_axes.flatten()
    grid = {"rewind": REWIND}
    families = {fam.key: fam.family for fam in verdict_families(rows)}

    def draw(ax: Any, family: Mapping[str, Sequence[float]], model: str, legend: str, offset: float = 0.0) -> None:
        points = [(float(k.split("|")[-1].strip(" %")), mean_half(v)) for k, v in family.items()
                  if k.startswith(model + " ") and v]
        if points:
            xs, mh = zip(*points, strict=True)
            ax.errorbar([x + offset for x in xs], [m for m, _ in mh], yerr=[h for _, h in mh], marker="o",
                        capsize=3, label=legend)

    gain = families["more_accurate"]
    for i, model in enumerate(GRID):
        draw(axes[0], gain, model, model, 1.5 * i)
    axes[0].axhline(0, color="grey", lw=0.8)
    label_axes(axes[0], "sparsity (%)", "SWAMP - IMP test accuracy (points)", "SWAMP's accuracy gain over IMP")
    for i, model in enumerate(GRID):
        for measure, match, name in (("particle_error", grid, "particles"),
                                     ("seed_error", {"method": "swamp", **grid}, "seed pairs"),
                                     ("seed_error_aligned", {"method": "swamp", **grid}, "seed pairs, aligned")):
            family = {label(c): list(v.values()) for c, v in values(rows, measure, **match).items()}
            draw(axes[1], family, model, f"{model}: {name}", 1.5 * i)
    axes[1].set_yscale("symlog", linthresh=1)
    axes[1].set_ylim(0, 2000)  # room for the legend above the seed pairs
    label_axes(axes[1], "sparsity (%)", "test-error barrier (points)", "Particles against different seeds")
    axes[1].legend(fontsize=6.5, loc="upper left", ncol=2)
    raw = families["flatter_raw"]
    for i, model in enumerate(GRID):
        draw(axes[2], raw, model, model, 1.5 * i)
    axes[2].axhline(0, color="grey", lw=0.8)
    label_axes(axes[2], "sparsity (%)", "100 (SWAMP - IMP) / IMP (%)", "SWAMP's raw Hessian trace against IMP's")
    barrier = values(rows, "particle_error", model="cnn1d")
    for cycle in sorted({c[2] for c in barrier}):
        cells = sorted((c for c in barrier if c[2] == cycle), key=lambda c: c[1])
        mh = [mean_half(list(barrier[c].values())) for c in cells]
        axes[3].errorbar([c[1] for c in cells], [m for m, _ in mh], yerr=[h for _, h in mh], marker="o", capsize=3,
                         label=f"sparsity {100 * cells[0][3]:.1f}%")
    label_axes(axes[3], "rewind point (dense epochs)", "particle test-error barrier (points)",
               "cnn1d: ticket stability against the rewind point")
    fig.suptitle("Controls grid, MNIST-1D: means over seeds with pointwise 95% t intervals", fontsize=10)
    save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "controls", __doc__, run, read_csv, tables, quick=True, figure=figure,
                      runs_help="folder of the runs and their controls cache", default_out="runs/controls")


if __name__ == "__main__":
    raise SystemExit(main())
