"""The ``vectorized`` engine: a cycle's particles trained together, as one batched model on one device.

:func:`train_particles` builds a :class:`~training.engines.stacked.StackedModule` of the particles and trains
it with the unchanged loop of :func:`training.train.train_particle` (see :mod:`training.engines.stacked` for
why that is each particle's own masked SGD + SWA). Every step stacks each particle's own next batch,
drawn from its own generator exactly as the sequential engine draws it, so the particles see the same
data in the same order as there. After SWA each particle's BatchNorm statistics are recomputed on its
own BN subsample, as :func:`~training.train.train_particle` does.

Results equal the sequential engine's up to floating-point rounding (batched kernels sum in another
order). Resume state stays per particle, in the sequential engine's files and format, so a run may be
resumed with either engine; particles that resume from different epochs train in separate groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from core.artifacts.rundir import particle_unit
from core.averaging import RunningAverage, recalibrate_batchnorm
from core.data import Batch, Dataset
from core.pruning import apply_masks
from core.seeds import generator
from training.engines.stacked import StackedModule, stack_states, unstack_state
from training.resume import save_train_state
from training.train import Schedule, TrainState, compile_forward, train_particle

if TYPE_CHECKING:
    from collections.abc import Iterator

    from training.context import Context
    from training.engines import ParticleDone

State = dict[str, Tensor]
EpochStates = Callable[[list[TrainState]], None]


@dataclass
class ParticleBatches:
    """The particles' batch streams as one: step i yields every particle's batch i, stacked."""

    data: Dataset
    generators: list[torch.Generator]

    def train_batches(self, batch_size: int, _shared: torch.Generator) -> Iterator[Batch]:
        """Inputs ``(N, B, ...)`` and labels ``(N * B,)``; each particle draws from its own generator."""
        streams = [self.data.train_batches(batch_size, g) for g in self.generators]
        for batches in zip(*streams, strict=True):
            xs, ys = zip(*batches, strict=True)
            yield torch.stack(xs), torch.cat(ys)


def stack_train_states(states: Sequence[TrainState], rng: Tensor) -> TrainState:
    """One stacked resume state of particles stopped at the same epoch (``rng``: the unused shared one)."""
    swa = RunningAverage(stack_states([s.swa.state for s in states]) if states[0].swa.count else None,
                         states[0].swa.count)
    return TrainState(states[0].epoch, stack_states([s.model for s in states]),
                      stack_states([s.momentum for s in states]) if states[0].momentum else {}, swa, rng)


def unstack_train_state(state: TrainState, index: int, rng: Tensor) -> TrainState:
    swa = RunningAverage(unstack_state(state.swa.state, index), state.swa.count)
    return TrainState(state.epoch, unstack_state(state.model, index), unstack_state(state.momentum, index), swa,
                      rng)


def train_particles(ctx: Context, cycle: int, start: State, masks: State, schedule: Schedule,
                    particles: Sequence[int], resumes: Sequence[TrainState | None],
                    on_epoch: EpochStates | None = None) -> list[State]:
    """Train ``particles`` of ``cycle`` as one stacked model; their final states, in order.

    ``resumes`` holds each particle's saved state (all at the same epoch) or is all None;
    ``on_epoch`` receives the particles' resume states after every epoch.
    """
    gens = [generator(ctx.cfg.seed, "particle", cycle, p) for p in particles]
    shared = torch.Generator()
    first = ctx.fresh_model(start)
    apply_masks(first, masks)
    model = StackedModule(first, [first.state_dict()] * len(particles))
    if ctx.cfg.compile:
        compile_forward(model)
    stacked_masks = {k: m.expand(len(particles), *m.shape) for k, m in masks.items()}
    resume = None
    if resumes[0] is not None:
        for gen, saved in zip(gens, resumes, strict=True):
            gen.set_state(saved.rng)
        resume = stack_train_states(resumes, shared.get_state())

    def split(state: TrainState) -> None:
        if on_epoch is not None:
            on_epoch([unstack_train_state(state, i, g.get_state()) for i, g in enumerate(gens)])

    label = f"cycle {cycle:02d} particles {', '.join(map(str, particles))}"
    stacked = train_particle(model, stacked_masks, ParticleBatches(ctx.data, gens), schedule, ctx.hyper, shared,
                             resume=resume, on_epoch=split, bn_batches=lambda: (), label=label,
                             log=ctx.epoch_log(f"cycle_{cycle:02d}_particles_{'_'.join(map(str, particles))}"))
    states = [unstack_state(stacked, i) for i in range(len(particles))]
    if schedule.swa_epochs:
        states = [recalibrated(ctx, state, cycle, p) for p, state in zip(particles, states, strict=True)]
    return states


def recalibrated(ctx: Context, state: State, cycle: int, particle: int) -> State:
    """``state`` with BN statistics recomputed on the particle's BN subsample (as after SWA in train_particle)."""
    model = ctx.fresh_model(state)
    recalibrate_batchnorm(model, ctx.bn_batches(generator(ctx.cfg.seed, "bn", cycle, particle)))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def resume_groups(resumes: dict[int, TrainState | None]) -> list[list[int]]:
    """Particles grouped by the epoch they resume from (fresh ones at 0), earliest first."""
    by_epoch: dict[int, list[int]] = {}
    for p, state in sorted(resumes.items()):
        by_epoch.setdefault(state.epoch if state is not None else 0, []).append(p)
    return [by_epoch[e] for e in sorted(by_epoch)]


def vectorized(ctx: Context, cycle: int, start: State, masks: State, schedule: Schedule, todo: list[int],
               done: ParticleDone, bar: Any = None) -> None:
    """Train the particles in ``todo`` together on ``ctx.device``; resume state saved per particle."""
    paths = {p: ctx.run.resume_state(particle_unit(cycle, p)) for p in todo}
    resumes = {p: ctx.resume_from(particle_unit(cycle, p), start, schedule.epochs) for p in todo}
    for group in resume_groups(resumes):
        def save(states: list[TrainState], group: list[int] = group) -> None:
            for p, state in zip(group, states, strict=True):
                save_train_state(paths[p], state)
            if bar is not None:
                bar.update(len(group))

        finals = train_particles(ctx, cycle, start, masks, schedule, group, [resumes[p] for p in group], save)
        for p, state in zip(group, finals, strict=True):
            done(p, state)
