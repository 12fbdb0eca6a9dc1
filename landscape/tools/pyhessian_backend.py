"""Cross-check backend: the ``pyhessian`` package (Yao et al. 2020) on the same model, data and probes.

PyHessian's ``hessian.trace(maxIter, tol)`` draws Rademacher probes from torch's global generator,
recomputes forward and gradient graph for every probe and batch (in data-loader mode), and returns
the list of terms v^T H v; its mean is the Hutchinson estimate. It has no standard error of its own;
the one given here is the terms' sample standard deviation over sqrt(K), like ours.

Compatibility shim, without touching the installed package:

- the global generator is seeded inside :func:`torch.random.fork_rng`, so a seed gives the same
  result and the caller's random streams are left as they were;
- ``tol=-inf`` disables PyHessian's early stop, so it uses exactly the requested number of probes;
- PyHessian probes all coordinates. For the masked subspace, a gradient hook multiplies each masked
  parameter's gradient by its 0/1 mask; the hook also applies to the second backward pass, so the
  products become M H M v and v^T M H M v is Hutchinson's term for the principal submatrix on the
  unpruned coordinates;
- it runs on a private copy of the model, since it leaves (graph-holding) gradients on the parameters.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from landscape.hvp import twice_differentiable

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class PyHessianTrace:
    """PyHessian's Hutchinson terms and their mean (and, when asked for, its top eigenvalue)."""

    estimate: float
    stderr: float
    samples: tuple[float, ...]
    top_eigenvalue: float | None = None


def pyhessian_trace(model: nn.Module, batches: Sequence[Batch], probes: int, seed: int,
                    masks: Mapping[str, Tensor] | None = None, top_eigen: bool = False) -> PyHessianTrace:
    """Run ``pyhessian.hessian(...).trace`` with ``probes`` probes on the mean cross-entropy of ``batches``.

    One batch uses PyHessian's single-batch mode (gradient graph reused across probes), several its
    data-loader mode. ``masks`` (parameter name -> 0/1) restrict it to the unpruned coordinates.
    """
    from pyhessian import hessian

    net = copy.deepcopy(model).eval()
    device = next(net.parameters()).device
    masks = masks or {}
    for name, p in net.named_parameters():
        if name in masks:
            mask = masks[name].to(device=p.device, dtype=p.dtype)
            p.register_hook(lambda g, mask=mask: g * mask)
    data = {"data": batches[0]} if len(batches) == 1 else {"dataloader": list(batches)}
    # twice_differentiable: the same forms as the native products (hardsigmoid, attention), so both run alike
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), warnings.catch_warnings(), \
            twice_differentiable():
        # PyHessian calls backward(create_graph=True), which warns about a reference cycle
        warnings.simplefilter("ignore", UserWarning)
        torch.manual_seed(seed)
        engine = hessian(net, nn.CrossEntropyLoss(), cuda=device.type == "cuda", **data)
        terms = [float(t) for t in engine.trace(maxIter=probes, tol=-math.inf)]
        top = float(engine.eigenvalues(top_n=1)[0][0]) if top_eigen else None
    stderr = float(np.std(terms, ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else math.nan
    return PyHessianTrace(float(np.mean(terms)), stderr, tuple(terms), top)
