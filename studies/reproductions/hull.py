"""Why is the particles' convex hull low-loss? Its excess loss against the quadratic prediction from the Hessian.

Let theta_1..theta_n be n particles of one SWAMP cycle, theta_bar their mean and d_i = theta_i - theta_bar. A
point of their convex hull is theta_alpha = sum_i alpha_i theta_i = theta_bar + D alpha (alpha on the simplex,
D = [d_1 .. d_n]). To second order around the centre (Taylor; the quadratic model of Izmailov et al. 2018 and
of the mode-connectivity literature),

    L(theta_alpha) - L(theta_bar) ~ g^T D alpha + 1/2 alpha^T G alpha,     g = grad L(theta_bar),  G = D^T H D,

with H the Hessian at the centre: the n products H d_i give every point's prediction at once. If the loss were
exactly quadratic and H positive semi-definite on the span of the d_i, every hull point's loss would lie below
the mean of the particles' losses, the excess over the centre growing as the squared spread
s = sqrt(mean_i ||d_i||^2). Measured here, per (architecture, seed, cycle, n): for the first n = 2, 3, 4
particles of SWAMP (N = 4) (the particles of a cycle are exchangeable, so their first n are n particles of the
same ticket and mask), the hull's excess loss at :data:`SAMPLES` Dirichlet(1) points (seeded), its quadratic
prediction, the particles' own excess and prediction, and s. The loss is the mean cross-entropy over
:data:`TRAIN_SAMPLES` training samples with the network a fixed function of its weights: BatchNorm in eval mode
with the statistics stored with the cycle's SWAMP average (recomputed for it), at every point alike.

Verdict (:func:`studies.verdict.paired_verdicts`, ``equivalent`` with delta = :data:`EFFECT` percent, Holm over
architectures x n x cycles): the quadratic model explains the loss over the hull when the share of the hull
points' loss variation it leaves unexplained, d_s = 100 (1 - R^2_s) with
R^2 = 1 - sum (measured - predicted)^2 / sum (measured - mean measured)^2 over the points of seed s, lies within
delta (the one rule's equivalence test against 0).

``python -m studies.reproductions.hull --out runs/ensembles --seeds 0-11`` measures (cached per run and cycle in
``OUT/hull``) and writes ``OUT/hull.csv``; ``--from-csv`` prints the tables.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor
from torch.func import functional_call
from torch.nn import functional as F

from core.artifacts.atomic import atomic_write_text
from core.artifacts.checkpoint import build_model, load_checkpoint
from landscape.tools.artifacts import checkpoint_data
from studies.reproductions.common import csv_pair, label_axes, median, save_png, study_main, verdict_lines
from studies.reproductions.ensembles import MODELS, PARTICLES
from studies.verdict import Claim

SIZES = (2, 3, 4)
SAMPLES = 16  # Dirichlet points per hull
TRAIN_SAMPLES = 512
CYCLES = (0, 1, 3, 5)
EFFECT = 10.0  # percent of the hull points' loss variation left unexplained
FIELDS = ["model", "seed", "cycle", "sparsity", "n", "spread", "hull_excess", "hull_predicted", "particle_excess",
          "particle_predicted", "unexplained"]
TYPES = {k: str if k == "model" else int if k in ("seed", "cycle", "n") else float for k in FIELDS}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "hull")


def quadratic_check(model: torch.nn.Module, particles: Sequence[dict[str, Tensor]], x: Tensor, y: Tensor,
                    samples: int = SAMPLES, seed: int = 0) -> dict[str, float]:
    """The hull of ``particles`` (parameter states of ``model``'s architecture) against the quadratic model at
    their mean, for the mean cross-entropy of ``model`` (eval mode, its own buffers) on ``(x, y)``.

    Args:
        model: supplies the architecture and the buffers (BatchNorm statistics) every point uses; not modified.
        particles: n >= 2 states, each with every parameter of ``model``.
        x, y: inputs and class labels.
        samples: Dirichlet(1) points of the hull.
        seed: seeds the points.

    Returns:
        ``spread`` (sqrt of the mean squared distance to the centre), ``hull_excess`` / ``hull_predicted`` (mean
        over the points of L(theta_alpha) - L(theta_bar), measured and to second order), ``particle_excess`` /
        ``particle_predicted`` (the same at the particles), ``unexplained`` (1 - R^2 of the prediction over the
        hull points: sum (measured - predicted)^2 / sum (measured - their mean)^2).

    Example (a quadratic loss: the prediction is exact):
        >>> lin = torch.nn.Linear(2, 2, bias=False)
        >>> x, y = torch.eye(2), torch.tensor([0, 1])
        >>> ps = [{"weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]])},
        ...       {"weight": torch.tensor([[1.2, 0.1], [0.0, 1.1]])}]
        >>> r = quadratic_check(lin, ps, x, y)
        >>> abs(r["hull_excess"] - r["hull_predicted"]) < 0.05 * abs(r["hull_excess"])
        True
    """
    if len(particles) < 2:
        raise ValueError("particles must hold >= 2 states")
    names = [n for n, _ in model.named_parameters()]
    buffers = {k: v for k, v in model.named_buffers()}
    was_training = model.training
    model.eval()
    try:
        def loss(params: dict[str, Tensor]) -> Tensor:
            return F.cross_entropy(functional_call(model, {**params, **buffers}, (x,)), y)

        centre = {k: torch.stack([p[k].float() for p in particles]).mean(0) for k in names}
        d = [{k: p[k].float() - centre[k] for k in names} for p in particles]
        live = {k: v.clone().requires_grad_(True) for k, v in centre.items()}
        grads = torch.autograd.grad(loss(live), [live[k] for k in names], create_graph=True)
        b = torch.tensor([sum(float((g.detach() * di[k]).sum()) for g, k in zip(grads, names, strict=True))
                          for di in d], dtype=torch.float64)
        hd = [torch.autograd.grad(grads, [live[k] for k in names], grad_outputs=[di[k] for k in names],
                                  retain_graph=True) for di in d]
        gram = torch.tensor([[sum(float((h * dj[k]).sum()) for h, k in zip(hi, names, strict=True)) for dj in d]
                             for hi in hd], dtype=torch.float64)
        with torch.no_grad():
            base = float(loss(centre))
            alphas = _dirichlet(len(particles), samples, seed)
            hull = [float(loss({k: centre[k] + sum(float(a[i]) * d[i][k] for i in range(len(d))) for k in names}))
                    - base for a in alphas]
            own = [float(loss({k: p[k].float() for k in names})) - base for p in particles]
        predicted = [float(b @ a + 0.5 * a @ gram @ a) for a in alphas]
        own_predicted = [float(b[i] + 0.5 * gram[i, i]) for i in range(len(d))]
        spread = math.sqrt(sum(float(sum((di[k] ** 2).sum() for k in names)) for di in d) / len(d))
    finally:
        model.train(was_training)
    m = _mean(hull)
    unexplained = sum((h - q) ** 2 for h, q in zip(hull, predicted, strict=True))
    total = sum((h - m) ** 2 for h in hull)
    return {"spread": spread, "hull_excess": m, "hull_predicted": _mean(predicted),
            "particle_excess": _mean(own), "particle_predicted": _mean(own_predicted),
            "unexplained": unexplained / total if total > 0 else float("nan")}


def _dirichlet(n: int, samples: int, seed: int) -> Tensor:
    """``samples`` Dirichlet(1, ..., 1) points: normalised exponentials of a seeded generator."""
    e = -torch.log(torch.rand(samples, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return e / e.sum(1, keepdim=True)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def measure(run: Path, cycle: int, cache: Path, data_dir: Path) -> list[dict[str, float]]:
    """:func:`quadratic_check` of the first n particles (n in :data:`SIZES`) of ``run``'s cycle (cached)."""
    path = cache / f"{run.name}-c{cycle:02d}.json"
    if path.is_file():
        return json.loads(path.read_text())
    cycle_dir = run / f"cycle_{cycle:02d}"
    average = load_checkpoint(cycle_dir / "average.safetensors")
    model = build_model(average)
    data = checkpoint_data(average, "cpu", str(data_dir))
    x, y = next(iter(data.eval_batches("train", TRAIN_SAMPLES)))
    particles = [load_checkpoint(cycle_dir / f"particle_{p:02d}.safetensors").state for p in range(PARTICLES)]
    values = [{"n": n, "sparsity": average.density and 1.0 - average.density,
               **quadratic_check(model, particles[:n], x, y, seed=cycle)} for n in SIZES]
    atomic_write_text(path, json.dumps(values))
    return values


def measure_all(out: Path, seeds: Sequence[int], jobs: int = 1, data_dir: Path = Path("data"),
                cycles: Sequence[int] = CYCLES) -> list[dict[str, object]]:
    """Measure (or read) the hulls of SWAMP (N = 4) for ``seeds``; returns the rows of ``hull.csv`` (also
    written). Cycles not finished are left out."""
    cache = out / "hull"
    cache.mkdir(parents=True, exist_ok=True)
    tasks = [(model, seed, cycle) for model in MODELS for seed in seeds for cycle in cycles
             if (out / f"{model}-swamp-s{seed}" / f"cycle_{cycle:02d}" / "metrics.json").is_file()]

    def one(task: tuple[str, int, int]) -> list[dict[str, object]]:
        model, seed, cycle = task
        return [{"model": model, "seed": seed, "cycle": cycle, **{k: round(float(v), 8) for k, v in r.items()}}
                for r in measure(out / f"{model}-swamp-s{seed}", cycle, cache, data_dir)]

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = [row for rows in pool.map(one, tasks) for row in rows]
    for row in rows:
        row["n"] = int(row["n"])  # type: ignore[call-overload]
    write_csv(rows, out / "hull.csv")
    return rows


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown tables: per architecture, n and sparsity the median spread, hull excess, prediction and
    particle excess over seeds, then the verdict table (measured against predicted hull excess).

    Example:
        >>> rows = [{"model": "mlp", "seed": s, "cycle": 1, "sparsity": 0.5, "n": 2, "spread": 1.0,
        ...          "hull_excess": 0.010 + 0.001 * s, "hull_predicted": 0.010, "particle_excess": 0.03,
        ...          "particle_predicted": 0.03, "unexplained": 0.02} for s in range(6)]
        >>> print(tables(rows).splitlines()[2])
        | mlp | 2 | 50.0% | 1 | 0.0125 | 0.01 | 0.03 | 0.03 | 6 |
    """
    cells = sorted({(str(r["model"]), int(r["n"]), int(r["cycle"]), float(r["sparsity"])) for r in rows},  # type: ignore
                   key=lambda c: (list(MODELS).index(c[0]), c[1], c[2]))
    lines = ["| model | n | sparsity | spread s | hull excess | quadratic prediction | particles' excess | "
             "their prediction | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    family: dict[str, list[float]] = {}
    for model, n, cycle, sparsity in cells:
        sel = sorted((r for r in rows if r["model"] == model and r["n"] == n and r["cycle"] == cycle),
                     key=lambda r: int(r["seed"]))  # type: ignore[call-overload]
        med = {k: median(sorted(float(r[k]) for r in sel)) for k in FIELDS[5:]}  # type: ignore[arg-type]
        lines.append(f"| {model} | {n} | {100 * sparsity:.1f}% | {med['spread']:.3g} | {med['hull_excess']:.3g} | "
                     f"{med['hull_predicted']:.3g} | {med['particle_excess']:.3g} | {med['particle_predicted']:.3g} "
                     f"| {len(sel)} |")
        family[f"{model} | {n} | {100 * sparsity:.1f}%"] = [100 * float(r["unexplained"]) for r in sel]  # type: ignore
    lines += verdict_lines("**The quadratic model at the centre explains the loss over the hull** (d = 100 (1 - R^2) "
                           f"in %, the share of the hull points' loss variation left unexplained; claim: within "
                           f"{EFFECT:g}% of 0", family, Claim("equivalent", EFFECT), columns="model | n | sparsity",
                           digits=1, unit="%")
    return "\n".join(lines)



def figure(rows: Sequence[dict[str, object]], path: Path) -> None:
    """Per architecture: the hull's measured excess loss against its quadratic prediction (one point per seed,
    cycle and n; the identity line is a perfect prediction), and the unexplained share against the spread."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    models = [m for m in MODELS if any(r["model"] == m for r in rows)]
    fig, axes = plt.subplots(2, len(models), figsize=(5.4 * len(models), 8.6), dpi=150, squeeze=False)
    for col, model in enumerate(models):
        sel = [r for r in rows if r["model"] == model]
        sparsities = sorted({float(r["sparsity"]) for r in sel})  # type: ignore[arg-type]
        for i, sp in enumerate(sparsities):
            for n in SIZES:
                pts = [r for r in sel if float(r["sparsity"]) == sp and r["n"] == n]  # type: ignore[arg-type]
                label = f"{100 * sp:.1f}% sparsity" if n == SIZES[-1] else None
                kw = {"marker": "^so"[SIZES.index(n)], "s": 12, "color": f"C{i}", "alpha": 0.7, "label": label}
                axes[0][col].scatter([float(r["hull_predicted"]) for r in pts],  # type: ignore[arg-type]
                                     [float(r["hull_excess"]) for r in pts], **kw)  # type: ignore[arg-type]
                axes[1][col].scatter([float(r["spread"]) for r in pts],  # type: ignore[arg-type]
                                     [100 * float(r["unexplained"]) for r in pts], **kw)  # type: ignore[arg-type]
        values = [float(r[k]) for r in sel for k in ("hull_predicted", "hull_excess")]  # type: ignore[arg-type]
        low, high = min(values), max(values)
        ax = axes[0][col]
        ax.plot([low, high], [low, high], color="black", lw=0.8, label="measured = predicted")
        ax.set_xscale("symlog", linthresh=1e-4)
        ax.set_yscale("symlog", linthresh=1e-4)
        label_axes(ax, "predicted mean excess loss over the centre (nats)",
                   "measured mean excess loss over the centre (nats)",
                   f"{model}: hull of n = 2 (^), 3 (s), 4 (o) SWAMP particles, 12 seeds")
        ax = axes[1][col]
        ax.axhline(EFFECT, color="black", lw=0.8, ls="--", label=f"{EFFECT:g}% (the claim's margin)")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0)
        label_axes(ax, "particle spread s (root mean squared distance to the centre)",
                   "unexplained share, 100 (1 - R^2) (%)", f"{model}: how well the quadratic model fits, against the "
                   "spread")
    fig.suptitle("Is the particles' hull low-loss because the loss is quadratic there? (MNIST-1D, SWAMP N = 4)",
                 fontsize=10)
    save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "hull", __doc__, lambda a: measure_all(a.out, a.seeds, a.jobs, a.data_dir), read_csv,
                      tables, figure=figure, runs_help="folder of the SWAMP runs of studies.reproductions.ensembles")


if __name__ == "__main__":
    raise SystemExit(main())
