"""Pruning: which weights are prunable, masks as pure functions ``(weights, masks) -> new masks``, and the
registry of pruning criteria.

* :mod:`core.pruning.masks`: :func:`prunable_names`, :func:`dense_masks`, :func:`density`,
  :func:`apply_masks`, :func:`coverage`, :func:`kept_per_cycle`;
* :mod:`core.pruning.magnitude`: :func:`global_magnitude_mask`, :func:`layerwise_magnitude_mask`,
  :func:`random_mask` (Frankle & Carbin 2019);
* :mod:`core.pruning.criteria`: :data:`CRITERIA` (``global``, ``layerwise``, ``random``, ``snip``),
  :func:`next_masks`, :func:`snip_mask` (Lee et al. 2019).
"""

from core.pruning.criteria import CRITERIA, Criterion, next_masks, runner_methods, snip_mask, snip_scores
from core.pruning.magnitude import global_magnitude_mask, layerwise_magnitude_mask, random_mask
from core.pruning.masks import (
    EMBEDDING_TYPES,
    PRUNABLE_TYPES,
    Coverage,
    Masks,
    apply_masks,
    coverage,
    dense_masks,
    density,
    kept_per_cycle,
    prunable_names,
)

__all__ = ["CRITERIA", "EMBEDDING_TYPES", "PRUNABLE_TYPES", "Coverage", "Criterion", "Masks", "apply_masks",
           "coverage", "dense_masks", "density", "global_magnitude_mask", "kept_per_cycle", "layerwise_magnitude_mask",
           "next_masks", "prunable_names", "random_mask", "runner_methods", "snip_mask", "snip_scores"]
