"""The paper's open questions, each beside its control: mask or weights, flatness or averaging, SWAMP in some cycles.

Choi et al. (2024) leave three questions about *why* SWAMP's solutions are better that an ablation can answer.
This study runs them on MNIST-1D with the two architectures and schedules of
:mod:`studies.reproductions.ensembles` (cnn1d with BatchNorm at 16 epochs per cycle, the MLP at 32; 6 cycles
pruning half of the remaining weights, to 96.9% sparsity; 12 seeds), whose IMP (``imp-j0``) and SWAMP runs it
shares when given the same ``--out``:

====================================  =============================================  ===================
arm                                   what it is                                     particle-cycles
====================================  =============================================  ===================
``IMP``                               one particle, no SWA                           6
``SWA only (N=1)``                    one particle with SWA (SWAMP+ from cycle 6)    6
``particles only (N=4, no SWA)``      four particles averaged, no SWA                24
``SWAMP (N=4)``                       four SWA particles averaged                    24
``IMP on SWAMP's masks``              IMP, cycle k under SWAMP's cycle-k mask         6
``SWAMP on IMP's masks``              SWAMP, cycle k under IMP's cycle-k mask         24
``SWAMP from cycle 2`` / ``4``        one SWA particle before cycle K, four from it  18 / 12
====================================  =============================================  ===================

Every run of seed s starts from the same dense ticket (8 epochs, seed s), so every difference is paired.
The questions, as families of paired comparisons (:func:`studies.verdict.paired_verdicts`, Holm over the 2
architectures x 5 pruned sparsities of each family; delta = 0.5 points of accuracy):

* **mask or weights** (:mod:`training.transplant`): SWAMP's masks carry its gain if IMP on SWAMP's masks beats IMP
  (``greater``); SWAMP's training carries it if SWAMP on IMP's masks beats IMP (``greater``).
* **flatness or averaging**: SWA alone and averaging particles alone, each against IMP (``greater``) and SWAMP
  against each of them (``greater``); the Hessian traces of the four (:mod:`studies.reproductions.flatness`).
* **SWAMP only in some cycles**: SWAMP from cycle K against SWAMP (``equivalent``: the cheaper schedule is as
  accurate), with accuracy per particle-epoch of training.

``python -m studies.reproductions.mechanisms --out runs/ensembles --seeds 0-11 --jobs 2`` runs (or resumes) every
run and writes ``OUT/mechanisms.csv`` (model, method, seed, cycle, sparsity, test accuracy, particle-epochs);
``--from-csv`` prints the tables of docs/reproductions.md from a committed CSV; ``--quick`` checks the plumbing.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from studies.reproductions import common
from studies.reproductions.common import csv_pair, label_axes, mean_half, mean_se, save_png, study_main, verdict_lines
from studies.reproductions.ensembles import MODELS, PARTICLES, _grid, _values, gain_panel, run_command
from studies.reproductions.lottery import accuracies, run_resuming
from studies.verdict import ACCURACY_EFFECT, Claim

EFFECT = ACCURACY_EFFECT  # points of accuracy
RUN_NAMES = {"IMP": "imp-j0", "SWA only (N=1)": "swa", "particles only (N=4, no SWA)": "particles",
             "SWAMP (N=4)": "swamp", "IMP on SWAMP's masks": "imp-on-swamp-masks",
             "SWAMP on IMP's masks": "swamp-on-imp-masks", "SWAMP from cycle 2": "swamp-from-c2",
             "SWAMP from cycle 4": "swamp-from-c4"}
METHODS = tuple(RUN_NAMES)
FAMILIES = (
    ("mask or weights", "IMP on SWAMP's masks", "IMP", "greater", "SWAMP's masks alone make IMP more accurate"),
    ("mask or weights", "SWAMP on IMP's masks", "IMP", "greater", "SWAMP's training alone (on IMP's masks) is more "
                                                                  "accurate than IMP"),
    ("flatness or averaging", "SWA only (N=1)", "IMP", "greater", "SWA alone is more accurate than IMP"),
    ("flatness or averaging", "particles only (N=4, no SWA)", "IMP", "greater", "averaging particles alone is "
                                                                                "more accurate than IMP"),
    ("flatness or averaging", "SWAMP (N=4)", "SWA only (N=1)", "greater", "SWAMP is more accurate than SWA alone"),
    ("flatness or averaging", "SWAMP (N=4)", "particles only (N=4, no SWA)", "greater", "SWAMP is more accurate "
                                                                                        "than particles without SWA"),
    ("SWAMP in some cycles", "SWAMP from cycle 2", "SWAMP (N=4)", "equivalent", "SWAMP from cycle 2 is as accurate "
                                                                                "as SWAMP"),
    ("SWAMP in some cycles", "SWAMP from cycle 4", "SWAMP (N=4)", "equivalent", "SWAMP from cycle 4 is as accurate "
                                                                                "as SWAMP"),
)
FIELDS = ["model", "method", "seed", "cycle", "sparsity", "test_acc", "particle_epochs"]
TYPES = {"model": str, "method": str, "seed": int, "cycle": int, "sparsity": float, "test_acc": float,
         "particle_epochs": int}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "mechanisms")
PRIORITY = ("IMP", "SWAMP (N=4)", "SWA only (N=1)", "particles only (N=4, no SWA)", "IMP on SWAMP's masks",
            "SWAMP from cycle 4", "SWAMP on IMP's masks", "SWAMP from cycle 2")  # the order the runs are trained in


def _plan(model: str, seed: int, out: Path, quick: bool, data_dir: Path) -> dict[str, tuple[list[str], Path]]:
    """method -> (command, run directory) of one model and seed."""
    epochs = MODELS[model]
    run = {m: out / f"{model}-{name}-s{seed}" for m, name in RUN_NAMES.items()}
    n = ["--particles", str(PARTICLES)]
    args = {"IMP": ("imp", []), "SWA only (N=1)": ("swamp", ["--particles", "1"]),
            "particles only (N=4, no SWA)": ("swamp", [*n, "--no-swa"]), "SWAMP (N=4)": ("swamp", n),
            "IMP on SWAMP's masks": ("transplant", ["--particles", "1", "--no-swa", "--masks-from",
                                                    str(run["SWAMP (N=4)"])]),
            "SWAMP on IMP's masks": ("transplant", [*n, "--masks-from", str(run["IMP"])]),
            "SWAMP from cycle 2": ("swamp", [*n, "--particles-from-cycle", "1" if quick else "2"]),
            "SWAMP from cycle 4": ("swamp", [*n, "--particles-from-cycle", "1" if quick else "4"])}
    return {m: (run_command(module, model, seed, epochs, run[m], quick, data_dir, *extra), run[m])
            for m, (module, extra) in args.items()}


def particle_epochs(method: str, cycle: int, epochs: int) -> int:
    """Particle-epochs of training up to and including ``cycle`` (the dense ticket's epochs not counted).

    Example:
        >>> particle_epochs("SWAMP from cycle 2", 3, 16)  # 2 cycles of one particle, 2 of four
        160
    """
    if method.startswith("SWAMP from cycle"):
        k = int(method.rsplit(" ", 1)[1])
        return epochs * sum(1 if c < k else PARTICLES for c in range(cycle + 1))
    n = PARTICLES if method in ("particles only (N=4, no SWA)", "SWAMP (N=4)", "SWAMP on IMP's masks") else 1
    return epochs * n * (cycle + 1)


def run_all(out: Path, seeds: Sequence[int], jobs: int = 1, quick: bool = False,
            data_dir: Path = Path("data")) -> list[dict[str, object]]:
    """Run (or resume) every run of ``seeds`` under ``out`` in the order of :data:`PRIORITY` (each transplant
    after the run it takes its masks from); returns the rows of ``mechanisms.csv`` (also written)."""
    plan = {(model, seed): _plan(model, seed, out, quick, data_dir) for model in MODELS for seed in seeds}
    donors = {"IMP on SWAMP's masks": "SWAMP (N=4)", "SWAMP on IMP's masks": "IMP"}
    futures: dict[tuple[str, int, str], Future[None]] = {}

    def run(key: tuple[str, int, str]) -> None:
        model, seed, method = key
        if method in donors:  # queued before it, so finished or running in another worker: no deadlock
            futures[model, seed, donors[method]].result()
        run_resuming(*plan[model, seed][method])

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for method in PRIORITY:
            for model, seed in plan:
                futures[model, seed, method] = pool.submit(run, (model, seed, method))
        for future in futures.values():
            future.result()
    rows: list[dict[str, object]] = []
    for (model, seed), runs in plan.items():
        for method in METHODS:
            for cycle, (sparsity, acc) in sorted(accuracies(runs[method][1]).items()):
                rows.append({"model": model, "method": method, "seed": seed, "cycle": cycle, "sparsity": sparsity,
                             "test_acc": round(acc, 4),
                             "particle_epochs": particle_epochs(method, cycle, 1 if quick else MODELS[model])})
    write_csv(rows, out / "mechanisms.csv")
    return rows


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown tables of docs/reproductions.md: accuracy per arm (mean +- standard error over seeds, with the
    particle-epochs each arm has trained by the last cycle), then one verdict table per comparison of
    :data:`FAMILIES` (Holm over the architectures x pruned sparsities of each; delta = :data:`EFFECT` points).

    Example:
        >>> rows = [{"model": "mlp", "method": m, "seed": s, "cycle": c, "sparsity": c / 2, "test_acc": 60.0 + s,
        ...          "particle_epochs": particle_epochs(m, c, 32)} for m in METHODS for s in range(2) for c in (0, 1)]
        >>> print(tables(rows).splitlines()[3][:60])
        | mlp | 50.0% | 60.50 ± 0.50 | 60.50 ± 0.50 | 60.50 ± 0.50 |
    """
    grid = _grid(rows)
    last = {m: max(c for mm, c, _ in grid if mm == m) for m in {g[0] for g in grid}}
    head = []
    for method in METHODS:
        costs = sorted({int(r["particle_epochs"]) for r in rows  # type: ignore[call-overload]
                        if r["method"] == method and r["cycle"] == last[str(r["model"])]})
        head.append(f"{method} ({' / '.join(str(c) for c in costs)} particle-epochs)" if costs else method)
    lines = ["| model | sparsity | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(METHODS)]
    for model, cycle, sparsity in grid:
        cells = [mean_se(list(_values(rows, model, m, cycle).values())) for m in METHODS]
        lines.append(f"| {model} | {100 * sparsity:.1f}% | " + " | ".join(cells) + " |")
    for question, a, b, direction, sentence in FAMILIES:
        family = {}
        for model, cycle, sparsity in grid:
            if cycle == 0:
                continue  # the dense cycle: no mask to transplant, and SWAMP from cycle K is SWA alone there
            va, vb = _values(rows, model, a, cycle), _values(rows, model, b, cycle)
            family[f"{model} | {100 * sparsity:.1f}%"] = [va[s] - vb[s] for s in sorted(va) if s in vb]
        lines += verdict_lines(f"**{question}: {sentence}** (A = {a}, B = {b}; claim: {direction}, delta = "
                               f"{EFFECT:g} points", family, Claim(direction, EFFECT))
    return "\n".join(lines)


SWEEP = (("SWA only (N=1)", "K = 6 (SWA only)"), ("SWAMP from cycle 4", "K = 4"),
         ("SWAMP from cycle 2", "K = 2"), ("SWAMP (N=4)", "K = 0 (SWAMP)"))


def figure(rows: Sequence[dict[str, object]], path: Path) -> None:
    """Per architecture: each arm's accuracy gain over IMP against sparsity (mean and 95% interval over seeds),
    and the SWAMP-from-cycle-K sweep's accuracy at the last two sparsities against its particle-epochs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    grid = _grid(rows)
    models = [m for m in MODELS if any(g[0] == m for g in grid)]
    fig, axes = plt.subplots(2, len(models), figsize=(5.6 * len(models), 8.4), dpi=150, squeeze=False)
    arms = [m for m in METHODS if m != "IMP" and not m.startswith("SWAMP from")]
    for col, model in enumerate(models):
        cells = [(c, s) for m, c, s in grid if m == model]
        gain_panel(axes[0][col], rows, model, arms, {m: m for m in arms}, "IMP", f"{model}: each arm's gain over IMP")
        ax = axes[1][col]
        for n, (cycle, sparsity) in enumerate(cells[-2:]):
            done = [(method, name) for method, name in SWEEP if _values(rows, model, method, cycle)]
            xs = [next(iter(_values(rows, model, m, cycle, "particle_epochs").values())) for m, _ in done]
            points = [mean_half(list(_values(rows, model, m, cycle).values())) for m, _ in done]
            ax.errorbar(xs, [p[0] for p in points], yerr=[p[1] for p in points], marker="os"[n], ms=4, capsize=2,
                        lw=1, color=f"C{n + 5}", label=f"{100 * sparsity:.1f}% sparsity")
            for x, (y, _), (_, name) in zip(xs, points, done, strict=True):
                ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            imp = list(_values(rows, model, "IMP", cycle).values())
            if imp:
                y, half = mean_half(imp)
                ax.errorbar([next(iter(_values(rows, model, "IMP", cycle, "particle_epochs").values()))], [y],
                            yerr=[half], marker="x", ms=6, capsize=2, color="black", ls="none",
                            label="IMP (at each sparsity)" if n == 0 else None)
        label_axes(ax, "particle-epochs of training up to that sparsity (dense ticket not counted)",
                   "test accuracy (%), mean and 95% interval",
                   f"{model}: SWAMP from cycle K (one SWA particle before K, four from K); x = IMP", 7)
    fig.suptitle("Why SWAMP works: mask or weights, SWA or particles, particles in some cycles (MNIST-1D)",
                 fontsize=10)
    save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "mechanisms", __doc__, common.trainer(run_all), read_csv, tables, quick=True, figure=figure,
                      runs_help="folder of the runs, shared with studies.reproductions.ensembles")


if __name__ == "__main__":
    raise SystemExit(main())
