"""Seed derivation: every random stream of a run is a pure function of the master seed.

``derive_seed(seed, stream, *indices)`` hashes its integers with NumPy's SeedSequence, so streams
(model init, ticket data order, particle p of cycle k, random pruning, BN subsample) are independent
and a run is reproducible from its config alone.
"""

from __future__ import annotations

import numpy as np
import torch

from core.errors import UserError

# Training streams, then the Hessian analysis's (landscape.tools.hessian_report: sample subset, probes, Lanczos
# start vectors), which keep the stream numbers and 32-bit width they were published with, so that
# earlier Hessian results reproduce bit for bit.
STREAMS = {"init": 0, "ticket": 1, "particle": 2, "prune": 3, "bn": 4, "train_eval": 5,
           "hessian_samples": 0, "hessian_probes": 1, "hessian_lanczos": 2}
WIDTHS = {"hessian_samples": 32, "hessian_probes": 32, "hessian_lanczos": 32}


def derive_seed(seed: int, stream: str, *indices: int) -> int:
    """A seed for ``stream`` (one of STREAMS) at the given indices (cycle, particle, ...): 63 bits, or 32
    for the streams of :data:`WIDTHS`. The toolkit's one seed-derivation function."""
    entropy = [int(seed) & 0xFFFFFFFF, STREAMS[stream], *(int(i) for i in indices)]
    words = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    if WIDTHS.get(stream) == 32:
        return int(words[0])
    return int(words.astype(np.uint64).dot(np.array([1, 1 << 32], dtype=np.uint64)) >> np.uint64(1))


def generator(seed: int, stream: str, *indices: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, stream, *indices))


SEED_LIMIT = 2**32  # seeds enter every random stream modulo 2^32 (core.seeds), so larger ones would alias


def check_seed(seed: int, flag: str = "--seed") -> None:
    """Refuse (:class:`UserError`, naming ``flag``) a seed outside [0, :data:`SEED_LIMIT`)."""
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"{flag} must lie in [0, {SEED_LIMIT}), not {seed}")
