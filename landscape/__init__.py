"""Loss-landscape analyses of any ``torch.nn.Module``: mode connectivity, convex hulls, planes, curvature.

Library (modules + data + loss in, frozen results out; see docs/api.md)::

    from landscape import linear_barrier, hull_losses, loss_plane, hessian_trace, HessianOperator

The command-line tools (``python -m landscape.barrier``, ``landscape.subspace``, ``landscape.hessian``;
:mod:`landscape.tools`) are thin layers that rebuild models and data from the toolkit's checkpoint files.
``landscape.align``, ``landscape.barrier``, ``landscape.hessian`` and ``landscape.subspace`` are their command
names (``python -m``), not modules to import: ``from landscape import align`` is the function
:func:`landscape.matching.align`.
"""

from core.errors import quiet_start_up_interrupts

quiet_start_up_interrupts()

# where each public name lives; imported on first use (PEP 562), so that a command-line tool loads only
# the modules it runs (docs/performance.md, start-up)
_EXPORTS = {
    "core.evaluate": ("Evaluation",),
    "landscape.batches": ("ArgumentError", "as_batches", "cross_entropy"),
    "landscape.combination": ("mean_loss",),
    "landscape.connectivity": ("HullLosses", "LinearBarrier", "PlaneLosses", "frankle_barrier", "hull_losses",
                               "linear_barrier", "linear_barriers", "loss_plane", "max_barrier"),
    "landscape.curvature": ("Eigenvalue", "HessianOperator", "hessian_trace", "top_eigenvalue"),
    "landscape.flatness": ("NormalizedTrace", "batchnorm_layers", "normalized_trace"),
    "landscape.matching": ("Alignment", "activation_matching", "align", "weight_matching"),
    "landscape.permutations": ("PermutationSpec", "permutation_spec"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})


__all__ = [
    "Alignment",
    "ArgumentError",
    "Eigenvalue",
    "Evaluation",
    "HessianOperator",
    "HullLosses",
    "LinearBarrier",
    "NormalizedTrace",
    "PermutationSpec",
    "PlaneLosses",
    "activation_matching",
    "align",
    "as_batches",
    "batchnorm_layers",
    "cross_entropy",
    "frankle_barrier",
    "hessian_trace",
    "hull_losses",
    "linear_barrier",
    "linear_barriers",
    "loss_plane",
    "max_barrier",
    "mean_loss",
    "normalized_trace",
    "permutation_spec",
    "top_eigenvalue",
    "weight_matching",
]
