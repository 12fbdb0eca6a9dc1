"""Masked training of one particle (SGD by default, any optimizer and loss on request), with optional SWA and
epoch-boundary resume state.

The learning rate of every step is the unit's :class:`training.schedules.Schedule` (cosine decay to ``--swa-lr``
by default, then that constant rate over the SWA window); with SWA the particle's result is the mean of its
end-of-epoch weights over the window's epochs, BatchNorm statistics recomputed (Izmailov et al. 2018).

Pruned weights stay exactly zero: their gradients are zeroed before every step
(:func:`training.masked.mask_optimizer` with ``weights=False``), so SGD's momentum buffer and
weight-decay term are zero there as well, and no update can revive them. Under any other optimizer
(:attr:`Hyper.optimizer`: Adam, AdamW, a user's) the pruned weights are also zeroed after every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from core.averaging import RunningAverage, recalibrate_batchnorm
from core.data import Batch, Dataset
from core.errors import UserError
from training.masked import mask_optimizer
from training.optim import LossFn, OptimizerFn, batch_loss
from training.schedules import Schedule


@dataclass(frozen=True)
class Hyper:
    """Optimiser settings shared by all particles (``amp``: bf16 autocast of the forward pass).

    ``optimizer``: ``optimizer(params, lr)`` (:data:`training.optim.OptimizerFn`); None for SGD with
    ``momentum`` and ``weight_decay``. ``loss``: ``loss(outputs, targets)``; None for cross-entropy. Batches
    may have any structure of :mod:`core.batch` (:func:`training.optim.batch_loss`).
    """

    batch_size: int
    momentum: float
    weight_decay: float
    eval_batch_size: int = 1000
    amp: bool = False
    optimizer: OptimizerFn | None = None
    loss: LossFn | None = None


@dataclass
class TrainState:
    """Everything needed to continue a particle bit-identically from an epoch boundary.

    ``momentum``: SGD's momentum buffers (parameter name -> tensor); ``optimizer_state``: every other tensor
    the optimizer keeps per parameter (state key -> parameter name -> tensor, e.g. Adam's ``exp_avg``,
    ``exp_avg_sq`` and ``step``).
    """

    epoch: int
    model: dict[str, Tensor]
    momentum: dict[str, Tensor]
    swa: RunningAverage
    rng: Tensor
    optimizer_state: dict[str, dict[str, Tensor]] = field(default_factory=dict)


@dataclass(frozen=True)
class StepInfo:
    """What ``on_step`` receives after every optimizer step of a unit (the ticket or a particle).

    ``cycle`` and ``particle`` are None for the ticket; ``epoch`` and ``step`` count from 0 within the unit;
    ``loss`` is the step's training loss. ``model`` and ``optimizer`` are the live objects: a hook may read
    or change them (at its own risk: a resumed run does not replay a hook's changes).
    """

    unit: str
    cycle: int | None
    particle: int | None
    epoch: int
    step: int
    loss: float
    model: nn.Module
    optimizer: torch.optim.Optimizer


StepHook = Callable[[int, int, Tensor, nn.Module, torch.optim.Optimizer], None]
"""``hook(epoch, step, loss, model, optimizer)``: what :func:`train_particle` calls after each step."""


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


def _optimizer(model: nn.Module, hyper: Hyper, lr: float) -> torch.optim.Optimizer:
    if hyper.optimizer is None:
        return torch.optim.SGD(model.parameters(), lr=0.0, momentum=hyper.momentum, weight_decay=hyper.weight_decay)
    opt = hyper.optimizer(model.parameters(), lr)
    if not isinstance(opt, torch.optim.Optimizer):
        raise UserError(f"the optimizer function returned {type(opt).__name__}, not a torch.optim.Optimizer")
    return opt


def _restore(model: nn.Module, opt: torch.optim.Optimizer, state: TrainState, gen: torch.Generator) -> None:
    model.load_state_dict(state.model)
    params = dict(model.named_parameters())
    for name, buf in state.momentum.items():
        opt.state[params[name]]["momentum_buffer"] = buf.to(params[name].device).clone()
    if state.optimizer_state:
        # through load_state_dict, which puts each tensor where the optimizer keeps it (Adam's step on the CPU)
        order = {id(p): i for i, p in enumerate(p for group in opt.param_groups for p in group["params"])}
        saved = opt.state_dict()
        for key, entries in state.optimizer_state.items():
            for name, value in entries.items():
                saved["state"].setdefault(order[id(params[name])], {})[key] = value.clone()
        opt.load_state_dict(saved)
    gen.set_state(state.rng)


def _capture(epoch: int, model: nn.Module, opt: torch.optim.Optimizer, swa: RunningAverage,
             gen: torch.Generator) -> TrainState:
    momentum: dict[str, Tensor] = {}
    others: dict[str, dict[str, Tensor]] = {}
    for name, p in model.named_parameters():
        for key, value in opt.state.get(p, {}).items():
            if not isinstance(value, Tensor):
                raise UserError(f"the optimizer keeps {key!r} of {name} as {type(value).__name__}; the resume state "
                                "holds tensors only, so this optimizer cannot be resumed bit-identically")
            (momentum if key == "momentum_buffer" else others.setdefault(key, {}))[name] = value
    return TrainState(epoch, model.state_dict(), momentum, swa, gen.get_state(), others)


def train_particle(model: nn.Module, masks: dict[str, Tensor], dataset: Dataset, schedule: Schedule, hyper: Hyper,
                   gen: torch.Generator, *, resume: TrainState | None = None,
                   on_epoch: Callable[[TrainState], None] | None = None,
                   bn_batches: Callable[[], Iterable[Batch]] | None = None, label: str = "",
                   progress: Callable[[int], None] | None = None,
                   log: Callable[[int, dict[str, float]], None] | None = None,
                   on_step: StepHook | None = None) -> dict[str, Tensor]:
    """Train ``model`` in place from its current weights; returns its final state.

    With SWA the returned state is the snapshot average with BatchNorm recomputed on ``bn_batches()``
    (default: all training data, un-augmented). ``on_epoch`` receives the resume state after each epoch,
    ``log(epoch, {"train_loss": mean loss of its batches, "lr": its last step's rate})`` its scalars,
    ``on_step(epoch, step, loss, model, optimizer)`` every step after the optimizer's.
    """
    opt = _optimizer(model, hyper, schedule.lr)
    swa = RunningAverage()
    start = 0
    if resume is not None:
        _restore(model, opt, resume, gen)
        swa, start = resume.swa, resume.epoch
    hooks = mask_optimizer(opt, model, masks, weights=hyper.optimizer is not None)
    device = next(model.parameters()).device
    for epoch in range(start, schedule.epochs):
        model.train()
        loss_sum = torch.zeros((), device=device)
        lr, steps = 0.0, 0
        for step, batch in enumerate(dataset.train_batches(hyper.batch_size, gen)):
            lr = schedule.lr_at(epoch, step)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=hyper.amp):
                loss = batch_loss(model, batch, hyper.loss)
            loss.backward()
            opt.step()
            if on_step is not None:
                on_step(epoch, step, loss.detach(), model, opt)
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
