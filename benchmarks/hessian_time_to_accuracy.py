"""Hessian trace, time to a given accuracy: ``landscape`` against PyHessian's Hutchinson and curvlinops' Hutch++.

For each target relative standard error (default 5% and 2%), on the same model and the same ready list of
batches, the model in eval mode for all, each tool gets the budget that target is due:

- PyHessian (Yao et al. 2020, ``hessian.trace``: one Rademacher probe per iteration, forward, gradient graph
  and double backward per batch) runs exactly the number of probes that Hutchinson's standard error
  sd / sqrt(K) says reaches the target, ``K = ceil((sd / (target |tr|))^2)`` (at least ``MIN_TERMS``), with
  sd and tr from an untimed pilot of ``--pilot-probes`` Hutchinson probes: no noisy stopping rule, which
  on a short run stops late as often as early. When K probes would take longer than ``--max-seconds``
  (from an untimed pilot's seconds per probe), it runs the probes that fit and its seconds are scaled by
  K / probes run (cells marked ``*``).
- ours: :func:`landscape.curvature.hessian_trace` with ``target_rse`` (its own adaptive stop; a fresh call,
  so its time includes building the operator: copying the model and folding BatchNorm), for each of
  ``--methods``.
- curvlinops (Dangel et al.), when installed: ``hutchpp_trace(HessianLinearOperator(...), M)`` (Meyer et al.
  2021), ``M`` = the Hessian-vector products ours spent on that target in an untimed pilot, rounded up to a
  multiple of 3: the same budget (it has no standard error to stop on); its relative spread over the rounds'
  seeds is printed next to ours. Operator construction is timed, with its determinism check off.

All sides run in :func:`benchmarks.harness.paired` rounds (order rotated, one warm-up round discarded), with
seed r in round r for every tool; the table gives median seconds and the median (min-max) of the per-round
ratios to PyHessian. Rows:

- ``cnn1d``: the SWAMP average of the toolkit's MNIST-1D ``cnn1d`` (:func:`benchmarks.harness.swamp_average`,
  a cached toolkit run) on the first ``--samples`` MNIST-1D training samples;
- ``resnet20``: the toolkit's CIFAR ``resnet20`` trained for ``--resnet-steps`` SGD steps on small (16x16)
  synthetic images that it can learn (a smooth random template per class, random amplitude, shift and
  noise: a Hessian with the outliers of a trained network, unlike random weights on random images);
- ``resnet20-init`` (not run by default): random weights on random images and labels, whose Hessian
  has no outliers for a sketch to remove: the case where Hutch++ gains least.

From the repository root (one torch thread by default: the machine may be shared):
``python -m benchmarks.hessian_time_to_accuracy [--models cnn1d resnet20 resnet20-init] [--targets 0.05 0.02]
[--methods hutchpp auto hutchinson] [--rounds 7] [--max-seconds 120] [--quick]``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import itertools
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmarks.harness import Measured, Paired, machine, paired, swamp_average, table
from core.data import load_mnist1d, mnist1d_spec
from core.models import build_model, model_spec
from landscape.curvature import hessian_trace
from landscape.tools.pyhessian_backend import pyhessian_trace

MIN_TERMS = 8  # the first standard error either tool may stop on (ours: one block of 8 residual probes)
MAX_PROBES = 10_000
WARMUP_SEED = 999  # the warm-up round's seed; round r of the measured rounds uses seed r


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
    model, path = swamp_average("cnn1d", args.data_dir)
    x, y = data.x_train[: args.samples], data.y_train[: args.samples]
    size = args.batch_size
    label = f"cnn1d (MNIST-1D, SWAMP average {path.parent.parent.name}/{path.parent.name})"
    return label, model, [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


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


def curvlinops_hutchpp(model: nn.Module, batches: list, products: int, seed: int) -> float:
    """curvlinops' Hutch++ with ``products`` Hessian-vector products (a multiple of 3), seeded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # a dependency's torch.jit.script at import
        from curvlinops import HessianLinearOperator, hutchpp_trace

    net = copy.deepcopy(model).eval()
    params = [p for p in net.parameters() if p.requires_grad]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        op = HessianLinearOperator(net, nn.CrossEntropyLoss(), params, batches, check_deterministic=False)
        return float(hutchpp_trace(op, products))


@dataclass(frozen=True)
class Budget:
    """What a target is due: PyHessian's probes (and the probes timed, when fewer), curvlinops' products."""

    pyhessian: int
    pyhessian_timed: int
    curvlinops: int


def budgets(model: nn.Module, batches: list, target: float, method: str, args: argparse.Namespace,
            per_probe: float) -> Budget:
    """Untimed pilots: Hutchinson's spread (ours, ``--pilot-probes`` probes) gives PyHessian's due probes; our
    adaptive ``method``'s products give curvlinops' budget."""
    pilot = hessian_trace(model, batches, method="hutchinson", probes=args.pilot_probes, seed=10_000)
    sd = pilot.stderr * math.sqrt(pilot.matvecs)
    due = max(MIN_TERMS, math.ceil((sd / (target * abs(pilot.estimate))) ** 2))
    timed = min(due, max(MIN_TERMS, int(args.max_seconds / per_probe)))
    ours = hessian_trace(model, batches, method=method, probes=MAX_PROBES, target_rse=target, seed=10_001)
    return Budget(due, timed, 3 * math.ceil(ours.matvecs / 3))


def target_row(model: nn.Module, batches: list, t: float, args: argparse.Namespace, per_probe: float,
               has_curvlinops: bool) -> tuple[list[str], Paired]:
    """One target's paired rounds of every tool; the table row and the timings."""
    budget = budgets(model, batches, t, args.methods[0], args, per_probe)
    scale = budget.pyhessian / budget.pyhessian_timed
    results: dict[str, dict[int, object]] = {}

    def side(key: str, fn: Callable[[int], object], scale: float = 1.0) -> Callable[[], object]:
        seeds, out = itertools.chain([WARMUP_SEED], itertools.count()), results.setdefault(key, {})

        def call() -> object:
            seed = next(seeds)
            began, cpu = time.perf_counter(), time.process_time()
            out[seed] = fn(seed)
            return Measured(scale * (time.perf_counter() - began), scale * (time.process_time() - cpu))
        return call

    fns = {"PyHessian": side("PyHessian", lambda s: pyhessian_trace(model, batches, budget.pyhessian_timed, s),
                             scale)}
    for m in args.methods:
        fns[m] = side(m, lambda s, m=m: hessian_trace(model, batches, method=m, probes=MAX_PROBES,
                                                       target_rse=t, seed=s))
    if has_curvlinops:
        fns["curvlinops"] = side("curvlinops", lambda s: curvlinops_hutchpp(model, batches, budget.curvlinops, s))
    result = paired(fns, rounds=args.rounds, warmup=1)
    mark = "*" if scale > 1 else ""
    row = [f"{100 * t:g}%", f"{budget.pyhessian}" + (f" ({budget.pyhessian_timed} timed)" if mark else ""),
           f"{result['PyHessian'].wall_median:.2f}{mark}"]
    for m in args.methods:
        ests = [results[m][s] for s in range(args.rounds)]
        rse = statistics.median(e.stderr / abs(e.estimate) for e in ests)
        row.append(f"{result[m].wall_median:.2f} ({statistics.median(e.matvecs for e in ests):.0f}, "
                   f"{100 * rse:.1f}%)")
    row += [f"**{result[m].wall_ratio}**" for m in args.methods]
    if has_curvlinops:
        values = [results["curvlinops"][s] for s in range(args.rounds)]
        spread = (f"{100 * statistics.stdev(values) / abs(statistics.mean(values)):.1f}%" if len(values) > 1
                  else "n/a")
        row += [f"{result['curvlinops'].wall_median:.2f} ({budget.curvlinops}, {spread})",
                f"**{result['curvlinops'].wall_ratio}**"]
    ref, ours = results["PyHessian"][0], results[args.methods[0]][0]
    gap = abs(ref.estimate - ours.estimate) / math.hypot(ref.stderr, ours.stderr)
    print(f"  seed 0, target {100 * t:g}%: PyHessian {ref.estimate:.5g} +- {ref.stderr:.3g}, ours "
          f"({args.methods[0]}) {ours.estimate:.5g} +- {ours.stderr:.3g}: {gap:.2f} combined standard errors apart"
          + (f"; curvlinops {results['curvlinops'][0]:.5g}" if has_curvlinops else ""))
    return row, result


def run_row(name: str, args: argparse.Namespace) -> None:
    label, model, batches = PROBLEMS[name](args)
    params = sum(p.numel() for p in model.parameters())
    samples = sum(len(y) for _, y in batches)
    has_curvlinops = importlib.util.find_spec("curvlinops") is not None
    start = time.perf_counter()
    pyhessian_trace(model, batches, MIN_TERMS, 10_002)  # untimed pilot: PyHessian's seconds per probe
    per_probe = (time.perf_counter() - start) / MIN_TERMS
    print(f"\n{label}: {params:,} parameters, {samples} samples in {len(batches)} batches, "
          f"{torch.get_num_threads()} torch threads")
    if not has_curvlinops:
        print("curvlinops not installed (pip install curvlinops-for-pytorch): its Hutch++ column is skipped")
    header = ["target RSE", "PyHessian: probes due", "PyHessian s"]
    header += [f"ours {m} s (products, RSE)" for m in args.methods] + [f"ours {m} / PyHessian" for m in args.methods]
    if has_curvlinops:
        header += ["curvlinops hutchpp s (products, spread)", "curvlinops / PyHessian"]
    rows = []
    for t in args.targets:
        row, result = target_row(model, batches, t, args, per_probe, has_curvlinops)
        rows.append(row)
    print(result.line() + "; * = PyHessian ran the probes timed, seconds scaled to the probes due")
    print(table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(PROBLEMS), default=["cnn1d", "resnet20"])
    parser.add_argument("--targets", nargs="+", type=float, default=[0.05, 0.02])
    parser.add_argument("--methods", nargs="+", choices=["hutchpp", "auto", "hutchinson"], default=["hutchpp", "auto"])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--resnet-samples", type=int, default=128)
    parser.add_argument("--resnet-batch-size", type=int, default=64)
    parser.add_argument("--resnet-steps", type=int, default=200)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resnet20 rows' training and data")
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds (after one warm-up round)")
    parser.add_argument("--pilot-probes", type=int, default=64, help="Hutchinson probes of the untimed pilot")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="cap on one PyHessian run (then its seconds are scaled to the probes due)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="cnn1d, tiny sizes, 1 round: proves it runs")
    args = parser.parse_args()
    if args.quick:
        args.models, args.targets, args.samples, args.batch_size = ["cnn1d"], [0.2], 256, 128
        args.rounds, args.pilot_probes, args.max_seconds = 1, 16, 5.0
    torch.set_num_threads(args.threads)
    args.targets = sorted(args.targets, reverse=True)
    print(machine())
    for name in args.models:
        run_row(name, args)
    print(machine())


if __name__ == "__main__":
    main()
