"""Masked SGD training of one particle, with optional SWA and epoch-boundary resume state.

Learning-rate schedule, per step t of T = epochs * steps_per_epoch:
* SWA on (Izmailov et al. 2018, as used by SWAMP): cosine decay from ``lr`` to ``swa_lr`` over the
  first ``epochs - swa_epochs`` epochs, then constant ``swa_lr``; the particle's result is the mean of
  its end-of-epoch weights over the last ``swa_epochs`` epochs, BatchNorm statistics recomputed.
* SWA off: cosine decay from ``lr`` to 0 over all epochs (the IMP baseline).
* ``constant``: the same rate throughout (ticket training and fine-tuning).

Pruned weights stay exactly zero: their gradients are zeroed before every step
(:func:`training.masked.mask_optimizer` with ``weights=False``), so SGD's momentum buffer and
weight-decay term are zero there as well, and no update can revive them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.averaging import RunningAverage, recalibrate_batchnorm
from core.data import Batch, Dataset
from core.errors import UserError
from training.masked import mask_optimizer


@dataclass(frozen=True)
class Schedule:
    """Per-step learning rate and the SWA window (see the module docstring)."""

    epochs: int
    steps_per_epoch: int
    lr: float
    end_lr: float = 0.0
    swa_epochs: int = 0
    constant: bool = False

    def lr_at(self, epoch: int, step: int) -> float:
        if self.constant:
            return self.lr if epoch < self.epochs - self.swa_epochs else self.end_lr
        decay_steps = (self.epochs - self.swa_epochs) * self.steps_per_epoch
        t = epoch * self.steps_per_epoch + step
        if t >= decay_steps:
            return self.end_lr
        return self.end_lr + (self.lr - self.end_lr) * 0.5 * (1.0 + math.cos(math.pi * t / decay_steps))

    def in_swa(self, epoch: int) -> bool:
        return epoch >= self.epochs - self.swa_epochs


@dataclass(frozen=True)
class Hyper:
    """Optimiser settings shared by all particles (``amp``: bf16 autocast of the forward pass)."""

    batch_size: int
    momentum: float
    weight_decay: float
    eval_batch_size: int = 1000
    amp: bool = False


@dataclass
class TrainState:
    """Everything needed to continue a particle bit-identically from an epoch boundary."""

    epoch: int
    model: dict[str, Tensor]
    momentum: dict[str, Tensor]
    swa: RunningAverage
    rng: Tensor


class Divergence(UserError):
    """The training loss became NaN or infinite."""


def compile_forward(model: nn.Module) -> None:
    """``torch.compile`` the forward pass of ``model`` in place (``--compile``), keeping its state-dict names.

    The bound ``forward`` is compiled rather than the module (``nn.Module.compile``): on torch 2.11 with CUDA
    a module compiled that way ran eagerly, dynamo tracing no frame (found by
    ``benchmarks/gpu_device_check.sh``; tests/test_cuda.py checks dynamo's frame counter), and
    ``torch.compile(model)`` would wrap it and prefix every state-dict name with ``_orig_mod.``.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> compile_forward(net)
        >>> list(net.state_dict())
        ['weight', 'bias']
    """
    model.forward = torch.compile(model.forward)


def steps_per_epoch(dataset: Dataset, batch_size: int) -> int:
    return max(dataset.size("train") // batch_size, 1)


def _optimizer(model: nn.Module, hyper: Hyper) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.0, momentum=hyper.momentum, weight_decay=hyper.weight_decay)


def _restore(model: nn.Module, opt: torch.optim.SGD, state: TrainState, gen: torch.Generator) -> None:
    model.load_state_dict(state.model)
    params = dict(model.named_parameters())
    for name, buf in state.momentum.items():
        opt.state[params[name]]["momentum_buffer"] = buf.to(params[name].device).clone()
    gen.set_state(state.rng)


def _capture(epoch: int, model: nn.Module, opt: torch.optim.SGD, swa: RunningAverage,
             gen: torch.Generator) -> TrainState:
    momentum = {name: opt.state[p]["momentum_buffer"] for name, p in model.named_parameters()
                if "momentum_buffer" in opt.state.get(p, {})}
    return TrainState(epoch, model.state_dict(), momentum, swa, gen.get_state())


def train_particle(model: nn.Module, masks: dict[str, Tensor], dataset: Dataset, schedule: Schedule, hyper: Hyper,
                   gen: torch.Generator, *, resume: TrainState | None = None,
                   on_epoch: Callable[[TrainState], None] | None = None,
                   bn_batches: Callable[[], Iterable[Batch]] | None = None, label: str = "",
                   progress: Callable[[int], None] | None = None,
                   log: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Tensor]:
    """Train ``model`` in place from its current weights; returns its final state.

    With SWA the returned state is the snapshot average with BatchNorm recomputed on ``bn_batches()``
    (default: all training data, un-augmented). ``on_epoch`` receives the resume state after each epoch,
    ``log(epoch, {"train_loss": mean loss of its batches, "lr": its last step's rate})`` its scalars.
    """
    opt = _optimizer(model, hyper)
    swa = RunningAverage()
    start = 0
    if resume is not None:
        _restore(model, opt, resume, gen)
        swa, start = resume.swa, resume.epoch
    hooks = mask_optimizer(opt, model, masks, weights=False)
    for epoch in range(start, schedule.epochs):
        model.train()
        loss_sum = torch.zeros((), device=next(model.parameters()).device)
        lr, steps = 0.0, 0
        for step, (x, y) in enumerate(dataset.train_batches(hyper.batch_size, gen)):
            lr = schedule.lr_at(epoch, step)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            with torch.autocast(x.device.type, torch.bfloat16, enabled=hyper.amp):
                loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            steps += 1
        if not bool(torch.isfinite(loss_sum)):
            raise Divergence(f"training diverged (loss is {float(loss_sum)}) in {label} epoch {epoch}; "
                             "lower --lr or --swa-lr; the last finished epoch is kept for --resume")
        if log is not None:
            log(epoch, {"train_loss": float(loss_sum) / max(steps, 1), "lr": lr})
        if schedule.in_swa(epoch):
            swa.update(model.state_dict())
        if on_epoch is not None:
            on_epoch(_capture(epoch + 1, model, opt, swa, gen))
        if progress is not None:
            progress(1)
    hooks.remove()
    if swa.count:
        model.load_state_dict(swa.state)
        batches = bn_batches() if bn_batches is not None else dataset.eval_batches("train", hyper.eval_batch_size)
        recalibrate_batchnorm(model, batches)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
