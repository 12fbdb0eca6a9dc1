"""Particle engines: how the particles of one cycle are trained.

An engine (:class:`Engine`) trains the particles listed in ``todo`` (each from ``start`` under ``masks``,
with the cycle's schedule and the particle's own seed) and hands each finished state to
``done(p, state)``, which writes the particle's checkpoint:
``engine(ctx, cycle, start, masks, schedule, todo, done, bar)``. :data:`ENGINES` is the one registry of
engines: ``--engine`` takes its names, :func:`select_engine` imports an engine's module only when
it runs (the distributed engine needs ``torch.distributed``), and an entry's ``processes`` says how it is
launched: :func:`~training.engines.session.run_session`, which runs a whole training session, refuses a
``"one"`` engine under torchrun and runs a ``"torchrun"`` one as the distributed session of all ranks.
Results do not depend on the engine for the same seeds: every engine gives each particle the same
initial weights, mask, batches (drawn from the particle's own generator), masked SGD with momentum and
weight decay, LR schedule, SWA average and BN recalibration, and writes the same per-particle resume
state, so a run may be resumed with another engine. An engine continues a particle from its resume state
only when the run is resumed (``--resume``, :meth:`~training.context.Context.resume_from`); called again for
a cycle in one process (the benchmarks), it trains from the ``start`` it is given.

To add an engine: write ``training/engines/NAME.py`` with a function of the :class:`Engine` signature
and add ``"NAME": EngineEntry("training.engines.NAME", "FUNCTION", "one")`` to :data:`ENGINES` (or
``"torchrun"`` for one that runs as a rank of a torchrun launch). That is all: ``--engine NAME`` accepts
it, and tests/test_engines.py trains an 8-particle MLP run with every ``"one"`` entry and compares its
particles and averages with ``sequential``'s (tests/test_cuda.py does so on a GPU too), and runs every
``"torchrun"`` entry under two gloo processes against the sequential run.

* ``sequential`` (:mod:`.sequential`): one particle after the other; the reference.
* ``vectorized`` (:mod:`.vectorized`): all particles as one stacked model in one batched computation
  on one device. Equal to ``sequential`` up to floating-point rounding.
* ``distributed`` (:mod:`.distributed`): particles spread over the processes of a
  ``torchrun --nproc-per-node P -m training.swamp ...`` launch (several nodes too); averaging and
  BN recalibration use collectives; only rank 0 touches the run directory. With one particle per
  rank, each particle is trained exactly as ``sequential`` trains it.
* ``auto``: under torchrun (``WORLD_SIZE`` > 1) ``distributed``; otherwise ``vectorized`` where,
  for the model on the device and the cycle's N particles, it measured faster than ``sequential``
  (:data:`~training.engines.rule.VECTORIZED_FASTER`: (device, model) -> smallest such N), else
  ``sequential``. The same table decides whether a rank of ``distributed`` stacks its particles.
  Measurements (``benchmarks/bench_engines.py``) are in docs/performance.md: on the CPU stacking pays
  only where per-step overhead dominates (the MLP, 1.2-1.4x faster for N = 4-8, slower for N = 2),
  while stacked convolutions run as grouped convolutions, which are 1.2-1.3x slower there than N
  separate ones. No GPU has been measured yet, so on GPUs ``auto`` is ``sequential`` until the GPU
  table (command in docs/performance.md) adds entries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from torch import Tensor

from training.engines.rule import VECTORIZED_FASTER, auto_engine

if TYPE_CHECKING:
    from training.context import Context
    from training.train import Schedule

__all__ = ["ENGINES", "VECTORIZED_FASTER", "Engine", "EngineEntry", "ParticleDone", "auto_engine", "engine_names",
           "select_engine"]

ParticleDone = Callable[[int, dict[str, Tensor]], None]
"""``done(p, state)``: particle ``p`` finished with ``state``; writes its checkpoint."""


class Engine(Protocol):
    """Trains the particles ``todo`` of ``cycle`` (see the module docstring)."""

    def __call__(self, ctx: Context, cycle: int, start: dict[str, Tensor], masks: dict[str, Tensor],
                 schedule: Schedule, todo: list[int], done: ParticleDone, bar: Any = None) -> None: ...


class EngineEntry(NamedTuple):
    """Where an engine lives and how it is launched.

    ``processes``: ``"one"`` (trains in this process; refused under torchrun), ``"torchrun"`` (one rank
    of a ``torchrun`` launch; refused outside one) or ``"any"`` (chooses, per cycle, another engine that
    fits the launch: ``auto``)."""

    module: str
    function: str
    processes: Literal["one", "torchrun", "any"]


ENGINES: dict[str, EngineEntry] = {
    "auto": EngineEntry("training.engines.auto", "auto", "any"),
    "sequential": EngineEntry("training.engines.sequential", "sequential", "one"),
    "vectorized": EngineEntry("training.engines.vectorized", "vectorized", "one"),
    "distributed": EngineEntry("training.engines.distributed", "distributed", "torchrun"),
}


def engine_names(processes: str) -> list[str]:
    """The names of the registered engines launched as ``processes`` says (``"one"``, ``"torchrun"``, ``"any"``).

    Example:
        >>> engine_names("one")
        ['sequential', 'vectorized']
    """
    return [name for name, entry in ENGINES.items() if entry.processes == processes]


def select_engine(name: str) -> Engine:
    """The engine called ``name`` (a key of :data:`ENGINES`)."""
    entry = ENGINES[name]
    return getattr(importlib.import_module(entry.module), entry.function)
