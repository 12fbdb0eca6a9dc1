"""Hutchinson trace of the Hessian: ``landscape`` against PyHessian, same model, data and probes.

Two rows, both with the model in eval mode (BatchNorm running statistics) for both tools:

- ``cnn1d``: the toolkit's MNIST-1D ``cnn1d`` (four 1-D convolutions with BatchNorm), briefly trained
  with Adam so that the Hessian is that of a realistic network, on the first N samples of the MNIST-1D
  training split (generated offline by the ``mnist1d`` package), through the CLI's library function
  :func:`landscape.tools.hessian_report.hessian_analysis`;
- ``resnet18``: a torchvision ResNet-18 (10 classes, random weights) on random 3x32x32 images,
  through the public :func:`landscape.curvature.hessian_trace`.

Both tools get the same ready list of batches (so PyHessian pays no data-loader overhead) and use
Hutchinson's estimator with Rademacher probes over all coordinates (``method="hutchinson"``, not the
command line's default Hutch++: this is the cost per product; ``benchmarks.hessian_time_to_accuracy``
compares the time to a given accuracy); PyHessian's early stop is disabled so both use exactly the
given number of probes. Our time includes building the operator (copying the model, folding BatchNorm).

Prints both times (best of ``--repeats`` alternating runs), the ratio (target <= 0.45 on CPU) and
both estimates, whose difference should be within 3 combined standard errors. From the repository root:
``python -m benchmarks.hessian_vs_pyhessian [--models cnn1d resnet18] [--probes K] [--samples N]
[--batch-size B] [--resnet-probes K] [--resnet-samples N] [--resnet-batch-size B] [--threads T]``
(on a machine shared with other jobs, ``--threads 1``: contended multi-threaded timings are erratic).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
import torchvision

from benchmarks.harness import machine
from core.averaging import recalibrate_batchnorm
from core.data import load_mnist1d, mnist1d_spec
from core.models import build_model, model_spec
from landscape.curvature import hessian_trace
from landscape.tools.hessian_report import HessianOptions, hessian_analysis
from landscape.tools.pyhessian_backend import pyhessian_trace
from landscape.trace import TraceEstimate


def trained_cnn(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> torch.nn.Module:
    """``cnn1d`` after ``steps`` Adam steps of batch 128, BatchNorm statistics recomputed, eval mode."""
    torch.manual_seed(seed)
    model = build_model(model_spec("cnn1d", 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    recalibrate_batchnorm(model, [(x[i:i + 512], y[i:i + 512]) for i in range(0, len(y), 512)])
    return model.eval()


def compare(label: str, model: torch.nn.Module, batches: list, probes: int, seed: int, repeats: int,
            ours: Callable[[], TraceEstimate]) -> float:
    """Time PyHessian and ``ours`` on the same model, batches and number of probes; print and return the ratio."""
    t_ref, t_ours = math.inf, math.inf
    for _ in range(repeats):  # alternate and keep the fastest of each: robust to a busy machine
        start = time.perf_counter()
        ref = pyhessian_trace(model, batches, probes, seed)
        t_ref = min(t_ref, time.perf_counter() - start)
        start = time.perf_counter()
        est = ours()
        t_ours = min(t_ours, time.perf_counter() - start)
    samples = sum(len(y) for _, y in batches)
    params = sum(p.numel() for p in model.parameters())
    print(f"{label} ({params} parameters), {samples} samples in {len(batches)} batches, {probes} probes, "
          f"{torch.get_num_threads()} threads, best of {repeats} alternating runs each")
    print(f"  pyhessian: {t_ref:8.2f} s   trace {ref.estimate:.5g} +- {ref.stderr:.3g}")
    print(f"  ours:      {t_ours:8.2f} s   trace {est.estimate:.5g} +- {est.stderr:.3g}")
    gap = abs(est.estimate - ref.estimate) / math.hypot(est.stderr, ref.stderr)
    print(f"  time ratio (ours / pyhessian): {t_ours / t_ref:.3f}; estimates differ by {gap:.2f} combined stderr")
    return t_ours / t_ref


def cnn1d_row(args: argparse.Namespace) -> float:
    """The toolkit's ``cnn1d`` on MNIST-1D through the CLI's library function :func:`hessian_analysis`."""
    data = load_mnist1d(mnist1d_spec(args.data_dir))
    model = trained_cnn(data.x_train, data.y_train, args.train_steps, args.seed)
    x, y = data.x_train[: args.samples], data.y_train[: args.samples]
    batches = [(x[i:i + args.batch_size], y[i:i + args.batch_size]) for i in range(0, len(y), args.batch_size)]
    options = HessianOptions(method="hutchinson", probes=args.probes, samples=None, subspace="full", seed=args.seed)
    hessian_analysis(model, batches[:1], options=HessianOptions(method="hutchinson", probes=2, samples=None,
                                                                subspace="full"))
    pyhessian_trace(model, batches[:1], 1, args.seed)
    return compare("cnn1d via landscape.tools.hessian_report.hessian_analysis", model, batches, args.probes, args.seed,
                   args.repeats, lambda: hessian_analysis(model, batches, options=options).trace)


def resnet18_row(args: argparse.Namespace) -> float:
    """A torchvision ResNet-18 (random weights, eval mode) on random 3x32x32 images through
    :func:`landscape.curvature.hessian_trace`."""
    torch.manual_seed(args.seed)
    model = torchvision.models.resnet18(num_classes=10).eval()
    g = torch.Generator().manual_seed(args.seed)
    n, size = args.resnet_samples, args.resnet_batch_size
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    batches = [(x[i:i + size], y[i:i + size]) for i in range(0, n, size)]
    hessian_trace(model, batches[:1], probes=2)
    pyhessian_trace(model, batches[:1], 1, args.seed)
    return compare("torchvision resnet18 via landscape.curvature.hessian_trace", model, batches, args.resnet_probes,
                   args.seed, args.repeats, lambda: hessian_trace(model, batches, method="hutchinson",
                                                                  probes=args.resnet_probes, seed=args.seed))


ROWS = {"cnn1d": cnn1d_row, "resnet18": resnet18_row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--resnet-probes", type=int, default=8)
    parser.add_argument("--resnet-samples", type=int, default=128)
    parser.add_argument("--resnet-batch-size", type=int, default=32)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each, alternating (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    for name in args.models:
        ROWS[name](args)


if __name__ == "__main__":
    main()
