"""SWAMP training: particles, engines, pruning cycles and run orchestration, over :mod:`core` (models, data,
masks, averaging).

The Python API (imported on first use, so that ``import training.<module>`` stays light):
:func:`run_swamp` (:mod:`training.api`), its result :class:`SwampResult` and :class:`RunConfig`;
:func:`load_checkpoint` (a toolkit checkpoint's weights, masks and metadata, ready for one's own model's
``load_state_dict``) and :func:`build_model` (the zoo model a checkpoint names, with its weights), both of
:mod:`core.artifacts.checkpoint`.

The building blocks of SWAMP for one's own training loop (docs/api.md, "SWAMP in your own loop"), on any
module, optimizer and batch structure:

* masks (:mod:`core.pruning`): :func:`prunable_names`, :func:`dense_masks`, :func:`density`,
  :func:`apply_masks`, :func:`global_magnitude_mask`, :func:`layerwise_magnitude_mask`, :func:`random_mask`;
  the criteria registry :data:`CRITERIA` with :func:`next_masks`, and :func:`snip_mask`/:func:`snip_scores`;
* :func:`mask_optimizer` / :class:`MaskedOptimizer` (:mod:`training.masked`): pruned weights stay exactly 0
  under any optimizer;
* tickets (:mod:`core.tickets`): :func:`take_ticket` copies the weights (and, if asked, the optimizer's and
  the random generators' states) into a :class:`Ticket`; :func:`rewind` loads it back under a mask;
* averaging (:mod:`core.averaging`): :class:`SWA`, :class:`RunningAverage`, :func:`average_states`,
  :func:`recalibrate_batchnorm`;
* orchestration (:mod:`training.integrations.cycles`): :func:`swamp_cycles` runs IMP or SWAMP cycles around
  one's own ``train(model, masks, seed)`` and returns each :class:`Cycle` (with ``out=``, written as a run
  directory the landscape tools read: :mod:`training.integrations.record`); :class:`ParticleDuties` is one
  particle's masking and SWA inside any trainer (the Lightning and Hugging Face callbacks of
  :mod:`training.integrations` are built on it).
"""

from __future__ import annotations

from typing import Any

from core import __version__
from core.errors import quiet_start_up_interrupts

quiet_start_up_interrupts()

PRUNING = ("CRITERIA", "Criterion", "apply_masks", "dense_masks", "density", "global_magnitude_mask",
           "layerwise_magnitude_mask", "next_masks", "prunable_names", "random_mask", "snip_mask", "snip_scores")
AVERAGING = ("SWA", "RunningAverage", "average_states", "recalibrate_batchnorm")
MASKED = ("MaskedOptimizer", "mask_optimizer")
TICKETS = ("RandomStates", "Ticket", "rewind", "take_ticket")
CYCLES = ("Cycle", "ParticleDuties", "swamp_cycles")

__all__ = ["__version__", "Checkpoint", "RunConfig", "SwampResult", "build_model", "load_checkpoint", "run_swamp",
           *PRUNING, *AVERAGING, *MASKED, *TICKETS, *CYCLES]


def __getattr__(name: str) -> Any:
    if name in ("run_swamp", "SwampResult"):
        from training import api

        return getattr(api, name)
    if name in ("Checkpoint", "build_model", "load_checkpoint"):
        from core.artifacts import checkpoint

        return getattr(checkpoint, name)
    if name in PRUNING:
        from core import pruning

        return getattr(pruning, name)
    if name in AVERAGING:
        from core import averaging

        return getattr(averaging, name)
    if name in TICKETS:
        from core import tickets

        return getattr(tickets, name)
    if name in MASKED:
        from training import masked

        return getattr(masked, name)
    if name in CYCLES:
        from training.integrations import cycles

        return getattr(cycles, name)
    if name == "RunConfig":
        from training.config import RunConfig

        return RunConfig
    raise AttributeError(f"module 'training' has no attribute {name!r}")
