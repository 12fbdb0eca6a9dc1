"""A training session in this process, or, under torchrun, the distributed session of all ranks."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from training.config import RunConfig
from training.engines import ENGINES
from training.engines.cluster import world_size

if TYPE_CHECKING:
    from training.context import Context


def run_session(cfg: RunConfig, build: Callable[[RunConfig], Context], body: Callable[[Context], Any]) -> Any:
    """``body(build(cfg))`` in this process, or, under torchrun, the distributed session of all ranks."""
    world = world_size()
    processes = ENGINES[cfg.engine].processes
    if world > 1 and processes == "one":
        raise UserError(f"--engine {cfg.engine} runs in one process, but torchrun started {world}; "
                        "use --engine distributed (or auto)")
    if world > 1 and cfg.own_training():
        raise UserError(f"torchrun runs --engine distributed, which trains with SGD, cross-entropy and a built-in "
                        f"schedule only, not {', '.join(cfg.own_training())}; run in one process (--engine sequential)")
    stacked = world > 1 or cfg.engine in ("vectorized", "distributed")

    def checked(c: RunConfig) -> Context:
        ctx = build(c)
        if stacked and not ctx.plain_batches:
            engine = "distributed" if world > 1 else cfg.engine
            raise UserError(f"--engine {engine} stacks (input, class label) batches only, and {cfg.dataset} has "
                            "other batches (mappings, or targets that are not class labels); run in one process "
                            "with --engine sequential or auto")
        return ctx

    if processes == "torchrun" or world > 1:
        if "RANK" not in os.environ:
            raise UserError("--engine distributed needs a torchrun launch: "
                            "torchrun --nproc-per-node P -m training.swamp ...")
        from training.engines.distributed import session  # torch.distributed only when it runs

        return session(cfg, checked, body)
    return body(checked(cfg))
