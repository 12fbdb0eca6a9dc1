"""Seed derivation: every random stream of a run is a pure function of the master seed.

``derive_seed(seed, stream, *indices)`` hashes its integers with NumPy's SeedSequence, so streams
(model init, ticket data order, particle p of cycle k, random pruning, BN subsample) are independent
and a run is reproducible from its config alone.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS = {"init": 0, "ticket": 1, "particle": 2, "prune": 3, "bn": 4, "train_eval": 5}


def derive_seed(seed: int, stream: str, *indices: int) -> int:
    """A 63-bit seed for ``stream`` (one of STREAMS) at the given indices (cycle, particle, ...)."""
    entropy = [int(seed) & 0xFFFFFFFF, STREAMS[stream], *(int(i) for i in indices)]
    return int(np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot(np.array([1, 1 << 32], dtype=np.uint64)) >> np.uint64(1))


def generator(seed: int, stream: str, *indices: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, stream, *indices))
