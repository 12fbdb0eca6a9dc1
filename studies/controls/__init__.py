"""A control beside every landscape verdict (issue 17; docs/controls.md), on a directory of runs.

The runs are ``python -m training.imp`` (IMP: one particle, no SWA) and ``python -m training.swamp``
(SWAMP: N > 1 particles with SWA) run directories anywhere under ROOT -- a directory of runs, a study of
``python -m studies.grid`` (its ``imp`` and ``swamp`` arms) or a family of studies; model, method, seed and
rewind point (``--rewind-epochs``) are read from each ``config.json`` (:mod:`studies.controls.runs`). The
*grid* is the runs at one rewind point (``--rewind``; default the rewind point every model has,
:func:`studies.controls.cli.grid_rewind`); every rewind point of a model is used only by the rewind table.
Per model (:mod:`studies.controls.measurements`):

* **connectivity**: the test loss / error barrier (Frankle et al. 2020, ``points`` on the line, BatchNorm
  recomputed) between the particles of one SWAMP cycle (treatment: one ticket, one mask) beside the
  barrier between the solutions of two different seeds at the same cycle (control: another ticket, mask
  and data order; each seed with the next, cyclically: :func:`studies.controls.measurements.seed_groups`),
  for IMP and SWAMP, raw and after weight matching (Ainsworth et al. 2023,
  :mod:`landscape.tools.align`); "n/a" where alignment refuses the model;
* **hull**: uniform samples of the convex hull (:func:`landscape.tools.subspace.hull_landscape`) of K particles
  of one cycle beside that of K solutions of K different seeds at the same cycle (K = ``--hull-vertices``;
  each seed with the K - 1 next ones, cyclically);
  reported: mean hull loss minus the vertices' mean loss, largest hull loss minus the worst vertex's,
  and the fraction of samples at or below the worst vertex;
* **flatness**: raw Hessian trace and the BatchNorm-invariant traces (:func:`landscape.flatness.
  normalized_trace`, per layer and per channel) of SWAMP and IMP solutions, paired by seed, and their
  Spearman rank correlation with test accuracy over all (method, seed, cycle) points (also with ranks
  taken within each cycle, which removes the common trend with sparsity);
* **rewind point**: particle-pair barriers and SWAMP - IMP accuracy at every rewind point found;
* **accuracy**: SWAMP - IMP test accuracy of the grid, paired by seed.

Every measurement is one JSON file ``ROOT/analysis/controls/KIND/KEY.json`` (:mod:`studies.controls.cache`),
computed only when missing, ``--jobs K`` at once; the tables are :mod:`studies.controls.tables`, their verdicts
(the project's one rule) :mod:`studies.controls.verdicts`, and ``python -m studies.report ROOT`` prints them from
the cache.

``python -m studies.controls ROOT [--rewind N] [--jobs K] [--json OUT]`` prints the Markdown tables.
"""

from studies.claims import Paired
from studies.controls.cache import CachedControls, cache_dir, cached_controls, measure
from studies.controls.cli import main
from studies.controls.measurements import KINDS, Controls, Measurement, Settings, measure_row, plan_measurements
from studies.controls.runs import Run, accuracy_rows, find_runs, grid_runs, unalignable_models
from studies.controls.tables import (
    accuracy_table,
    connectivity_table,
    controls_section,
    correlation_rows,
    correlation_table,
    flatness_table,
    hull_table,
    report,
    rewind_table,
)
from studies.controls.verdicts import Family, outcomes, rows_of, verdict_families

__all__ = ["KINDS", "CachedControls", "Controls", "Measurement", "Paired", "Run", "Settings", "accuracy_rows",
           "accuracy_table", "cache_dir", "cached_controls", "connectivity_table", "controls_section",
           "correlation_rows", "correlation_table", "find_runs", "flatness_table", "grid_runs", "hull_table", "main",
           "measure", "measure_row", "plan_measurements", "report", "rewind_table", "Family", "outcomes", "rows_of",
           "verdict_families",
           "unalignable_models"]
