"""Particle engines: how the particles of one cycle are trained.

An engine trains the particles listed in ``todo`` (each from ``start`` under ``masks``, with the
cycle's schedule and the particle's own seed) and hands each finished state to ``done(p, state)``,
which writes the particle's checkpoint. Results must not depend on the engine for the same seeds.

* ``sequential``: one particle after the other (the reference).
* ``auto``: picks the engine; with only ``sequential`` available it is that one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor

from training.pruning import apply_masks
from training.train import Schedule

if TYPE_CHECKING:
    from training.run import Context

ParticleDone = Callable[[int, dict[str, Tensor]], None]


def particle_unit(cycle: int, particle: int) -> str:
    return f"cycle_{cycle:02d}_particle_{particle:02d}"


def sequential(ctx: Context, cycle: int, start: dict[str, Tensor], masks: dict[str, Tensor], schedule: Schedule,
               todo: list[int], done: ParticleDone, bar: Any = None) -> None:
    """Train the particles one after the other on ``ctx.device``."""
    for p in todo:
        model = ctx.fresh_model(start)
        apply_masks(model, masks)
        done(p, ctx.train_unit(particle_unit(cycle, p), model, masks, schedule, "particle", cycle, p, bar=bar))


ENGINES = {"sequential": sequential}


def select_engine(name: str) -> Callable[..., None]:
    """The engine called ``name``; ``auto`` chooses by the rule in this module's docstring."""
    return ENGINES["sequential" if name == "auto" else name]
