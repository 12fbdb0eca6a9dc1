"""The ``distributed`` engine: a cycle's particles spread over the processes of a torchrun launch.

Rank 0 (see :mod:`training.engines.cluster`) sends a ``train`` command with the cycle's start, masks
and schedule; particles that resume from the same epoch form a group, and a group's particle i goes to
rank i mod P. Each rank trains its share with :func:`~training.engines.vectorized.train_particles`,
stacked where that is faster for the model on the device (:func:`~training.engines.rule.stacks`),
otherwise one particle after the other; all ranks go epoch by epoch in step: after every epoch the
particles' resume states are gathered to rank 0, which writes them, and after each particle (or
stack) their final states, which rank 0 checkpoints. The particle states stay on the rank that
trained them for the collective steps of the cycle:

* average: theta_bar = (1/N) sum_r sum_{n on rank r} theta_n, an all-reduce of each rank's partial
  sum (rank 0 adds the particles it trained or loaded from disk);
* BatchNorm recalibration of the average: the BN batches are dealt round-robin to the ranks; rank r
  computes the cumulative means m_r over its k_r batches, and the all-reduce gives
  (sum_r k_r m_r) / (sum_r k_r), the same cumulative average over all batches (up to rounding) as
  :func:`core.averaging.recalibrate_batchnorm` computes in one process.

Trained one at a time, each particle is trained exactly (bitwise) as the sequential engine trains it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from core.artifacts.rundir import particle_unit
from core.averaging import recalibrate_batchnorm
from core.data import subsample_indices
from core.seeds import generator
from training.engines.cluster import (
    Cluster,
    PeerFailure,
    ends_on_signals,
    join,
    to_device,
    train_state_from_message,
    train_state_message,
)
from training.engines.rule import stacks
from training.engines.vectorized import resume_groups, train_particles
from training.resume import save_train_state
from training.train import Schedule

if TYPE_CHECKING:
    from training.config import RunConfig
    from training.context import Context
    from training.engines import ParticleDone

State = dict[str, Tensor]
Gathered = dict[int, Any]


def _merge(gathered: list[Any] | None) -> Gathered:
    return {p: item for part in gathered or [] for p, item in part.items()}


def rounds(group: list[int], rank: int, world: int, stack: bool) -> list[list[int]]:
    """What ``rank`` trains of ``group``, round by round. Every rank gets as many rounds (the ranks
    exchange states in step), some possibly empty: one stack, or one particle per round."""
    mine = group[rank::world]
    if stack:
        return [mine]
    return [mine[k:k + 1] for k in range(-(-len(group) // world))]


def train_share(ctx: Context, cluster: Cluster, job: dict[str, Any], resumes: dict[int, Any],
                save: Callable[[Gathered], None] | None = None, done: Callable[[Gathered], None] | None = None) -> None:
    """This rank's particles of a ``train`` job; rank 0 passes ``save`` and ``done`` for everyone's states."""
    schedule = Schedule(**job["schedule"])
    start, masks = to_device(job["start"], ctx.device), to_device(job["masks"], ctx.device)
    cluster.held = {}
    try:
        for group, first_epoch in zip(job["groups"], job["epochs"], strict=True):
            for batch in rounds(group, cluster.rank, cluster.world, job["stack"]):
                def on_epoch(states: list[Any], batch: list[int] = batch) -> None:
                    sent = {p: train_state_message(s) for p, s in zip(batch, states, strict=True)}
                    gathered = cluster.exchange(sent)
                    if save is not None:
                        save(_merge(gathered))

                finals: list[State] = []
                if batch:
                    saved = [train_state_from_message(resumes[p], ctx.device) if p in resumes else None
                             for p in batch]
                    finals = train_particles(ctx, job["cycle"], start, masks, schedule, batch, saved, on_epoch)
                else:  # nothing to train in this round: keep in step with the ranks that train
                    for _ in range(first_epoch, schedule.epochs):
                        on_epoch([])
                cluster.held.update(zip(batch, finals, strict=True))
                gathered = cluster.exchange({p: to_device(s, "cpu") for p, s in zip(batch, finals, strict=True)})
                if done is not None:
                    done(_merge(gathered))
        cluster.exchange()
    except PeerFailure:
        raise
    except Exception as err:
        cluster.report(err)
        raise


def average_share(ctx: Context, cluster: Cluster, own: dict[int, State], n: int) -> State:
    """(1/n) * all-reduced sum of every rank's ``own`` particles; integer buffers from particle 0."""
    like = next(iter(own.values())) if own else ctx.fresh_model().state_dict()
    keys = list(like)
    parts = []
    for key in keys:
        if like[key].is_floating_point():
            parts.append(sum((s[key] for s in own.values()), torch.zeros_like(like[key])))
        else:
            parts.append(own[0][key].clone() if 0 in own else torch.zeros_like(like[key]))
    sums = cluster.all_reduce_sum(parts)
    return {k: v / n if v.is_floating_point() else v for k, v in zip(keys, sums, strict=True)}


def recalibrate_share(ctx: Context, cluster: Cluster, model: nn.Module, indices: list[int]) -> None:
    """BN statistics of ``model`` from this rank's round-robin share of the ("bn", *indices) batches,
    combined over the ranks (the module docstring gives the formula)."""
    size, batch = ctx.data.size("train"), ctx.cfg.eval_batch_size
    chosen = subsample_indices(size, ctx.cfg.bn_samples, generator(ctx.cfg.seed, "bn", *indices))
    order = torch.arange(size) if chosen is None else chosen
    chunks = order.split(batch)[cluster.rank::cluster.world]
    recalibrate_batchnorm(model, ctx.data.eval_batches("train", batch, torch.cat(chunks) if chunks else order[:0]))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    count = bns[0].num_batches_tracked.double()
    weighted = [t.double() * count for bn in bns for t in (bn.running_mean, bn.running_var)]
    *sums, total = cluster.all_reduce_sum([*weighted, count])
    with torch.no_grad():
        for i, bn in enumerate(bns):
            bn.running_mean.copy_(sums[2 * i] / total)
            bn.running_var.copy_(sums[2 * i + 1] / total)
            bn.num_batches_tracked.fill_(int(total))


@dataclasses.dataclass
class Driver:
    """Rank 0's side of the collective steps of :func:`training.run.run_cycle`."""

    cluster: Cluster
    trained_on: dict[int, int] = dataclasses.field(default_factory=dict)  # particle -> rank, this cycle

    def average(self, ctx: Context, states: list[State]) -> State:
        remote = {p: r for p, r in self.trained_on.items() if r != 0}
        self.cluster.broadcast(("average", {"n": len(states), "remote": remote}))
        own = {p: s for p, s in enumerate(states) if p not in remote}
        return average_share(ctx, self.cluster, own, len(states))

    def recalibrate(self, ctx: Context, model: nn.Module, *indices: int) -> None:
        self.cluster.broadcast(("recalibrate", {"state": to_device(model.state_dict(), "cpu"),
                                                "indices": list(indices)}))
        recalibrate_share(ctx, self.cluster, model, list(indices))


def serve(ctx: Context, cluster: Cluster) -> None:
    """A worker rank: carry out rank 0's commands until ``stop``."""
    while True:
        command, msg = cluster.broadcast()
        if command == "stop":
            return
        if command == "train":
            train_share(ctx, cluster, msg, cluster.scatter(None))
        elif command == "average":
            own = {p: s for p, s in cluster.held.items() if msg["remote"].get(p) == cluster.rank}
            average_share(ctx, cluster, own, msg["n"])
        elif command == "recalibrate":
            recalibrate_share(ctx, cluster, ctx.fresh_model(to_device(msg["state"], ctx.device)), msg["indices"])
        else:
            raise RuntimeError(f"internal error: unknown command {command!r}")


def distributed(ctx: Context, cycle: int, start: State, masks: State, schedule: Schedule, todo: list[int],
                done: ParticleDone, bar: Any = None) -> None:
    """Rank 0: train ``todo`` on all ranks (see the module docstring); needs a torchrun launch."""
    driver = ctx.collective
    if not isinstance(driver, Driver):
        raise RuntimeError("internal error: the distributed engine runs only inside a torchrun session")
    cluster = driver.cluster
    paths = {p: ctx.run.resume_state(particle_unit(cycle, p)) for p in todo}
    resumes = {p: ctx.resume_from(particle_unit(cycle, p), start, schedule.epochs, device="cpu") for p in todo}
    groups = resume_groups(resumes)
    driver.trained_on = {p: i % cluster.world for group in groups for i, p in enumerate(group)}
    job = {"cycle": cycle, "start": to_device(start, "cpu"), "masks": to_device(masks, "cpu"),
           "schedule": dataclasses.asdict(schedule), "groups": groups,
           "stack": stacks(ctx.model_spec["name"], ctx.device.type, -(-len(todo) // cluster.world),
                           ctx.cfg.stackable),
           "epochs": [resumes[g[0]].epoch if resumes[g[0]] is not None else 0 for g in groups]}
    cluster.broadcast(("train", job))
    shares = [{p: train_state_message(resumes[p]) for p in todo
               if driver.trained_on[p] == r and resumes[p] is not None} for r in range(cluster.world)]
    mine = cluster.scatter(shares)

    def save(states: Gathered) -> None:
        for p, msg in states.items():
            save_train_state(paths[p], train_state_from_message(msg, torch.device("cpu")))
        if bar is not None:
            bar.update(len(states))

    def finish(states: Gathered) -> None:
        for p in sorted(states):
            done(p, to_device(states[p], ctx.device))

    train_share(ctx, cluster, job, mine, save, finish)


def session(cfg: RunConfig, build: Callable[[RunConfig], Context], body: Callable[[Context], Any]) -> Any:
    """Run ``body`` on rank 0 while the other ranks :func:`serve`; every rank uses rank 0's configuration."""
    from training.config import RunConfig

    cluster = join(cfg)
    with ends_on_signals():
        try:
            settings = cluster.broadcast(cfg.to_json() if cluster.rank == 0 else None)
            try:
                ctx = build(RunConfig(**{**settings, "device": str(cluster.device)}))
            except Exception as err:
                cluster.report(err)
                raise
            cluster.exchange()
            if cluster.rank > 0:
                serve(ctx, cluster)
                return []
            ctx.collective = Driver(cluster)
            try:
                return body(ctx)
            except KeyboardInterrupt:  # before "stop": the other ranks are stopping, none would receive it
                cluster.abandon()
                raise
            finally:
                if cluster.listening:
                    cluster.broadcast(("stop", None))
        except KeyboardInterrupt:  # SIGTERM or Ctrl-C reach every rank: none may wait for another (cluster.py)
            cluster.abandon()
            raise
        finally:
            cluster.leave()
