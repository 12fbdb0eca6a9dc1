"""Pruning: which weights are prunable, masks as pure functions ``(weights, masks) -> new masks``, and the
registry of pruning criteria.

* :mod:`core.pruning.masks`: :func:`prunable_names`, :func:`dense_masks`, :func:`density`,
  :func:`apply_masks`, :func:`coverage`, :func:`kept_per_cycle`, the schedules :func:`target_densities`,
  :func:`cycle_ratios`;
* :mod:`core.pruning.magnitude`: :func:`global_magnitude_mask`, :func:`layerwise_magnitude_mask`,
  :func:`random_mask` (Frankle & Carbin 2019);
* :mod:`core.pruning.criteria`: :data:`CRITERIA` (``global``, ``layerwise``, ``random``, ``snip``),
  :func:`next_masks`, :func:`snip_mask` (Lee et al. 2019).
"""

from core.pruning.criteria import CRITERIA, Criterion, next_masks, runner_methods, snip_mask, snip_scores
from core.pruning.magnitude import global_magnitude_mask, layer_groups, layerwise_magnitude_mask, random_mask
from core.pruning.masks import (
    EMBEDDING_TYPES,
    PRUNABLE_TYPES,
    PRUNE_SCHEDULES,
    Coverage,
    Masks,
    apply_masks,
    coverage,
    cycle_ratios,
    dense_masks,
    density,
    kept_per_cycle,
    max_linear_cycles,
    prunable_names,
    target_densities,
)

__all__ = ["CRITERIA", "EMBEDDING_TYPES", "PRUNABLE_TYPES", "PRUNE_SCHEDULES", "Coverage", "Criterion", "Masks",
           "apply_masks", "coverage", "cycle_ratios", "dense_masks", "density", "global_magnitude_mask",
           "kept_per_cycle", "layer_groups", "layerwise_magnitude_mask", "max_linear_cycles", "next_masks",
           "prunable_names", "random_mask", "runner_methods", "snip_mask", "snip_scores", "target_densities"]
