"""The ``sequential`` engine, the reference: one particle after the other on ``ctx.device``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from training.averaging import average_states, recalibrate_batchnorm
from training.pruning import apply_masks
from training.seeds import generator
from training.train import Schedule

if TYPE_CHECKING:
    from training.run import Context

ParticleDone = Callable[[int, dict[str, Tensor]], None]


def particle_unit(cycle: int, particle: int) -> str:
    """The name of a particle's resume state (``.resume/UNIT.safetensors``)."""
    return f"cycle_{cycle:02d}_particle_{particle:02d}"


def sequential(ctx: Context, cycle: int, start: dict[str, Tensor], masks: dict[str, Tensor], schedule: Schedule,
               todo: list[int], done: ParticleDone, bar: Any = None) -> None:
    """Train the particles one after the other on ``ctx.device``."""
    for p in todo:
        model = ctx.fresh_model(start)
        apply_masks(model, masks)
        done(p, ctx.train_unit(particle_unit(cycle, p), model, masks, schedule, "particle", cycle, p, bar=bar))


class LocalCollective:
    """The collective steps of a cycle in this one process: uniform average, BN recalibration."""

    def average(self, ctx: Context, states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return average_states(states)

    def recalibrate(self, ctx: Context, model: nn.Module, *indices: int) -> None:
        """BN statistics of ``model`` on the BN subsample of the seed stream ("bn", *indices)."""
        recalibrate_batchnorm(model, ctx.bn_batches(generator(ctx.cfg.seed, "bn", *indices)))
