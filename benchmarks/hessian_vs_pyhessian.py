"""Hutchinson trace of the Hessian: ``landscape`` against PyHessian, same model, data and probes.

Two rows, both with the model in eval mode (BatchNorm running statistics) for both tools:

- ``cnn1d``: the toolkit's MNIST-1D ``cnn1d`` (four 1-D convolutions with BatchNorm), the SWAMP average of
  the last cycle of a run made by the toolkit (:func:`benchmarks.harness.swamp_average`: 2 cycles of 2
  epochs, 2 particles, cached), on the first N samples of the MNIST-1D training split (generated offline
  by the ``mnist1d`` package), through the CLI's library function
  :func:`landscape.tools.hessian_report.hessian_analysis`;
- ``resnet18``: a torchvision ResNet-18 (10 classes, random weights) on random 3x32x32 images,
  through the public :func:`landscape.curvature.hessian_trace`.

Both tools get the same ready list of batches (so PyHessian pays no data-loader overhead) and use
Hutchinson's estimator with Rademacher probes over all coordinates (``method="hutchinson"``, not the
command line's default Hutch++: this is the cost per product; ``benchmarks.hessian_time_to_accuracy``
compares the time to a given accuracy); PyHessian's early stop is disabled so both use exactly the
given number of probes. Our time includes building the operator (copying the model, folding BatchNorm).

Timed with :func:`benchmarks.harness.paired` (``--rounds`` rounds after a discarded warm-up round, the
order alternating, both tools on the same seed in a round, a new seed every round); prints both median
times, the median (min-max) of the per-round ratios ours / PyHessian, wall and CPU (target <= 0.45 on
CPU), and both estimates of the first round, whose difference should be within 3 combined standard errors.
From the repository root: ``python -m benchmarks.hessian_vs_pyhessian [--models cnn1d resnet18] [--probes K]
[--samples N] [--batch-size B] [--resnet-probes K] [--resnet-samples N] [--resnet-batch-size B] [--rounds R]
[--threads T] [--quick]``
(on a machine shared with other jobs, ``--threads 1``: contended multi-threaded timings are erratic).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from collections.abc import Callable

import torch
import torchvision

from benchmarks.harness import machine, paired, swamp_average
from core.data import load_mnist1d, mnist1d_spec
from landscape.curvature import hessian_trace
from landscape.tools.hessian_report import HessianOptions, hessian_analysis
from landscape.tools.pyhessian_backend import pyhessian_trace
from landscape.trace import TraceEstimate

WARMUP_SEED = 999  # the warm-up round's seed; round r of the measured rounds uses seed r


def compare(label: str, model: torch.nn.Module, batches: list, probes: int, rounds: int,
            ours: Callable[[int], TraceEstimate]) -> float:
    """Time PyHessian and ``ours(seed)`` on the same model, batches, number of probes and seed (round r: seed r)
    with :func:`benchmarks.harness.paired`; print and return the median paired wall ratio."""
    seeds = {name: itertools.chain([WARMUP_SEED], itertools.count()) for name in ("PyHessian", "ours")}
    first: dict[str, object] = {}

    def side(name: str, fn: Callable[[int], object]) -> Callable[[], None]:
        def call() -> None:
            seed = next(seeds[name])
            out = fn(seed)
            if seed == 0:
                first[name] = out
        return call

    result = paired({"PyHessian": side("PyHessian", lambda s: pyhessian_trace(model, batches, probes, s)),
                     "ours": side("ours", ours)}, rounds=rounds, warmup=1)
    ref, est = first["PyHessian"], first["ours"]
    samples = sum(len(y) for _, y in batches)
    params = sum(p.numel() for p in model.parameters())
    print(f"{label} ({params} parameters), {samples} samples in {len(batches)} batches, {probes} probes, "
          f"{torch.get_num_threads()} threads; {result.line()}")
    for side_ in result.sides:
        print(f"  {side_.name:<10} median {side_.wall_median:8.2f} s wall, {side_.cpu_median:8.2f} s CPU")
    print(f"  round 0: PyHessian trace {ref.estimate:.5g} +- {ref.stderr:.3g}, ours {est.estimate:.5g} +- "
          f"{est.stderr:.3g}")
    gap = abs(est.estimate - ref.estimate) / math.hypot(est.stderr, ref.stderr)
    print(f"  time ratio (ours / PyHessian): wall {result['ours'].wall_ratio}, CPU {result['ours'].cpu_ratio}; "
          f"estimates differ by {gap:.2f} combined stderr")
    return result["ours"].wall_ratio.median


def cnn1d_row(args: argparse.Namespace) -> float:
    """The SWAMP average of the toolkit's ``cnn1d`` on MNIST-1D through the CLI's library function
    :func:`hessian_analysis`."""
    data = load_mnist1d(mnist1d_spec(args.data_dir))
    model, path = swamp_average("cnn1d", args.data_dir)
    x, y = data.x_train[: args.samples], data.y_train[: args.samples]
    batches = [(x[i:i + args.batch_size], y[i:i + args.batch_size]) for i in range(0, len(y), args.batch_size)]
    options = HessianOptions(method="hutchinson", probes=args.probes, samples=None, subspace="full")
    return compare(f"cnn1d SWAMP average ({path.parent.parent.name}/{path.parent.name}) via "
                   "landscape.tools.hessian_report.hessian_analysis", model, batches, args.probes, args.rounds,
                   lambda s: hessian_analysis(model, batches, options=dataclasses.replace(options, seed=s)).trace)


def resnet18_row(args: argparse.Namespace) -> float:
    """A torchvision ResNet-18 (random weights, eval mode) on random 3x32x32 images through
    :func:`landscape.curvature.hessian_trace`."""
    torch.manual_seed(args.seed)
    model = torchvision.models.resnet18(num_classes=10).eval()
    g = torch.Generator().manual_seed(args.seed)
    n, size = args.resnet_samples, args.resnet_batch_size
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    batches = [(x[i:i + size], y[i:i + size]) for i in range(0, n, size)]
    return compare("torchvision resnet18 via landscape.curvature.hessian_trace", model, batches, args.resnet_probes,
                   args.rounds, lambda s: hessian_trace(model, batches, method="hutchinson",
                                                        probes=args.resnet_probes, seed=s))


ROWS = {"cnn1d": cnn1d_row, "resnet18": resnet18_row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--resnet-probes", type=int, default=8)
    parser.add_argument("--resnet-samples", type=int, default=128)
    parser.add_argument("--resnet-batch-size", type=int, default=32)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seed", type=int, default=0, help="seed of resnet18's weights and images")
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds (after one warm-up round)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds: proves it runs, no figures")
    args = parser.parse_args()
    if args.quick:
        args.probes, args.samples, args.batch_size, args.rounds = 4, 256, 128, 2
        args.resnet_probes, args.resnet_samples, args.resnet_batch_size = 2, 8, 4
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    for name in args.models:
        ROWS[name](args)


if __name__ == "__main__":
    main()
