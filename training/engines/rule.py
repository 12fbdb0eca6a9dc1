"""The ``--engine auto`` rule (documented in :mod:`training.engines` and docs/performance.md)."""

from __future__ import annotations

# (device type, model registry name) -> the smallest number of particles from which stacking them
# (``vectorized``) measured faster than training them one after the other, in
# benchmarks/bench_engines.py (tables in docs/performance.md). Only measured pairs belong here: add
# GPU pairs from benchmarks/gpu_check.py's engine table (docs/performance.md, "GPU tables").
VECTORIZED_FASTER = {("cpu", "mlp"): 4, ("cuda", "cnn1d"): 4, ("cuda", "resnet20"): 8}


def stacks(model: str, device_type: str, particles: int, stackable: bool = True) -> bool:
    """Whether ``particles`` particles of ``model`` on one ``device_type`` device train faster stacked.

    ``stackable`` is False where the run's switches do not combine with stacking (``--amp``,
    ``--channels-last``: see :func:`training.config.validate`)."""
    least = VECTORIZED_FASTER.get((device_type, model))
    return stackable and least is not None and particles >= least


def auto_engine(model: str, device_type: str, particles: int, distributed: bool = False,
                stackable: bool = True) -> str:
    """The engine ``--engine auto`` runs for a cycle of ``particles`` particles."""
    if distributed:
        return "distributed"
    return "vectorized" if particles > 1 and stacks(model, device_type, particles, stackable) else "sequential"
