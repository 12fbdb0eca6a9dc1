"""The ``--engine auto`` rule (documented in :mod:`training.engines` and docs/performance.md)."""

from __future__ import annotations

# (device type, model registry name) pairs where stacking N >= 2 particles (``vectorized``) measured
# faster than training them one after the other; see docs/performance.md.
VECTORIZED_FASTER = frozenset({("cpu", "mlp"), ("cuda", "mlp"), ("cuda", "cnn1d")})


def stacks(model: str, device_type: str) -> bool:
    """Whether several particles of ``model`` on one ``device_type`` device train faster stacked."""
    return (device_type, model) in VECTORIZED_FASTER


def auto_engine(model: str, device_type: str, particles: int, distributed: bool = False) -> str:
    """The engine ``--engine auto`` runs for a cycle of ``particles`` particles."""
    if distributed:
        return "distributed"
    return "vectorized" if particles > 1 and stacks(model, device_type) else "sequential"
