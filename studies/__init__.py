"""The SWAMP paper's study layer, above :mod:`training` and :mod:`landscape`.

A study directory is written by ``python -m studies.grid --out DIR`` (the grid of methods and
seeds); the modules here read it:

* :mod:`studies.analyse` (``python -m studies.analyse DIR``): the landscape measurements of every
  sub-run, cached as JSON under ``DIR/analysis``;
* :mod:`studies.tables`: the study as pandas tables, what the notebooks read;
* :mod:`studies.figures`: the notebooks' figures;
* :mod:`studies.claims`, :mod:`studies.report` (``python -m studies.report DIR``): paired comparisons
  and every table of docs/earlier-results.md as Markdown;
* :mod:`studies.budget` (``python -m studies.budget DIR ...``): SWAMP against IMP across studies of
  different epochs per cycle;
* :mod:`studies.manifest`: the role of each method (:func:`studies.manifest.method_roles`).
* :mod:`studies.realisations` (``python -m studies.realisations DIR DIR ...``): which paired effects
  survive the floating-point path (other machines, thread counts) across realisations of one study;
* :mod:`studies.controls` (``python -m studies.controls ROOT``): a control beside every landscape verdict
  (docs/controls.md), and :mod:`studies.control_figures` its figures (notebook 07), from the JSON
  of ``python -m studies.controls --json``;
* :mod:`studies.alignment`: barriers before and after permutation alignment (docs/alignment.md).

Nothing in :mod:`training` or :mod:`landscape` imports this package.
"""

from core.errors import quiet_start_up_interrupts

quiet_start_up_interrupts()
