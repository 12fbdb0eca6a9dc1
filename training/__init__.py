"""SWAMP training: particles, engines, pruning cycles and run orchestration, over :mod:`core` (models, data,
masks, averaging).

The Python API (imported on first use, so that ``import training.<module>`` stays light):
:func:`run_swamp` (:mod:`training.api`), its result :class:`SwampResult` and :class:`RunConfig`;
:func:`load_checkpoint` (a toolkit checkpoint's weights, masks and metadata, ready for one's own model's
``load_state_dict``) and :func:`build_model` (the zoo model a checkpoint names, with its weights), both of
:mod:`core.artifacts.checkpoint`.
"""

from __future__ import annotations

from typing import Any

from core import __version__
from core.errors import quiet_start_up_interrupts

quiet_start_up_interrupts()

__all__ = ["__version__", "Checkpoint", "RunConfig", "SwampResult", "build_model", "load_checkpoint", "run_swamp"]


def __getattr__(name: str) -> Any:
    if name in ("run_swamp", "SwampResult"):
        from training import api

        return getattr(api, name)
    if name in ("Checkpoint", "build_model", "load_checkpoint"):
        from core.artifacts import checkpoint

        return getattr(checkpoint, name)
    if name == "RunConfig":
        from training.config import RunConfig

        return RunConfig
    raise AttributeError(f"module 'training' has no attribute {name!r}")
