"""The verdict rule for an effect measured on several floating-point paths (realisations of one grid).

A run is byte-deterministic for one machine type, torch thread count and torch version, and differs across
them, so an effect measured as a paired difference A - B over seeds on R paths has, per path r, a mean m_r
and a seed standard deviation s_r. Let M = mean_r m_r.

Rule (:func:`verdict`), on the numbers m_r and s_r alone:

* **holds**: the m_r have one sign (all > 0 or all < 0), |m_r| > s_r in every realisation (the effect is larger
  than the seed spread wherever it is measured), and |M| > max_r m_r - min_r m_r (larger than the spread the
  floating-point path adds);
* **does not hold**: |m_r| <= s_r in every realisation (no floating-point path shows an effect beyond its
  seed spread);
* **unresolved**: anything else: the floating-point path decides the sign or the size. A realisation of one
  seed has no seed spread, so nothing is decided with it.

The first two exclude each other (|m_r| > s_r against |m_r| <= s_r). "Does not hold" asks each realisation,
not the pooled mean: an effect beyond the seed spread with one sign on one path and the other sign on another
pools to about zero, and is unresolved (the path decides its sign), not absent. The criteria are invariant
under swapping A and B, reordering the realisations and changing units. The per-realisation criterion
|m| > s is :mod:`studies.controls`'s "beyond the seed spread" without its "same sign on every seed": with a
criterion per realisation that does not depend on the number of seeds, twelve seeds are not a harder test
than six; the wins/ties/losses and the per-seed sign agreement are printed beside the verdict as its evidence.

Issue 17's example (4 epochs per cycle, SWAMP N = 4 - IMP, seeds 0-5; Intel Xeon one thread, AMD EPYC one
thread, AMD EPYC two threads, in points): at 86.6% sparsity m = -0.35, +0.62, +0.68 with s = 0.16, 0.29, 0.36:
every realisation is beyond its seed std, with opposite signs: **unresolved** (the path decides the sign; the
Intel and the one-thread AMD realisations alone give the same verdict, although their pooled mean, +0.135, is
within both seed stds). At 95.6% m = +1.95, +1.73, +0.40 with s = 0.83, 0.95, 1.46: one sign, but
0.40 <= 1.46, and the spread 1.55 exceeds |M| = 1.36: **unresolved** (positive on every path, but the path
decides whether the gain is beyond the seed spread); without the two-thread realisation it **holds**
(|M| = 1.84 > spread 0.22, and 1.95 > 0.83, 1.73 > 0.95).

Used by :mod:`studies.realisations` (studies on disk) and :mod:`studies.controls.realisations` (controls
JSONs); docs/results.md, section "Reproducibility across floating-point paths".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import LibraryArgumentError

HOLDS, DOES_NOT_HOLD, UNRESOLVED = "holds", "does not hold", "unresolved"


@dataclass(frozen=True)
class Verdict:
    """Whether an effect survives the floating-point path (:func:`verdict`), and why."""

    outcome: str  # HOLDS, DOES_NOT_HOLD or UNRESOLVED
    reason: str


def verdict(means: Sequence[float], stds: Sequence[float]) -> Verdict:
    """The verdict rule of the module docstring on realisation means ``m_r`` and seed stds ``s_r``.

    Args:
        means: mean paired difference A - B of every realisation (at least two), in any unit.
        stds: its sample standard deviation over seeds, same unit; NaN for a realisation of one seed.

    Returns:
        :class:`Verdict`: ``holds``, ``does not hold`` or ``unresolved`` with a short reason.

    Example (issue 17, 86.6% sparsity):

    >>> verdict([-0.35, 0.62, 0.68], [0.16, 0.29, 0.36]).outcome
    'unresolved'
    """
    m, s = np.asarray(means, dtype=float), np.asarray(stds, dtype=float)
    if m.ndim != 1 or len(m) < 2 or s.shape != m.shape:
        raise LibraryArgumentError(f"verdict needs one mean and one std per realisation, for at least two "
                                   f"realisations; got {len(np.atleast_1d(m))} means and {len(np.atleast_1d(s))} "
                                   "stds")
    if not np.isfinite(m).all() or (s < 0).any() or np.isinf(s).any():
        raise LibraryArgumentError(f"verdict needs finite means and stds >= 0; got means {list(m)}, stds {list(s)}")
    if np.isnan(s).any():
        return Verdict(UNRESOLVED, "a realisation has one seed, so no seed spread")
    pooled, spread = float(m.mean()), float(m.max() - m.min())
    one_sign = bool((m > 0).all() or (m < 0).all())
    within = int((np.abs(m) <= s).sum())
    if one_sign and within == 0 and abs(pooled) > spread:
        return Verdict(HOLDS, f"A {'>' if pooled > 0 else '<'} B in every realisation, beyond the seed std and "
                              "the realisation spread")
    if within == len(m):
        return Verdict(DOES_NOT_HOLD, "within the seed std in every realisation")
    reasons = ["the sign differs between realisations"] if not one_sign else []
    if within:
        reasons.append(f"within the seed std in {within} of {len(m)} realisations")
    if one_sign and abs(pooled) <= spread:  # with both signs the spread always covers the pooled mean
        reasons.append("the realisation spread is at least the pooled mean")
    return Verdict(UNRESOLVED, "; ".join(reasons))
