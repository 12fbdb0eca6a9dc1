"""More particles: does SWAMP's accuracy grow with N and then plateau? 12 seeds, judged by the one rule.

Choi et al. (2024) report that SWAMP's solutions improve as the number of particles N grows and that the gain
levels off (their N ablation). This study trains SWAMP with N = 1 (one SWA particle), 2, 4 and 8 particles beside
IMP in the setting of the ensembles study (:mod:`studies.reproductions.ensembles`: cnn1d with BatchNorm, 16 epochs
per particle per cycle, ticket after 8 dense epochs, half of the remaining weights pruned per cycle by global
magnitude, 6 cycles to 96.9% sparsity). Every run of seed s starts from the same dense ticket, so every difference is
paired by seed. IMP, N = 1 and N = 4 are the runs of the ensembles and mechanisms studies (same names under the same
``--out``: a finished run is not trained again).

Verdicts (:func:`studies.verdict.paired_verdicts`, the project's one rule; delta = 0.5 points of accuracy, fixed
before the runs; Holm over each family of N x sparsity):

* "SWAMP with N particles is more accurate than IMP": SWAMP(N) − IMP, ``greater``;
* "doubling the particles makes SWAMP more accurate": SWAMP(2N) − SWAMP(N) for N = 1, 2, 4, ``greater``;
* "the gain has levelled off by N = 4": SWAMP(8) − SWAMP(4), ``equivalent`` within 0.5 points.

``python -m studies.reproductions.particles --out runs/ensembles --seeds 0-11 --jobs 2`` runs (or resumes) every
run, writes ``OUT/particles.csv`` (model, method, seed, cycle, sparsity, test accuracy), prints the tables of
docs/reproductions.md and draws ``OUT/particles.png``; ``--from-csv docs/data/particles-mnist1d.csv`` prints the
tables from the committed per-seed data without running anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from studies.reproductions import common, ensembles
from studies.reproductions.common import csv_pair, label_axes, mean_half, mean_se, save_png, study_main, verdict_lines
from studies.reproductions.ensembles import difference
from studies.reproductions.lottery import run_resuming
from studies.verdict import Claim

MODELS = ("cnn1d",)
COUNTS = (1, 2, 4, 8)  # particles
EFFECT = ensembles.EFFECT
METHODS = ("IMP", *(f"SWAMP (N={n})" for n in COUNTS))
NAMES = {"IMP": "imp-j0", "SWAMP (N=1)": "swa", "SWAMP (N=2)": "swamp-n2", "SWAMP (N=4)": "swamp",
         "SWAMP (N=8)": "swamp-n8"}  # run folder names, shared with the ensembles and mechanisms studies
FIELDS = ["model", "method", "seed", "cycle", "sparsity", "test_acc"]
TYPES = {"model": str, "method": str, "seed": int, "cycle": int, "sparsity": float, "test_acc": float}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "particles")


def _command(method: str, model: str, seed: int, out: Path, quick: bool, data_dir: Path) -> list[str]:
    """The training command of one arm (IMP, or SWAMP with its N)."""
    epochs = ensembles.MODELS[model]
    if method == "IMP":
        return ensembles.run_command("imp", model, seed, epochs, out, quick, data_dir)
    n = method.split("=")[1].rstrip(")")
    return ensembles.run_command("swamp", model, seed, epochs, out, quick, data_dir, "--particles", n)


def run_all(out: Path, seeds: Sequence[int], jobs: int = 1, quick: bool = False,
            data_dir: Path = Path("data")) -> list[dict[str, object]]:
    """Run (or resume) every run of ``seeds`` under ``out``, fewest particles first; returns the rows of
    ``particles.csv`` (also written)."""
    runs = {(model, method, seed): out / f"{model}-{NAMES[method]}-s{seed}"
            for model in MODELS for method in METHODS for seed in seeds}
    order = sorted(runs, key=lambda key: (METHODS.index(key[1]), key[2]))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda key: run_resuming(_command(key[1], key[0], key[2], runs[key], quick, data_dir),
                                               runs[key]), order))
    rows = ensembles.accuracy_rows(runs)
    write_csv(rows, out / "particles.csv")
    return rows


def families(rows: Sequence[dict[str, object]]) -> list[tuple[str, dict[str, list[float]], Claim]]:
    """(heading, family, claim) of the study's three claims; labels ``model | comparison | sparsity``."""
    grid = ensembles._grid(rows)
    against_imp, doubling, plateau = {}, {}, {}
    for model, cycle, sparsity in grid:
        where = f"{100 * sparsity:.1f}%"
        for n in COUNTS:
            against_imp[f"{model} | N={n} | {where}"] = difference(rows, model, f"SWAMP (N={n})", "IMP", cycle)
        for n in COUNTS[:-1]:
            doubling[f"{model} | N={2 * n} vs N={n} | {where}"] = difference(rows, model, f"SWAMP (N={2 * n})",
                                                                             f"SWAMP (N={n})", cycle)
        plateau[f"{model} | N=8 vs N=4 | {where}"] = difference(rows, model, "SWAMP (N=8)", "SWAMP (N=4)", cycle)
    return [(f"**\"SWAMP with N particles is more accurate than IMP\"** (SWAMP(N) − IMP, points; claim: greater, "
             f"δ = {EFFECT}", against_imp, Claim("greater", EFFECT)),
            (f"**\"Doubling the particles makes SWAMP more accurate\"** (SWAMP(2N) − SWAMP(N), points; claim: greater, "
             f"δ = {EFFECT}", doubling, Claim("greater", EFFECT)),
            (f"**\"The gain has levelled off by N = 4\"** (SWAMP(8) − SWAMP(4), points; claim: equivalent within "
             f"±{EFFECT}", plateau, Claim("equivalent", EFFECT))]


def figure(rows: Sequence[dict[str, object]], path: Path) -> None:
    """SWAMP(N) − IMP (left) and SWAMP(2N) − SWAMP(N) (right) against sparsity, mean and 95% t interval over seeds;
    written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [(m, c, s) for m, c, s in ensembles._grid(rows) if m == MODELS[0]]
    seeds = len(ensembles._values(rows, MODELS[0], "IMP", grid[0][1]))
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.2), dpi=150)
    pairs = ([(f"SWAMP (N={n})", "IMP", f"N = {n}") for n in COUNTS],
             [(f"SWAMP (N={2 * n})", f"SWAMP (N={n})", f"N = {2 * n} vs {n}") for n in COUNTS[:-1]])
    titles = ("SWAMP with N particles − IMP", "SWAMP(2N) − SWAMP(N): doubling the particles")
    for ax, comparisons, title in zip(axes, pairs, titles, strict=True):
        for k, (a, b, name) in enumerate(comparisons):
            points = [mean_half(difference(rows, m, a, b, c)) for m, c, _ in grid]
            ax.errorbar([100 * s + (k - 1.5) * 0.35 for *_, s in grid], [p[0] for p in points],
                        yerr=[p[1] for p in points], marker="os^D"[k], ms=4, capsize=2, lw=1, color=f"C{k}", label=name)
        ax.axhline(0, color="black", lw=0.8, label="no difference")
        label_axes(ax, "sparsity (% of weights pruned)", "test accuracy difference, same seed (points)",
                   f"cnn1d: {title}\nmean and 95% interval of {seeds} seeds")
    fig.suptitle("SWAMP's accuracy against its number of particles (MNIST-1D, 16 epochs per cycle)", fontsize=10)
    save_png(fig, path)


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown tables of docs/reproductions.md: test accuracy per arm (mean ± standard error over seeds), then
    the verdict table of each claim (:func:`families`, the one rule).

    Example:
        >>> rows = [{"model": "cnn1d", "method": m, "seed": s, "cycle": 0, "sparsity": 0.0, "test_acc": 90.0 + s}
        ...         for m in METHODS for s in range(2)]
        >>> print(tables(rows).splitlines()[2])
        | cnn1d | 0.0% | 90.50 ± 0.50 | 90.50 ± 0.50 | 90.50 ± 0.50 | 90.50 ± 0.50 | 90.50 ± 0.50 |
    """
    lines = ["| model | sparsity | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for model, cycle, sparsity in ensembles._grid(rows):
        cells = [mean_se(list(ensembles._values(rows, model, m, cycle).values())) for m in METHODS]
        lines.append(f"| {model} | {100 * sparsity:.1f}% | " + " | ".join(cells) + " |")
    for heading, family, claim in families(rows):
        lines += verdict_lines(heading, family, claim, columns="model | comparison | sparsity")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "particles", __doc__, common.trainer(run_all), read_csv, tables, quick=True, figure=figure)


if __name__ == "__main__":
    raise SystemExit(main())
