"""The paper's headline claim against its real baselines: SWAMP beside ensembles of independent IMP solutions.

Choi et al. (2024), abstract: SWAMP's single sparse network performs comparably to an ensemble of two IMP
solutions. This study puts that sentence, and SWAMP's gain over IMP, beside every baseline of equal inference or
equal training cost, on MNIST-1D with two architectures trained to their capacity (cnn1d with BatchNorm, 16
epochs per cycle, 96-97% dense; the MLP, 32 epochs per cycle, 62-64% dense):

=================================  ==========================  =========================  ================
arm                                what it is                  training cost (IMP = 1)     inference cost
=================================  ==========================  =========================  ================
``IMP``                            IMP, seed s                 1                          1
``IMP x4 epochs``                  IMP with 4 times the         4 (equal to SWAMP)         1
                                   epochs per cycle
``IMP ensemble of 2``              IMP of seeds s, s + 1000    2                          2
``IMP ensemble of 4``              IMP of seeds s + 1000 j,     4 (equal to SWAMP)         4
                                   j = 0..3
``SWAMP (N=4)``                    SWAMP, seed s               4                          1
``SWAMP particles' ensemble``      SWAMP's 4 particles,         4                          4
                                   probabilities averaged
=================================  ==========================  =========================  ================

Every run: ``python -m training.imp`` / ``training.swamp`` with the model's preset (SGD, LR 0.1 cosine, momentum
0.9, weight decay 5e-4, batches of 128, ticket after 8 dense epochs, SWA over the last 25% at LR 0.05 for SWAMP),
half of the remaining weights pruned per cycle by global magnitude, 6 cycles (sparsity 0, 50, 75, 87.5, 93.75,
96.9%). IMP of seed s and SWAMP of seed s share the dense ticket, so their differences are paired; the other
ensemble members are independent IMP runs (their own ticket, mask and data order), as ensembles of IMP solutions
are. An ensemble averages its members' class probabilities (:func:`core.evaluate.ensemble_log_probs`) on the
1,000 test sequences.

Verdicts (:func:`studies.verdict.paired_verdicts`, the project's one rule: paired t interval per comparison,
Holm over each family of 2 architectures x 6 sparsities, delta = 0.5 points of accuracy, fixed before the runs):
SWAMP - IMP ``greater``; SWAMP - IMP x4 epochs ``greater``; SWAMP - IMP ensemble of 2 ``equivalent`` (the
abstract's "comparably"); SWAMP - IMP ensemble of 4 ``equivalent``; SWAMP - its particles' ensemble
``equivalent`` (the weight average keeps the ensemble's accuracy at 1/N of its inference cost).

``python -m studies.reproductions.ensembles --out runs/ensembles --seeds 0-11 --jobs 2`` runs (or resumes) every
run and writes ``OUT/ensembles.csv`` (model, method, seed, cycle, sparsity, test accuracy), prints the tables of
docs/reproductions.md and draws ``OUT/ensembles.png``; ``--quick`` runs a tiny version (2 cycles of 1 epoch) that
checks the plumbing. :func:`tables` turns the committed CSV (docs/data/ensembles-mnist1d.csv) into the docs'
tables without running anything (``--from-csv``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from core.artifacts.checkpoint import build_model, load_checkpoint
from core.evaluate import ensemble_log_probs, predict, score
from landscape.tools.artifacts import checkpoint_data
from studies.reproductions import common
from studies.reproductions.common import (
    SEED_LIMIT,
    csv_pair,
    label_axes,
    mean_half,
    mean_se,
    save_png,
    seed_values,
    study_main,
)
from studies.reproductions.lottery import accuracies, run_all_resuming
from studies.verdict import ACCURACY_EFFECT, Claim, paired_verdicts

MODELS = {"cnn1d": 16, "mlp": 32}  # model -> epochs per cycle (trained to capacity)
PARTICLES = 4
MEMBER_OFFSET = SEED_LIMIT  # seed of ensemble member j: seed + 1000 j
CYCLES, RATIO = 6, 0.5
EFFECT = ACCURACY_EFFECT  # points of accuracy: the smallest effect the claims are taken to mean
METHODS = ("IMP", "IMP x4 epochs", "IMP ensemble of 2", "IMP ensemble of 4", "SWAMP (N=4)",
           "SWAMP particles' ensemble")
COSTS = {"IMP": (1, 1), "IMP x4 epochs": (4, 1), "IMP ensemble of 2": (2, 2), "IMP ensemble of 4": (4, 4),
         "SWAMP (N=4)": (4, 1), "SWAMP particles' ensemble": (4, 4)}  # (training, inference) cost, IMP = 1
FAMILIES = (("IMP", "greater", "SWAMP is more accurate than IMP"),
            ("IMP x4 epochs", "greater", "SWAMP is more accurate than IMP at equal training compute"),
            ("IMP ensemble of 2", "equivalent", "SWAMP performs comparably to an ensemble of two IMP solutions"),
            ("IMP ensemble of 4", "equivalent", "SWAMP performs comparably to the IMP ensemble of equal training "
                                                "cost"),
            ("SWAMP particles' ensemble", "equivalent", "SWAMP's one averaged network is as accurate as the ensemble "
                                                        "of its particles"))
FIELDS = ["model", "method", "seed", "cycle", "sparsity", "test_acc"]
TYPES = {"model": str, "method": str, "seed": int, "cycle": int, "sparsity": float, "test_acc": float}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "ensembles")


def run_command(module: str, model: str, seed: int, epochs: int, out: Path, quick: bool, data_dir: Path,
                *extra: str) -> list[str]:
    """``python -m training.MODULE`` with the study's settings.

    Example:
        >>> " ".join(run_command("imp", "mlp", 3, 32, Path("r"), False, Path("data"))[3:9])
        '--model mlp --seed 3 --epochs 32'
    """
    cycles = 2 if quick else CYCLES
    return [sys.executable, "-m", f"training.{module}", "--model", model, "--seed", str(seed), "--epochs",
            str(1 if quick else epochs), "--cycles", str(cycles), "--prune-ratio", str(RATIO),
            *(["--rewind-epochs", "1"] if quick else []), "--no-progress", "--device", "cpu",
            "--data-dir", str(data_dir), "--out", str(out), *extra]


def _runs(model: str, seed: int, out: Path, quick: bool, data_dir: Path) -> dict[str, tuple[list[str], Path]]:
    epochs = MODELS[model]
    runs = {f"imp-j{j}": ("imp", seed + MEMBER_OFFSET * j, epochs) for j in range(PARTICLES)}
    runs["imp4x"] = ("imp", seed, PARTICLES * epochs)
    runs["swamp"] = ("swamp", seed, epochs)
    return {name: (run_command(module, model, s, e, out / f"{model}-{name}-s{seed}", quick, data_dir,
                               *(["--particles", str(PARTICLES)] if module == "swamp" else [])),
                   out / f"{model}-{name}-s{seed}") for name, (module, s, e) in runs.items()}


@torch.no_grad()
def _test_log_probs(run: Path, cycle: int, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and labels of a run's cycle solution on the test split."""
    ckpt = load_checkpoint(run / f"cycle_{cycle:02d}" / "average.safetensors")
    data = checkpoint_data(ckpt, "cpu", data_dir)
    return predict(build_model(ckpt), data.eval_batches("test", 1000))


def _ensemble_accuracy(members: Sequence[Path], cycle: int, data_dir: Path) -> float:
    """Test accuracy (%) of the mean of the class probabilities of ``members``' cycle solutions."""
    outputs = [_test_log_probs(run, cycle, data_dir) for run in members]
    return _accuracy([lp for lp, _ in outputs], outputs[0][1])


def _accuracy(log_probs: Sequence[torch.Tensor], labels: torch.Tensor) -> float:
    return 100.0 * score(ensemble_log_probs(list(log_probs)), labels).acc


def run_all(out: Path, seeds: Sequence[int], jobs: int = 1, quick: bool = False,
            data_dir: Path = Path("data")) -> list[dict[str, object]]:
    """Run (or resume) every run of ``seeds`` under ``out``; returns the rows of ``ensembles.csv`` (also written)."""
    plan = {(model, seed): _runs(model, seed, out, quick, data_dir) for model in MODELS for seed in seeds}
    run_all_resuming([task for runs in plan.values() for task in runs.values()], jobs)
    rows: list[dict[str, object]] = []
    for (model, seed), runs in plan.items():
        imp, imp4x, swamp = (accuracies(runs[name][1]) for name in ("imp-j0", "imp4x", "swamp"))
        particles = accuracies(runs["swamp"][1], "ensemble_test_acc")
        members = [runs[f"imp-j{j}"][1] for j in range(PARTICLES)]
        for cycle, (sparsity, _) in sorted(imp.items()):
            outputs = [_test_log_probs(run, cycle, data_dir) for run in members]  # each member predicted once
            log_probs, labels = [lp for lp, _ in outputs], outputs[0][1]
            values = {"IMP": imp[cycle][1], "IMP x4 epochs": imp4x[cycle][1],
                      "IMP ensemble of 2": _accuracy(log_probs[:2], labels),
                      "IMP ensemble of 4": _accuracy(log_probs, labels),
                      "SWAMP (N=4)": swamp[cycle][1], "SWAMP particles' ensemble": particles[cycle][1]}
            rows += [{"model": model, "method": method, "seed": seed, "cycle": cycle, "sparsity": sparsity,
                      "test_acc": round(values[method], 4)} for method in METHODS]
    write_csv(rows, out / "ensembles.csv")
    return rows


def _values(rows: Sequence[dict[str, object]], model: str, method: str, cycle: int, key: str = "test_acc"
            ) -> dict[int, float]:
    """seed -> the ``key`` column of the rows of ``model``, ``method`` and ``cycle``."""
    return seed_values(rows, key, model=model, method=method, cycle=cycle)


def difference(rows: Sequence[dict[str, object]], model: str, a: str, b: str, cycle: int) -> list[float]:
    """A − B of the ``test_acc`` column (points) per seed at ``cycle``, over the seeds both methods have.

    Example:
        >>> rows = [{"model": "mlp", "method": m, "seed": 0, "cycle": 1, "test_acc": x} for m, x in (("a", 3.0),
        ...                                                                                        ("b", 1.0))]
        >>> difference(rows, "mlp", "a", "b", 1)
        [2.0]
    """
    va, vb = (_values(rows, model, m, cycle) for m in (a, b))
    return [va[s] - vb[s] for s in sorted(va) if s in vb]


def accuracy_rows(runs: Mapping[tuple[str, str, int], Path]) -> list[dict[str, object]]:
    """The rows (model, method, seed, cycle, sparsity, test_acc) of the finished runs ``(model, method, seed) ->
    run folder``."""
    rows: list[dict[str, object]] = []
    for (model, method, seed), path in runs.items():
        for cycle, (sparsity, acc) in sorted(accuracies(path).items()):
            rows.append({"model": model, "method": method, "seed": seed, "cycle": cycle, "sparsity": sparsity,
                         "test_acc": round(acc, 4)})
    return rows


def _grid(rows: Sequence[dict[str, object]]) -> list[tuple[str, int, float]]:
    """(model, cycle, sparsity) of the rows, in the study's order."""
    seen = {(str(r["model"]), int(r["cycle"])): float(r["sparsity"]) for r in rows}  # type: ignore[call-overload]
    return [(m, c, seen[m, c]) for m in MODELS for c in sorted(c for mm, c in seen if mm == m)]


def gain_panel(ax: Any, rows: Sequence[dict[str, object]], model: str, methods: Sequence[str],
               labels: Mapping[str, str], imp_label: str, title: str) -> None:
    """Draw on ``ax`` each of ``methods``' test-accuracy gain over IMP (same seed) against sparsity: the mean and
    its 95% interval over the seeds, one marker per method, IMP as the zero line."""
    cells = [(c, s) for m, c, s in _grid(rows) if m == model]
    for n, method in enumerate(methods):
        points = [mean_half([a[s] - b[s] for s in sorted(a) if s in b])
                  for a, b in ((_values(rows, model, method, c), _values(rows, model, "IMP", c)) for c, _ in cells)]
        x = [100 * s + (n - 2) * 0.35 for _, s in cells]
        ax.errorbar(x, [p[0] for p in points], yerr=[p[1] for p in points], marker="os^vDP"[n % 6], ms=4, capsize=2,
                    lw=1, color=f"C{n}", label=labels[method])
    ax.axhline(0, color="black", lw=0.8, label=imp_label)
    seeds = len(_values(rows, model, "IMP", cells[0][0]))
    label_axes(ax, "sparsity (% of weights pruned)", "test accuracy minus IMP's, same seed (points)",
               f"{title}, mean and 95% interval of {seeds} seeds")


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown tables of docs/reproductions.md: accuracy per arm (mean ± standard error over seeds), then one
    verdict table per claim (:data:`FAMILIES`, rule :func:`studies.verdict.paired_verdicts`, delta =
    :data:`EFFECT` points).

    Example:
        >>> rows = [{"model": "mlp", "method": m, "seed": s, "cycle": 0, "sparsity": 0.0, "test_acc": 60.0 + s}
        ...         for m in METHODS for s in range(2)]
        >>> print(tables(rows).splitlines()[2])
        | mlp | 0.0% | 60.50 ± 0.50 | 60.50 ± 0.50 | 60.50 ± 0.50 | 60.50 ± 0.50 | 60.50 ± 0.50 | 60.50 ± 0.50 |
    """
    grid = _grid(rows)
    lines = ["| model | sparsity | " + " | ".join(f"{m} ({COSTS[m][0]}x train, {COSTS[m][1]}x infer)"
                                                 for m in METHODS) + " |",
             "|---|---|" + "---|" * len(METHODS)]
    for model, cycle, sparsity in grid:
        cells = [mean_se(list(_values(rows, model, m, cycle).values())) for m in METHODS]
        lines.append(f"| {model} | {100 * sparsity:.1f}% | " + " | ".join(cells) + " |")
    for baseline, direction, sentence in FAMILIES:
        family, labels = {}, {}
        for model, cycle, sparsity in grid:
            a, b = _values(rows, model, "SWAMP (N=4)", cycle), _values(rows, model, baseline, cycle)
            label = f"{model} {100 * sparsity:.1f}%"
            family[label] = [a[s] - b[s] for s in sorted(a) if s in b]
            labels[label] = (model, sparsity)
        verdicts = paired_verdicts(family, Claim(direction, EFFECT))
        lines += ["", f"**\"{sentence}\"** (SWAMP (N=4) − {baseline}, points; claim: {direction}, δ = {EFFECT}; "
                      f"Holm over {sum(v.p_holm == v.p_holm for v in verdicts)} comparisons)", "",
                  "| model | sparsity | mean | simultaneous interval | wins/ties/losses | Holm p | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for v in verdicts:
            model, sparsity = labels[v.label]
            interval = "n/a" if math.isnan(v.low) else f"[{v.low:+.2f}, {v.high:+.2f}] ({100 * v.level:.1f}%)"
            holm_p = "n/a" if math.isnan(v.p_holm) else f"{v.p_holm:.2g}"
            lines.append(f"| {model} | {100 * sparsity:.1f}% | {v.mean:+.2f} | {interval} | {v.record()} | {holm_p} "
                         f"| **{v.outcome}** |")
    return "\n".join(lines)


def figure(rows: Sequence[dict[str, object]], path: Path) -> None:
    """Each arm's accuracy minus IMP's (same seed), mean and 95% t interval over seeds, against sparsity, one panel
    per architecture; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = _grid(rows)
    models = [m for m in MODELS if any(g[0] == m for g in grid)]
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), dpi=150, squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        gain_panel(ax, rows, model, METHODS[1:], {m: f"{m} ({COSTS[m][0]}x train, {COSTS[m][1]}x inference)"
                                                  for m in METHODS}, "IMP (1x train, 1x inference)",
                   f"{model}: gain over IMP")
    fig.suptitle("SWAMP against ensembles of IMP solutions and IMP with 4x the epochs (MNIST-1D)", fontsize=10)
    save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "ensembles", __doc__, common.trainer(run_all), read_csv, tables, quick=True, figure=figure)


if __name__ == "__main__":
    raise SystemExit(main())
