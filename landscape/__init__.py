"""Loss-landscape analyses of any ``torch.nn.Module``: mode connectivity, convex hulls, planes, curvature.

Library (modules + data + loss in, frozen results out; see docs/api.md)::

    from landscape import linear_barrier, hull_losses, loss_plane, hessian_trace, HessianOperator

The command-line tools (``python -m landscape.barrier``, ``landscape.subspace``, ``landscape.hessian``)
are thin layers that rebuild models and data from the toolkit's checkpoint files.
"""

from training.errors import quiet_start_up_interrupts

quiet_start_up_interrupts()

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
from landscape.flatness import NormalizedTrace, batchnorm_layers, normalized_trace
from landscape.matching import Alignment, activation_matching, weight_matching
from landscape.permutations import PermutationSpec, permutation_spec

__all__ = [
    "Alignment",
    "ArgumentError",
    "Eigenvalue",
    "HessianOperator",
    "HullLosses",
    "LinearBarrier",
    "NormalizedTrace",
    "PermutationSpec",
    "PlaneLosses",
    "Point",
    "activation_matching",
    "as_batches",
    "batchnorm_layers",
    "cross_entropy",
    "frankle_barrier",
    "hessian_trace",
    "hull_losses",
    "linear_barrier",
    "loss_plane",
    "max_barrier",
    "mean_loss",
    "normalized_trace",
    "permutation_spec",
    "top_eigenvalue",
    "weight_matching",
]
