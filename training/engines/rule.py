"""The ``--engine auto`` rule (documented in :mod:`training.engines` and docs/performance.md)."""

from __future__ import annotations

# (device type, model registry name) -> the smallest number of particles from which stacking them
# (``vectorized``) measured faster than training them one after the other, in
# benchmarks/bench_engines.py (tables in docs/performance.md). Only measured pairs belong here: add
# GPU pairs once the GPU table of docs/performance.md exists.
VECTORIZED_FASTER = {("cpu", "mlp"): 4}


def stacks(model: str, device_type: str, particles: int) -> bool:
    """Whether ``particles`` particles of ``model`` on one ``device_type`` device train faster stacked."""
    least = VECTORIZED_FASTER.get((device_type, model))
    return least is not None and particles >= least


def auto_engine(model: str, device_type: str, particles: int, distributed: bool = False) -> str:
    """The engine ``--engine auto`` runs for a cycle of ``particles`` particles."""
    if distributed:
        return "distributed"
    return "vectorized" if particles > 1 and stacks(model, device_type, particles) else "sequential"
