"""The ``sequential`` engine, the reference: one particle after the other on ``ctx.device``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from core.artifacts.rundir import particle_unit
from core.pruning import apply_masks
from training.train import Schedule

if TYPE_CHECKING:
    from training.context import Context
    from training.engines import ParticleDone


def sequential(ctx: Context, cycle: int, start: dict[str, Tensor], masks: dict[str, Tensor], schedule: Schedule,
               todo: list[int], done: ParticleDone, bar: Any = None) -> None:
    """Train the particles one after the other on ``ctx.device``."""
    for p in todo:
        model = ctx.fresh_model(start)
        apply_masks(model, masks)
        done(p, ctx.train_unit(particle_unit(cycle, p), model, masks, schedule, "particle", cycle, p, bar=bar))
