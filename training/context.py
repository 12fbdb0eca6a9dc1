"""The state every stage of a run shares (:class:`Context`), built and checked before anything is written.

Engines (:mod:`training.engines`) and the cycle loop (:mod:`training.run`) both work on a
:class:`Context`; it lives here so that neither imports the other.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from core.artifacts.checkpoint import save_checkpoint
from core.artifacts.rundir import RunDir
from core.averaging import average_states, recalibrate_batchnorm
from core.batch import apply_model, batch_parts, logits_of
from core.data import Dataset, dataset_spec, load_dataset, subsample_indices
from core.data.records import RecordDataset
from core.device import resolve_device
from core.errors import UserError
from core.models import ARGUMENT_ERRORS, build_model, model_factory, model_spec
from core.models.meta import on_meta
from core.pruning import CRITERIA, cycle_ratios, kept_per_cycle, layer_groups, prunable_names
from core.seeds import derive_seed, generator
from training.config import RunConfig, check_data_dir
from training.loggers import Logger, NullLogger, check_logger
from training.optim import LossFn, OptimizerFn, batch_loss, loss_fn, optimizer_fn
from training.resume import load_train_state, save_train_state
from training.schedules import SchedulerFn, checked_rate, fn_name, scheduler_fn
from training.train import Hyper, Schedule, StepInfo, TrainState, compile_forward, steps_per_epoch, train_particle


class Collective(Protocol):
    """The steps of a cycle that combine particles (local, or with collectives across ranks)."""

    def average(self, ctx: Context, states: list[dict[str, Tensor]]) -> dict[str, Tensor]: ...

    def recalibrate(self, ctx: Context, model: nn.Module, *indices: int) -> None: ...


class LocalCollective:
    """The collective steps of a cycle in this one process: uniform average, BN recalibration."""

    def average(self, ctx: Context, states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return average_states(states)

    def recalibrate(self, ctx: Context, model: nn.Module, *indices: int) -> None:
        """BN statistics of ``model`` on the BN subsample of the seed stream ("bn", *indices)."""
        recalibrate_batchnorm(model, ctx.bn_batches(generator(ctx.cfg.seed, "bn", *indices)))


@dataclass
class Context:
    """What every stage of a run shares."""

    cfg: RunConfig
    run: RunDir
    device: torch.device
    data: Dataset
    model_spec: dict[str, Any]
    data_spec: dict[str, Any]
    hyper: Hyper
    show_progress: bool
    # a fresh, randomly initialised model (from torch's RNG) of ``model_spec``, or of the Python API's model_fn
    builder: Callable[[], nn.Module]
    # averaging and BN recalibration (across ranks under torchrun)
    collective: Collective = field(default_factory=lambda: LocalCollective())
    logger: Logger = field(default_factory=NullLogger)
    # the Python API's on_step(StepInfo), called after every optimizer step of the sequential engine
    on_step: Callable[[StepInfo], None] | None = None
    # a user's schedule (--schedule PACKAGE.MODULE:CALLABLE or the Python API's scheduler_fn); None: cfg.schedule
    scheduler: SchedulerFn | None = None

    @property
    def plain_batches(self) -> bool:
        """Whether the data gives ``(inputs, class labels)`` tuples, the only batches the stacked engines
        (``vectorized``, ``distributed``) train on; ``auto`` runs other data on the sequential engine."""
        return self.data.class_labels and not isinstance(self.data, RecordDataset)

    def fresh_model(self, state: dict[str, Tensor] | None = None) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            init = self.cfg.seed if self.cfg.init_seed is None else self.cfg.init_seed
            torch.manual_seed(derive_seed(init, "init"))
            model = self.builder()
        if state is not None:
            model.load_state_dict(state)
        return model.to(self.device, memory_format=torch.channels_last if self.cfg.channels_last else None)

    def save(self, path: Any, state: dict[str, Tensor], masks: dict[str, Tensor], kind: str,
             cycle: int | None = None, particle: int | None = None) -> None:
        save_checkpoint(path, state, masks, kind=kind, model=self.model_spec, dataset=self.data_spec,
                        config=self.cfg.hyperparameters(), cycle=cycle, particle=particle)

    def train_unit(self, unit: str, model: nn.Module, masks: dict[str, Tensor], schedule: Schedule, seed_stream: str,
                   *indices: int, bar: Any = None) -> dict[str, Tensor]:
        """Train one particle (or the ticket) with epoch-boundary resume state under ``.resume/``."""
        resume_path = self.run.resume_state(unit)
        if self.cfg.compile:
            compile_forward(model)
        state = train_particle(
            model, masks, self.data, schedule, self.hyper, generator(self.cfg.seed, seed_stream, *indices),
            resume=self.resume_from(unit, model.state_dict(), schedule.epochs),
            on_epoch=lambda s: save_train_state(resume_path, s),
            bn_batches=lambda: self.bn_batches(generator(self.cfg.seed, "bn", *indices)),
            label=unit.replace("_", " "), progress=bar.update if bar is not None else None, log=self.epoch_log(unit),
            on_step=self.step_hook(unit, *indices))
        return state

    def resume_from(self, unit: str, template: dict[str, Tensor], epochs: int,
                    device: Any = None) -> TrainState | None:
        """The state ``unit`` continues from: with ``--resume``, its saved epoch-boundary state (None if it has
        none), loaded on ``device`` (default: the run's) and checked against ``template`` and ``epochs``
        (:func:`~training.resume.load_train_state`); otherwise None, and a state left by earlier training of
        the unit is deleted. A run started afresh begins with an empty ``.resume/``, so only a caller that
        trains the same unit twice in one directory (an engine called again for a cycle, as the benchmarks
        call them) finds one: that training starts from the weights it is given, never from what the earlier
        one finished with, and a ``--resume`` after it is stopped cannot continue the earlier one.
        """
        path = self.run.resume_state(unit)
        if not self.cfg.resume:
            path.unlink(missing_ok=True)
            return None
        return load_train_state(path, self.device if device is None else device, template, epochs=epochs)

    def step_hook(self, unit: str, *indices: int) -> Any:
        """:func:`train_particle`'s ``on_step`` for ``unit`` (indices: cycle, particle), or None without one."""
        if self.on_step is None:
            return None
        hook = self.on_step
        cycle, particle = (indices + (None, None))[:2]
        return lambda epoch, step, loss, model, opt: hook(StepInfo(unit, cycle, particle, epoch, step, float(loss),
                                                                    model, opt))

    def epoch_log(self, unit: str) -> Callable[[int, dict[str, float]], None]:
        """``log(epoch, scalars)`` for :func:`training.train.train_particle`: to the run's logger, as
        ``epoch/<unit>/<name>`` (see :mod:`training.loggers`)."""
        return lambda epoch, scalars: self.logger.log({f"epoch/{unit}/{k}": v for k, v in scalars.items()}, epoch)

    def bn_batches(self, gen: torch.Generator) -> Iterable[Any]:
        """Un-augmented training batches for BN recalibration (``--bn-samples`` of them, 0 = all)."""
        indices = subsample_indices(self.data.size("train"), self.cfg.bn_samples, gen)
        return self.data.eval_batches("train", self.cfg.eval_batch_size, indices)

    def finish_unit(self, unit: str) -> None:
        self.run.resume_state(unit).unlink(missing_ok=True)


ModelFn = Callable[..., nn.Module]
"""``model_fn(num_classes=..., **model_kwargs)``: a fresh model, as a ``PACKAGE.MODULE:CALLABLE`` factory is called."""


def build_context(cfg: RunConfig, data: Dataset | None = None, model_fn: ModelFn | None = None, *,
                  optimizer: OptimizerFn | None = None, loss: LossFn | None = None,
                  scheduler: SchedulerFn | None = None, on_step: Callable[[StepInfo], None] | None = None) -> Context:
    """Device, data and model of the run, each checked before anything of the run is written.

    The model, data, optimizer and loss are those ``cfg`` names (the user named them, so import-path factories
    are imported), unless the Python API hands over ``data`` (already wrapped, :func:`core.data.from_datasets`),
    ``model_fn``, ``optimizer``, ``loss`` or ``scheduler``, which then stand in for ``cfg.dataset`` / ``cfg.model`` /
    ``cfg.optimizer`` / ``cfg.loss`` / ``cfg.schedule``. ``on_step`` sees every optimizer step.
    """
    device = resolve_device(cfg.device)
    check_logger(cfg.log)
    if data is None:
        check_data_dir(cfg)
        spec = dataset_spec(cfg)
        data = load_dataset(spec, device, download=cfg.download, trust_code=True)
    mspec = model_spec(cfg.model, data.num_classes, cfg.model_kwargs_dict)
    if model_fn is None:  # import a user's factory now, not first under the meta device of check_model
        model_factory(mspec["name"], trust_code=True, source=f"--model {cfg.model}")
        builder = functools.partial(build_model, mspec, trust_code=True)
    else:
        builder = functools.partial(built_module, model_fn, mspec)
    optimizer = optimizer or optimizer_fn(cfg.optimizer, cfg.optimizer_kwargs, momentum=cfg.momentum,
                                          weight_decay=cfg.weight_decay)
    hyper = Hyper(cfg.batch_size, cfg.momentum, cfg.weight_decay, cfg.eval_batch_size, cfg.amp, optimizer,
                  loss or loss_fn(cfg.loss, cfg.label_smoothing))
    ctx = Context(cfg, RunDir(Path(cfg.out)), device, data, mspec, data.spec, hyper, cfg.progress, builder,
                  on_step=on_step, scheduler=scheduler or scheduler_fn(cfg.schedule))
    check_model(ctx)
    check_scheduler(ctx)
    return ctx


def built_module(model_fn: ModelFn, spec: dict[str, Any]) -> nn.Module:
    """``model_fn(**spec["kwargs"])``, refusing (:class:`UserError`) a result that is not a module."""
    model = model_fn(**spec["kwargs"])
    if not isinstance(model, nn.Module):
        raise UserError(f"model_fn returned a {type(model).__name__}, not a torch.nn.Module")
    return model


# Float32 copies of every weight that training holds at least: weights, gradients, momentum, SWA average.
TRAINING_COPIES = 4
MODEL_ERRORS = (RuntimeError, UserError, *ARGUMENT_ERRORS)


def device_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: the GPU's total memory, or the machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows): no limit known
        return 2**63


def check_model(ctx: Context) -> None:
    """Refuse a model the run cannot train, as one line naming ``--model`` / ``--model-kwargs``: one that
    cannot be built, whose :data:`TRAINING_COPIES` do not fit in the device's memory (counted on the meta
    device, nothing allocated), or that does not map two training samples to (2, classes) logits."""
    cfg = ctx.cfg
    what = f"--model {cfg.model}" + (f" --model-kwargs '{cfg.model_kwargs}'" if cfg.model_kwargs_dict else "")

    def first_line(err: BaseException) -> str:
        return (str(err).strip().splitlines() or [type(err).__name__])[0]

    try:
        shapes = on_meta(ctx.builder)
    except MODEL_ERRORS as err:
        raise UserError(f"{what}: the model cannot be built ({first_line(err)}); check --model-kwargs") from None
    empty = next((name for name, p in shapes.named_parameters() if p.numel() == 0), None)
    if empty is not None:  # no weight to prune or average: a density of 0/0
        raise UserError(f"{what}: the model's parameter {empty} has no elements; check --model-kwargs")
    numel = sum(t.numel() for t in shapes.state_dict().values())
    need, memory = TRAINING_COPIES * 4 * numel, device_memory(ctx.device)
    if need > memory:
        raise UserError(f"{what}: {numel:,} weights need at least {need / 2**30:,.1f} GiB to train, more than the "
                        f"{memory / 2**30:,.1f} GiB of {ctx.device}; choose a smaller model")
    batch = next(iter(ctx.data.eval_batches("train", 2, torch.arange(2))))
    model = ctx.fresh_model()
    rng_devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
    for mode in ("eval", "train"):  # some models (e.g. torchvision's Inception) give other outputs in training
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=rng_devices):  # dropout must not shift the RNG
                out = apply_model(model.train(mode == "train"), batch_parts(batch)[0])
        except MODEL_ERRORS as err:
            raise UserError(f"{what} does not fit {cfg.dataset}: a forward pass of 2 samples failed "
                            f"({first_line(err)}); choose a model for {cfg.dataset}") from None
        if not ctx.data.class_labels:  # no class scores to check: the loss below must apply
            continue
        out = logits_of(out)
        gave = f"outputs of shape {tuple(out.shape)}" if isinstance(out, Tensor) else f"a {type(out).__name__}"
        if not isinstance(out, Tensor) or tuple(out.shape) != (2, ctx.data.num_classes):
            raise UserError(f"{what} does not fit {cfg.dataset}: 2 samples gave {gave} in {mode} mode, not "
                            f"(2, {ctx.data.num_classes}); choose a model for {cfg.dataset}")
    with torch.no_grad(), torch.random.fork_rng(devices=rng_devices):
        check_loss_fits(ctx, model, batch)
    check_prune_exclude(cfg.prune_exclude, model, cfg.prune_biases)
    check_pruning_schedule(cfg, model)
    recurrent = next((type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase)), None)
    if cfg.engine == "vectorized" and recurrent is not None:  # torch.func.vmap has no batching rule for them
        raise UserError(f"--engine vectorized cannot stack the particles of {what}: torch.func.vmap does not batch "
                        f"its {recurrent} layers; use --engine sequential")


def check_loss_fits(ctx: Context, model: nn.Module, batch: Any) -> None:
    """Refuse, in one line naming ``--loss``, a loss that gives no scalar on a ``batch`` of two training samples
    (``--loss mse`` on class labels among them: :func:`training.optim.mse_loss`; ``--loss model`` on a model
    that computes no loss: :func:`training.optim.model_loss`)."""
    if ctx.hyper.loss is None and ctx.data.class_labels:
        return
    try:
        value = batch_loss(model, batch, ctx.hyper.loss)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"--loss {ctx.cfg.loss} fails on 2 samples of {ctx.cfg.dataset} ({type(err).__name__}: "
                        f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})") from None
    if not isinstance(value, Tensor) or value.dim() != 0 or not value.is_floating_point():
        raise UserError(f"--loss {ctx.cfg.loss} must give a floating-point scalar tensor, not "
                        f"{getattr(value, 'shape', type(value).__name__)}")


def check_scheduler(ctx: Context) -> None:
    """Refuse, in one line naming the schedule, a user's schedule that fails or gives no learning rate at the
    first step of a particle (:data:`training.schedules.SchedulerFn`)."""
    epochs = ctx.cfg.epochs - ctx.cfg.swa_epochs()
    if ctx.scheduler is None or not epochs:
        return
    try:
        value = ctx.scheduler(0, 0, steps_per_epoch(ctx.data, ctx.cfg.batch_size), epochs)
    except Exception as err:
        raise UserError(f"the schedule {fn_name(ctx.scheduler)} fails at epoch 0 step 0 ({type(err).__name__}: "
                        f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})") from None
    checked_rate(ctx.scheduler, value, 0, 0)


def check_prune_exclude(patterns: Sequence[str], model: nn.Module, biases: bool = False) -> None:
    """Refuse ``--prune-exclude`` patterns that match no prunable weight of ``model``, or that leave none."""
    names = prunable_names(model, biases=biases)
    for pattern in patterns:
        if not any(re.search(pattern, n) for n in names):
            raise UserError(f"--prune-exclude {pattern!r} matches none of the model's prunable weights "
                            f"({', '.join(names[:4])}{' ...' if len(names) > 4 else ''})")
    if names and not prunable_names(model, patterns, biases=biases):
        raise UserError("--prune-exclude leaves no prunable weight; exclude fewer")
    if not names:
        raise UserError(f"--model {type(model).__name__} has no prunable weight (conv, linear, recurrent or attention)")


def check_pruning_schedule(cfg: RunConfig, model: nn.Module) -> None:
    """Refuse ``--cycles`` that prune past the floor: a cycle that would remove no weight (round(P n) = 0, so
    the density stops following (1 - P)^k) or keep fewer weights than there are pruned tensors (then at
    least one layer has none left and the network's output no longer depends on its input)."""
    params = dict(model.named_parameters())
    names = prunable_names(model, cfg.prune_exclude, biases=cfg.prune_biases)
    layerwise = CRITERIA[cfg.prune_method].layerwise  # each layer (a weight with its bias) pruned on its own
    kept = kept_per_cycle([sum(params[n].numel() for n in group) for group in layer_groups(names)],
                          cycle_ratios(cfg.prune_schedule, cfg.prune_ratio, cfg.cycles), cfg.cycles, layerwise)
    what = f"--cycles {cfg.cycles} --prune-ratio {cfg.prune_ratio}"
    for k in range(1, len(kept)):
        if kept[k] == kept[k - 1]:
            raise UserError(f"{what}: cycle {k} would prune no weight ({kept[k - 1]:,} left, too few for the ratio "
                            f"to remove one); use at most --cycles {k}")
        if kept[k] < len(names):
            raise UserError(f"{what}: cycle {k} would keep {kept[k]:,} of {kept[0]:,} prunable weights, fewer than "
                            f"one per pruned tensor ({len(names)}), so a layer would have none; use at most "
                            f"--cycles {k}")
