"""Loss-landscape analyses of any ``torch.nn.Module``: mode connectivity, convex hulls, planes, curvature.

Library (modules + data + loss in, frozen results out; see docs/api.md)::

    from landscape import linear_barrier, hull_losses, loss_plane, hessian_trace, HessianOperator

The command-line tools (``python -m landscape.barrier``, ``landscape.subspace``, ``landscape.hessian``)
are thin layers that rebuild models and data from the toolkit's checkpoint files.
"""

from landscape.batches import ArgumentError, as_batches, cross_entropy
from landscape.combination import Point, mean_loss
from landscape.connectivity import (
    HullLosses,
    LinearBarrier,
    PlaneLosses,
    frankle_barrier,
    hull_losses,
    linear_barrier,
    loss_plane,
    max_barrier,
)
from landscape.curvature import Eigenvalue, HessianOperator, hessian_trace, top_eigenvalue

__all__ = [
    "ArgumentError",
    "Eigenvalue",
    "HessianOperator",
    "HullLosses",
    "LinearBarrier",
    "PlaneLosses",
    "Point",
    "as_batches",
    "cross_entropy",
    "frankle_barrier",
    "hessian_trace",
    "hull_losses",
    "linear_barrier",
    "loss_plane",
    "max_barrier",
    "mean_loss",
    "top_eigenvalue",
]
