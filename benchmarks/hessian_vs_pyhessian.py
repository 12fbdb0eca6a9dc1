"""Hutchinson trace of the Hessian: ``landscape.hessian`` against PyHessian, same model, data and probes.

Model: the toolkit's MNIST-1D ``cnn1d`` (four 1-D convolutions with BatchNorm), briefly trained with
Adam so that the Hessian is that of a realistic network, in eval mode. Data: the first N samples of the
MNIST-1D training split (generated offline by the ``mnist1d`` package), in batches that both tools
share (PyHessian gets them as a ready list, so it pays no data-loader overhead). Both use Rademacher
probes over all coordinates; PyHessian's early stop is disabled so both use exactly ``--probes``.

Prints both times (best of ``--repeats`` alternating runs), the ratio (target <= 0.5 on CPU) and
both estimates, whose difference should be within 3 combined standard errors. From the repository root:
``python -m benchmarks.hessian_vs_pyhessian [--probes K] [--samples N] [--batch-size B] [--threads T]``
(on a machine shared with other jobs, ``--threads 1``: contended multi-threaded timings are erratic).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from landscape.hessian import HessianOptions, hessian_analysis
from landscape.pyhessian_backend import pyhessian_trace
from training.averaging import recalibrate_batchnorm
from training.data import load_mnist1d, mnist1d_spec
from training.models import build_model, model_spec


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each, alternating (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_mnist1d(mnist1d_spec(args.data_dir))
    model = trained_cnn(data.x_train, data.y_train, args.train_steps, args.seed)
    x, y = data.x_train[: args.samples], data.y_train[: args.samples]
    batches = [(x[i:i + args.batch_size], y[i:i + args.batch_size]) for i in range(0, len(y), args.batch_size)]
    options = HessianOptions(probes=args.probes, samples=None, subspace="full", seed=args.seed)
    warm = HessianOptions(probes=1, samples=None, subspace="full")
    hessian_analysis(model, batches[:1], options=warm)
    pyhessian_trace(model, batches[:1], 1, args.seed)

    t_ref, t_ours = math.inf, math.inf
    for _ in range(args.repeats):  # alternate and keep the fastest of each: robust to a busy machine
        start = time.perf_counter()
        ref = pyhessian_trace(model, batches, args.probes, args.seed)
        t_ref = min(t_ref, time.perf_counter() - start)
        start = time.perf_counter()
        ours = hessian_analysis(model, batches, options=options).trace
        t_ours = min(t_ours, time.perf_counter() - start)

    params = sum(p.numel() for p in model.parameters())
    print(f"cnn1d ({params} parameters), {len(y)} MNIST-1D samples in batches of {args.batch_size}, "
          f"{args.probes} probes, {torch.get_num_threads()} threads")
    print(f"best of {args.repeats} alternating runs each")
    print(f"pyhessian:         {t_ref:8.2f} s   trace {ref.estimate:.5g} +- {ref.stderr:.3g}")
    print(f"landscape.hessian: {t_ours:8.2f} s   trace {ours.estimate:.5g} +- {ours.stderr:.3g}")
    gap = abs(ours.estimate - ref.estimate) / math.hypot(ours.stderr, ref.stderr)
    print(f"time ratio (ours / pyhessian): {t_ours / t_ref:.3f}; estimates differ by {gap:.2f} combined stderr")


if __name__ == "__main__":
    main()
