"""Top Hessian eigenvalue: Lanczos stopped at a residual (``landscape``) against PyHessian's power iteration.

On a checkpoint the toolkit wrote (by default the harness's cached SWAMP average,
:func:`benchmarks.harness.swamp_checkpoint`: MNIST-1D ``cnn1d``, 2 cycles, 2 particles), both tools take
the Hessian of the mean cross-entropy over the same seeded training batches (those of
``python -m landscape.hessian``), all coordinates, model in eval mode:

- ours: :meth:`landscape.curvature.HessianOperator.top_eigenvalue` with ``tol`` (residual
  ||H y - theta y|| <= tol * theta; its products include the one that gives the true residual), the operator
  built inside the timed call;
- PyHessian: ``hessian(model, CrossEntropyLoss(), dataloader=batches).eigenvalues(top_n=1, maxIter=100,
  tol=1e-3)`` (its ``tol`` bounds the relative change of the estimate between iterations), on a private copy
  of the model, its products counted by wrapping ``dataloader_hv_product``.

Both are compared with a converged reference, ``scipy.sparse.linalg.eigsh`` (``which="LA"``, ``tol=1e-6``) on
the same operator. Timing: :func:`benchmarks.harness.paired` (one warm-up round, not counted, then ``--rounds``
paired rounds, the order rotated every round); the printed ratios ours / PyHessian, wall and CPU, are taken
within each round (median, min-max). From the repository root, on a shared machine with one thread::

    OMP_NUM_THREADS=1 python -m benchmarks.bench_eigen [--checkpoint CKPT] [--samples N] [--tol T] [--rounds R]
"""

from __future__ import annotations

import argparse
import copy
import math
import warnings
from pathlib import Path

import torch
from scipy.sparse.linalg import eigsh
from torch import nn

from benchmarks.harness import DATA_DIR, machine, paired, swamp_checkpoint
from core.artifacts.checkpoint import build_model, load_checkpoint
from landscape.curvature import HessianOperator
from landscape.hvp import twice_differentiable
from landscape.spectrum import Eigenvalue
from landscape.tools.artifacts import checkpoint_data
from landscape.tools.hessian_report import HessianOptions, training_batches


def pyhessian_top(model: nn.Module, batches: list, seed: int, max_iter: int, tol: float) -> tuple[float, int]:
    """PyHessian's top eigenvalue by power iteration and the Hessian-vector products it took."""
    from pyhessian import hessian

    net = copy.deepcopy(model).eval()
    with torch.random.fork_rng(), warnings.catch_warnings(), twice_differentiable():
        warnings.simplefilter("ignore", UserWarning)  # PyHessian's backward(create_graph=True)
        torch.manual_seed(seed)
        engine = hessian(net, nn.CrossEntropyLoss(), dataloader=batches, cuda=False)
        products = 0
        product = engine.dataloader_hv_product

        def counted(v):
            nonlocal products
            products += 1
            return product(v)

        engine.dataloader_hv_product = counted
        value = float(engine.eigenvalues(maxIter=max_iter, tol=tol, top_n=1)[0][0])
    return value, products


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="default: the harness's cached SWAMP average (trained once)")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--tol", type=float, default=1e-3, help="ours: relative residual")
    parser.add_argument("--pyhessian-tol", type=float, default=1e-3)
    parser.add_argument("--max-iter", type=int, default=100, help="PyHessian's maxIter; our max steps too")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds on 512 samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.samples = 3, 512
    print(machine())
    path = args.checkpoint or sorted(swamp_checkpoint().glob("cycle_*/average.safetensors"))[-1]
    ckpt = load_checkpoint(path)
    model = build_model(ckpt, "cpu")
    options = HessianOptions(samples=args.samples, batch_size=args.batch_size, seed=args.seed)
    batches = training_batches(checkpoint_data(ckpt, "cpu", DATA_DIR), options)
    op = HessianOperator(model, batches)
    reference = float(eigsh(op.to_scipy(), k=1, which="LA", tol=1e-6, return_eigenvectors=False)[0])
    print(f"checkpoint {'(SWAMP average) ' if args.checkpoint is None else ''}{ckpt.kind} {ckpt.model.get('name')}, "
          f"{op.dim} parameters, {op.samples} samples in {len(batches)} batches; "
          f"reference top eigenvalue (eigsh, tol 1e-6): {reference:.8g}")

    results: dict[str, tuple[float, int]] = {}

    def ours() -> Eigenvalue:
        top = HessianOperator(model, batches).top_eigenvalue(args.max_iter, seed=args.seed, tol=args.tol)
        results["ours"] = top.value, top.matvecs
        return top

    def theirs() -> None:
        results["pyhessian"] = pyhessian_top(model, batches, args.seed, args.max_iter, args.pyhessian_tol)

    timing = paired({"pyhessian": theirs, "ours": ours}, rounds=args.rounds, warmup=1)
    top = ours()
    for name, column, note in (("ours (Lanczos)", 0, f"tol {args.tol:g} on the residual"),
                               ("pyhessian (power)", 1, f"tol {args.pyhessian_tol:g} on the change")):
        value, products = results["ours" if column == 0 else "pyhessian"]
        seconds = timing["ours" if column == 0 else "pyhessian"].wall_median
        print(f"  {name:<18} {note:<28} {products:4d} products  {seconds:7.2f} s (median)  "
              f"eigenvalue {value:.8g}  relative error {abs(value - reference) / abs(reference):.1e}")
    print(f"  ours: reported true residual {top.residual:.3g} ({top.residual / abs(top.value):.1e} relative), "
          f"converged {top.converged}, {top.steps} steps; |error| <= residual: "
          f"{abs(top.value - reference) <= top.residual}")
    wall, cpu = timing["ours"].wall_ratio, timing["ours"].cpu_ratio
    print(f"  {timing.line()}")
    print(f"  ours / pyhessian: wall {wall.median:.3f} ({wall.low:.3f}-{wall.high:.3f}), CPU {cpu.median:.3f} "
          f"({cpu.low:.3f}-{cpu.high:.3f}); products ratio {results['ours'][1] / results['pyhessian'][1]:.3f}")
    if not math.isfinite(reference):
        raise SystemExit("eigsh gave no reference")


if __name__ == "__main__":
    main()
