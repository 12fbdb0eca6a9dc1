"""Flatness or averaging on three architectures: SWA alone and particles alone beside IMP and SWAMP, with traces.

SWAMP combines two things that each may flatten a solution: stochastic weight averaging within a particle (SWA:
Izmailov et al. 2018) and the weight average of N particles (Choi et al. 2024). The mechanisms study
(:mod:`studies.reproductions.mechanisms`) separates them on cnn1d and the MLP at 6 cycles; this study asks the same
on **all three architectures of the controls grid**, the Transformer included, in the grid's setting, with the
grid's Hessian traces:

=================================  ==================================================================================
arm                                run (ticket after 2 dense epochs, 4 cycles at 50% pruning; cnn1d 8, the MLP 32,
                                   transformer1d 64 epochs per cycle)
=================================  ==================================================================================
``IMP``                            the controls grid's IMP (``OUT/grid/MODEL-imp-sS``)
``SWAMP (N=4)``                    the controls grid's SWAMP (``OUT/grid/MODEL-swamp-sS``)
``SWA only (N=1)``                 the grid's SWAMP with ``--particles 1`` (``OUT/ingredients/MODEL-swa-sS``)
``particles only (N=4, no SWA)``   the grid's SWAMP with ``--no-swa`` (``OUT/ingredients/MODEL-particles-sS``)
=================================  ==================================================================================

SWA alone and IMP train one particle (the same particle-epochs), the other two four. All four arms of seed s start
from the same dense ticket, so every difference is paired. Traces are those of :mod:`studies.controls` (raw
Hutchinson trace over 32 probes of 1,024 seeded training samples, on the unpruned coordinates, BatchNorm in eval
mode), the same numbers as the controls grid's for IMP and SWAMP (read from the grid's cache,
``OUT/analysis/controls/flatness``, where it holds them; measured otherwise), cached one JSON per solution under
``OUT/analysis/ingredients``. Trace differences are relative, 100 (tr A − tr B) / tr B.

The questions, as families of paired comparisons (:func:`studies.verdict.paired_verdicts`; Holm over the 3
architectures x 4 sparsities of each family; effects fixed before the runs: a trace smaller by 10%, half a point
of accuracy): is SWA alone, or averaging particles alone, flatter (``less``) and more accurate (``greater``) than
IMP, and is SWAMP flatter and more accurate than each of its two ingredients alone?

``python -m studies.reproductions.ingredients --out runs/controls --seeds 0-11 --jobs 2`` trains (or resumes) every
run (the grid's runs are those of ``studies.reproductions.controls`` under the same ``--out``), measures every
trace, writes ``OUT/ingredients.csv`` (model, method, seed, cycle, sparsity, test accuracy, raw trace) and
``OUT/ingredients.png`` and prints the tables of docs/reproductions.md; ``--from-csv
docs/data/ingredients-mnist1d.csv`` prints them from the committed per-seed data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from studies.reproductions import common
from studies.reproductions.common import (
    csv_pair,
    label_axes,
    mean_half,
    mean_se,
    median,
    save_png,
    seed_values,
    study_main,
    verdict_lines,
)
from studies.reproductions.controls import CYCLES, GRID, train_commands
from studies.reproductions.lottery import run_all_resuming
from studies.reproductions.matched import solutions
from studies.verdict import ACCURACY_EFFECT, TRACE_EFFECT, Claim

MODELS = tuple(GRID)
ARMS = {"SWA only (N=1)": ("swa", ("--particles", "1")), "particles only (N=4, no SWA)": ("particles", ("--no-swa",))}
# arm -> (run name, the flag of the grid's SWAMP command that changes: a new value, or a switch added)
METHODS = ("IMP", "SWA only (N=1)", "particles only (N=4, no SWA)", "SWAMP (N=4)")
QUESTIONS = (  # A, B, the sentence's subject and object
    ("SWA only (N=1)", "IMP", "SWA alone", "IMP"),
    ("particles only (N=4, no SWA)", "IMP", "Averaging particles alone", "IMP"),
    ("SWAMP (N=4)", "SWA only (N=1)", "SWAMP", "SWA alone"),
    ("SWAMP (N=4)", "particles only (N=4, no SWA)", "SWAMP", "particles without SWA"),
)
FIELDS = ["model", "method", "seed", "cycle", "sparsity", "test_acc", "trace"]
TYPES = {"model": str, "method": str, "seed": int, "cycle": int, "sparsity": float, "test_acc": float,
         "trace": float}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "ingredients")


def runs(out: Path, seeds: Sequence[int], data_dir: Path, quick: bool = False
         ) -> dict[tuple[str, str, int], tuple[list[str], Path]]:
    """(model, method, seed) -> (training command, run folder) of every arm, the cheaper models first.

    Example:
        >>> cmd, run = runs(Path("r"), [3], Path("data"))["transformer1d", "SWA only (N=1)", 3]
        >>> run.as_posix(), cmd[-2:]
        ('r/ingredients/transformer1d-swa-s3', ['--particles', '1'])
        >>> runs(Path("r"), [3], Path("data"))["mlp", "particles only (N=4, no SWA)", 3][0][-3:]
        ['--particles', '4', '--no-swa']
    """
    grid = {run.name: (cmd, run) for cmd, run in train_commands(out, seeds, data_dir, quick)
            if run.parent.name == "grid"}
    plan = {}
    for model in MODELS:
        for seed in seeds:
            plan[model, "IMP", seed] = grid[f"{model}-imp-s{seed}"]
            swamp = plan[model, "SWAMP (N=4)", seed] = grid[f"{model}-swamp-s{seed}"]
            for method, (name, (flag, *value)) in ARMS.items():
                run = out / "ingredients" / f"{model}-{name}-s{seed}"
                cmd = list(swamp[0])
                cmd[cmd.index("--out") + 1] = str(run)
                if value:  # a flag of the grid's command takes another value
                    cmd[cmd.index(flag) + 1] = value[0]
                else:
                    cmd.append(flag)
                plan[model, method, seed] = (cmd, run)
    return plan


def _grid_cache(out: Path, model: str, method: str, seed: int, cycle: int) -> Path | None:
    """The controls grid's cached trace of an IMP or SWAMP solution (absent for the other arms)."""
    name = {"IMP": "imp", "SWAMP (N=4)": "swamp"}.get(method)
    return (out / "analysis" / "controls" / "flatness" / f"{model}-{name}-r2-s{seed}-c{cycle:02d}.json"
            if name else None)


def run_all(out: Path, seeds: Sequence[int], jobs: int = 1, quick: bool = False,
            data_dir: Path = Path("data")) -> list[dict[str, object]]:
    """Train (or resume) every run, measure every solution's trace (cached), and write ``OUT/ingredients.csv``;
    returns its rows."""
    plan = runs(out, seeds, data_dir, quick)
    cycles = 2 if quick else CYCLES
    run_all_resuming(plan.values(), jobs, f"cycle_{cycles - 1:02d}")
    cache = out / "analysis" / "ingredients"
    cache.mkdir(parents=True, exist_ok=True)
    keys = [(*key, cycle) for key in plan for cycle in range(cycles)]
    found = solutions([(plan[k[:3]][1], k[3], cache, data_dir, _grid_cache(out, *k)) for k in keys], jobs)
    rows: list[dict[str, object]] = [
        {"model": model, "method": method, "seed": seed, "cycle": cycle, "sparsity": v["sparsity"],
         "test_acc": round(v["test_acc"], 4), "trace": round(v["trace"], 6)}
        for (model, method, seed, cycle), v in zip(keys, found, strict=True)]
    write_csv(rows, out / "ingredients.csv")
    return rows


def _cells(rows: Sequence[dict[str, object]]) -> list[tuple[str, int, float]]:
    """(model, cycle, sparsity) of the rows, models in the grid's order."""
    found = {(str(r["model"]), int(r["cycle"]), float(r["sparsity"])) for r in rows}  # type: ignore[call-overload]
    return sorted(found, key=lambda c: (MODELS.index(c[0]) if c[0] in MODELS else len(MODELS), c[0], c[1]))


def _paired(rows: Sequence[dict[str, object]], key: str, a: str, b: str, model: str, cycle: int) -> list[float]:
    """A − B of column ``key`` per seed (traces: in percent of B's)."""
    va, vb = (seed_values(rows, key, model=model, method=m, cycle=cycle) for m in (a, b))
    return [100 * (va[s] - vb[s]) / vb[s] if key == "trace" else va[s] - vb[s] for s in sorted(va) if s in vb]


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown tables of docs/reproductions.md: accuracy (mean ± standard error) and median trace per arm, then
    the verdict tables of the four questions on traces and on accuracy (the one rule, Holm over model x sparsity).

    Example:
        >>> rows = [{"model": "mlp", "method": m, "seed": s, "cycle": 0, "sparsity": 0.0, "test_acc": 60.0 + s,
        ...          "trace": 50.0} for m in METHODS for s in range(2)]
        >>> print(tables(rows).splitlines()[2])
        | mlp | 0.0% | 60.50 ± 0.50 | 60.50 ± 0.50 | 60.50 ± 0.50 | 60.50 ± 0.50 |
    """
    cells = _cells(rows)
    lines = ["| model | sparsity | " + " | ".join(f"{m}: test accuracy (%)" for m in METHODS) + " |",
             "|---|---|" + "---|" * len(METHODS)]
    for model, cycle, sparsity in cells:
        lines.append(f"| {model} | {100 * sparsity:.1f}% | " + " | ".join(
            mean_se(list(seed_values(rows, "test_acc", model=model, method=m, cycle=cycle).values()))
            for m in METHODS) + " |")
    lines += ["", "| model | sparsity | " + " | ".join(f"{m}: median raw trace" for m in METHODS) + " |",
              "|---|---|" + "---|" * len(METHODS)]
    for model, cycle, sparsity in cells:
        medians = [list(seed_values(rows, "trace", model=model, method=m, cycle=cycle).values()) for m in METHODS]
        lines.append(f"| {model} | {100 * sparsity:.1f}% | "
                     + " | ".join(f"{median(v):.4g}" if v else "-" for v in medians) + " |")
    for key, claim, words, unit, digits in (
            ("trace", Claim("less", TRACE_EFFECT), "is flatter than", "%", 1),
            ("test_acc", Claim("greater", ACCURACY_EFFECT), "is more accurate than", "", 2)):
        for a, b, subject, obj in QUESTIONS:
            family = {f"{model} | {100 * sparsity:.1f}%": _paired(rows, key, a, b, model, cycle)
                      for model, cycle, sparsity in cells}
            what = ("100 (tr A − tr B) / tr B, %; claim: smaller by" if key == "trace"
                    else "test accuracy, points; claim: greater by")
            lines += verdict_lines(f"**{subject} {words} {obj}** (A = {a}, B = {b}; {what} {claim.effect:g}{unit}",
                                   family, claim, digits=digits, unit=unit)
    return "\n".join(lines)


def figure(rows: Sequence[dict[str, object]], path: Path) -> None:
    """Per architecture (columns): each arm's raw trace relative to IMP's (top) and its accuracy minus IMP's
    (bottom), against sparsity, mean and 95% t interval over seeds; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _cells(rows)
    models = [m for m in dict.fromkeys(c[0] for c in cells)]
    fig, axes = plt.subplots(2, len(models), figsize=(4.2 * len(models), 7.6), dpi=150, squeeze=False)
    for col, model in enumerate(models):
        mine = [(c, s) for m, c, s in cells if m == model]
        seeds = len(seed_values(rows, "test_acc", model=model, method="IMP", cycle=mine[0][0]))
        for k, method in enumerate(METHODS[1:]):
            x = [100 * s + (k - 1) * 0.8 for _, s in mine]
            for row, key in enumerate(("trace", "test_acc")):
                points = [mean_half(_paired(rows, key, method, "IMP", model, c)) for c, _ in mine]
                axes[row][col].errorbar(x, [p[0] for p in points], yerr=[p[1] for p in points], marker="osD"[k],
                                        ms=4, capsize=2, lw=1, color=f"C{k + 1}", label=method)
        axes[0][col].axhspan(-TRACE_EFFECT, 0, color="grey", alpha=0.15, label=f"within {TRACE_EFFECT:g}% of IMP's")
        axes[1][col].axhspan(0, ACCURACY_EFFECT, color="grey", alpha=0.15,
                             label=f"gain below {ACCURACY_EFFECT:g} points")
        for row in (0, 1):
            axes[row][col].axhline(0, color="black", lw=0.8)
        label_axes(axes[0][col], "sparsity (% of weights pruned)", "raw Hessian trace minus IMP's (% of IMP's)",
                   f"{model}: how much flatter than IMP\nmean and 95% interval of {seeds} seeds")
        label_axes(axes[1][col], "sparsity (% of weights pruned)", "test accuracy minus IMP's (points)",
                   f"{model}: accuracy gain over IMP\nmean and 95% interval of {seeds} seeds")
    fig.suptitle("SWA alone, averaging particles alone and SWAMP beside IMP: flatness and accuracy (MNIST-1D, "
                 "controls grid)", fontsize=10)
    save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "ingredients", __doc__, common.trainer(run_all), read_csv, tables, quick=True,
                      figure=figure, default_out="runs/controls")


if __name__ == "__main__":
    raise SystemExit(main())
