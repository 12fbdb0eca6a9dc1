"""Hessian trace, time to a given accuracy: ``landscape`` against PyHessian's Hutchinson estimate.

For each target relative standard error (default 5% and 2%), the wall-clock seconds until each tool's
estimate first has stderr / |estimate| <= target, on the same model and the same ready list of
batches, with the model in eval mode for both:

- PyHessian (Yao et al. 2020) draws one Rademacher probe at a time (``hessian.trace(maxIter=1)``:
  forward, gradient graph and double backward per batch) and is stopped at the first probe, from
  ``MIN_TERMS`` on, where its terms' standard error reaches the target: it gets exactly as many probes
  as it needs. A run still short of the smallest target after ``--max-seconds`` is stopped and its time
  to that target projected from its own numbers (seconds per probe so far times the probes its terms'
  spread needs); such cells are marked ``*``.
- ours: :func:`landscape.curvature.hessian_trace` with ``target_rse`` (a fresh call per target, so its
  time includes building the operator: copying the model and folding BatchNorm), for each of
  ``--methods``.

Every repeat runs PyHessian and then ours with the same seed; repeats alternate, and the table gives
the median over repeats (min-max in brackets) and the ratio of medians. Two rows:

- ``cnn1d``: the toolkit's MNIST-1D ``cnn1d`` after 300 Adam steps (as ``benchmarks.hessian_vs_pyhessian``)
  on the first ``--samples`` MNIST-1D training samples;
- ``resnet20``: the toolkit's CIFAR ``resnet20`` trained for ``--resnet-steps`` SGD steps on small (16x16)
  synthetic images that it can learn (a smooth random template per class, random amplitude, shift and
  noise: a Hessian with the outliers of a trained network, unlike random weights on random images);
- ``resnet20-init`` (not run by default): random weights on random images and labels, whose Hessian
  has no outliers for a sketch to remove: the case where Hutch++ gains least.

From the repository root (one torch thread by default: the machine may be shared):
``python -m benchmarks.hessian_time_to_accuracy [--models cnn1d resnet20 resnet20-init] [--targets 0.05 0.02]
[--methods hutchpp hutchinson] [--repeats 3] [--max-seconds 120]``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmarks.harness import machine
from benchmarks.hessian_vs_pyhessian import trained_cnn
from core.data import load_mnist1d, mnist1d_spec
from core.models import build_model, model_spec
from landscape.curvature import hessian_trace

MIN_TERMS = 8  # the first standard error either tool may stop on (ours: one block of 8 residual probes)


@dataclass(frozen=True)
class Reached:
    """Seconds (and products) until the standard error first reached a target; ``projected`` when the run
    was stopped before and the time extrapolated."""

    seconds: float
    products: int
    estimate: float
    stderr: float
    projected: bool = False


def pyhessian_until(model: nn.Module, batches: list, targets: list[float], seed: int, max_seconds: float,
                    max_probes: int) -> dict[float, Reached]:
    """PyHessian's Hutchinson estimate, one probe at a time, until every target is reached (or the caps)."""
    from pyhessian import hessian

    start = time.perf_counter()
    net = copy.deepcopy(model).eval()
    terms: list[float] = []
    reached: dict[float, Reached] = {}
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PyHessian's backward(create_graph=True)
        torch.manual_seed(seed)
        cuda = next(net.parameters()).is_cuda  # PyHessian moves probes and batches to "cuda" or "cpu"
        engine = hessian(net, nn.CrossEntropyLoss(), cuda=cuda, dataloader=batches)
        setup = time.perf_counter() - start
        while len(reached) < len(targets) and len(terms) < max_probes:
            terms += [float(t) for t in engine.trace(maxIter=1, tol=-math.inf)]
            elapsed = time.perf_counter() - start
            if len(terms) >= MIN_TERMS:
                mean, se = float(np.mean(terms)), float(np.std(terms, ddof=1) / math.sqrt(len(terms)))
                for t in targets:
                    if t not in reached and se <= t * abs(mean):
                        reached[t] = Reached(elapsed, len(terms), mean, se)
            if elapsed > max_seconds and len(terms) >= 2 * MIN_TERMS:
                break
    per_probe = (elapsed - setup) / len(terms)
    mean, sd = float(np.mean(terms)), float(np.std(terms, ddof=1))
    for t in targets:
        if t not in reached:
            needed = math.ceil((sd / (t * abs(mean))) ** 2)
            reached[t] = Reached(setup + needed * per_probe, needed, mean, sd / math.sqrt(needed), projected=True)
    return reached


def ours_until(model: nn.Module, batches: list, target: float, method: str, seed: int, max_probes: int) -> Reached:
    """:func:`hessian_trace` with ``target_rse``, timed from the call (operator construction included)."""
    start = time.perf_counter()
    est = hessian_trace(model, batches, method=method, probes=max_probes, target_rse=target, seed=seed)
    return Reached(time.perf_counter() - start, est.matvecs, est.estimate, est.stderr)


def synthetic_images(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` learnable 3 x size x size images of 10 classes: a smooth random template per class (the same for
    every seed), times a random amplitude, rolled by up to 2 pixels, plus unit Gaussian noise."""
    base = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(1234))
    templates = nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = (0.5 + torch.rand(n, 1, 1, 1, generator=g)) * templates[y] + torch.randn(n, 3, size, size, generator=g)
    shifts = torch.randint(-2, 3, (n, 2), generator=g).tolist()
    return torch.stack([torch.roll(xi, tuple(s), (1, 2)) for xi, s in zip(x, shifts, strict=True)]), y


def trained_resnet20(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> nn.Module:
    """``resnet20`` after ``steps`` SGD steps (batch 64, momentum 0.9, weight decay 5e-4), in eval mode."""
    torch.manual_seed(seed)
    model = build_model(model_spec("resnet20", 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def cnn1d_problem(args: argparse.Namespace) -> tuple[str, nn.Module, list]:
    data = load_mnist1d(mnist1d_spec(args.data_dir))
    model = trained_cnn(data.x_train, data.y_train, 300, args.seed)
    x, y = data.x_train[: args.samples], data.y_train[: args.samples]
    size = args.batch_size
    return "cnn1d (MNIST-1D, 300 Adam steps)", model, [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


def resnet20_problem(args: argparse.Namespace) -> tuple[str, nn.Module, list]:
    x, y = synthetic_images(2048, 16, args.seed)
    model = trained_resnet20(x, y, args.resnet_steps, args.seed)
    x, y, size = x[: args.resnet_samples], y[: args.resnet_samples], args.resnet_batch_size
    label = f"resnet20 (16x16 synthetic images, {args.resnet_steps} SGD steps)"
    return label, model, [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


def resnet20_init_problem(args: argparse.Namespace) -> tuple[str, nn.Module, list]:
    """The same sizes with random weights on random images and labels: a Hessian without outliers."""
    torch.manual_seed(args.seed)
    model = build_model(model_spec("resnet20", 10)).eval()
    g = torch.Generator().manual_seed(args.seed)
    n, size = args.resnet_samples, args.resnet_batch_size
    x, y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)
    return "resnet20 (random weights, random 16x16 images)", model, [(x[i:i + size], y[i:i + size])
                                                                     for i in range(0, n, size)]


PROBLEMS = {"cnn1d": cnn1d_problem, "resnet20": resnet20_problem, "resnet20-init": resnet20_init_problem}


def _cell(values: list[Reached]) -> str:
    secs = [v.seconds for v in values]
    mark = "*" if any(v.projected for v in values) else ""
    products = statistics.median(v.products for v in values)
    return f"{statistics.median(secs):.2f}{mark} [{min(secs):.2f}-{max(secs):.2f}] ({products:.0f})"


def run_row(name: str, args: argparse.Namespace) -> None:
    label, model, batches = PROBLEMS[name](args)
    params = sum(p.numel() for p in model.parameters())
    samples = sum(len(y) for _, y in batches)
    hessian_trace(model, batches[:1], method="hutchpp", probes=3)  # warm-up of both code paths
    pyhessian_until(model, batches[:1], [1.0], 0, 0.0, 2 * MIN_TERMS)
    ref: dict[float, list[Reached]] = {t: [] for t in args.targets}
    ours: dict[tuple[str, float], list[Reached]] = {(m, t): [] for m in args.methods for t in args.targets}
    for seed in range(args.repeats):  # alternating: PyHessian, then ours, with the same seed
        for t, r in pyhessian_until(model, batches, args.targets, seed, args.max_seconds, args.max_probes).items():
            ref[t].append(r)
        for method in args.methods:
            for t in args.targets:
                ours[(method, t)].append(ours_until(model, batches, t, method, seed, args.max_probes))
    print(f"\n{label}: {params:,} parameters, {samples} samples in {len(batches)} batches, "
          f"{torch.get_num_threads()} torch threads, {args.repeats} alternating repeats")
    print("seconds to the target: median [min-max] (products: PyHessian probes, ours Hessian-vector products); "
          "* = PyHessian stopped at --max-seconds, time projected")
    header = ["target RSE", "PyHessian"] + [f"ours {m}" for m in args.methods] + \
        [f"ratio {m}" for m in args.methods]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for t in args.targets:
        base = statistics.median(r.seconds for r in ref[t])
        cells = [_cell(ref[t])] + [_cell(ours[(m, t)]) for m in args.methods]
        ratios = [f"**{statistics.median(r.seconds for r in ours[(m, t)]) / base:.3f}**" for m in args.methods]
        print(f"| {100 * t:g}% | " + " | ".join(cells + ratios) + " |")
    for t in args.targets:  # the estimates agree within their standard errors
        r, o = ref[t][0], ours[(args.methods[0], t)][0]
        gap = abs(r.estimate - o.estimate) / math.hypot(r.stderr, o.stderr)
        print(f"  seed 0, target {100 * t:g}%: PyHessian {r.estimate:.5g} +- {r.stderr:.3g}, ours ({args.methods[0]}) "
              f"{o.estimate:.5g} +- {o.stderr:.3g}: {gap:.2f} combined standard errors apart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(PROBLEMS), default=["cnn1d", "resnet20"])
    parser.add_argument("--targets", nargs="+", type=float, default=[0.05, 0.02])
    parser.add_argument("--methods", nargs="+", choices=["hutchpp", "hutchinson"], default=["hutchpp"])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--resnet-samples", type=int, default=128)
    parser.add_argument("--resnet-batch-size", type=int, default=64)
    parser.add_argument("--resnet-steps", type=int, default=200)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seed", type=int, default=0, help="seed of the models' training")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="cap on one PyHessian run (then projected)")
    parser.add_argument("--max-probes", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.targets = sorted(args.targets, reverse=True)
    print(machine())
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name in args.models:
        run_row(name, args)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
