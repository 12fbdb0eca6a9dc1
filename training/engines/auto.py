"""The ``auto`` engine: per cycle, the engine :func:`~training.engines.rule.auto_engine` chooses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.engines import select_engine
from training.engines.distributed import Driver
from training.engines.rule import auto_engine

if TYPE_CHECKING:
    from training.context import Context


def auto(ctx: Context, cycle: int, *args: Any, **kwargs: Any) -> None:
    name = auto_engine(ctx.model_spec["name"], ctx.device.type, ctx.cfg.particles_in_cycle(cycle),
                       isinstance(ctx.collective, Driver), ctx.cfg.stackable and ctx.plain_batches)
    select_engine(name)(ctx, cycle, *args, **kwargs)
