"""A SWAMP / IMP run: matching ticket, then pruning cycles of N particles each.

Algorithm (SWAMP, Choi et al. 2024, Algorithm 1; IMP with rewinding, Frankle et al. 2020):

1. theta_0 <- seeded init; train it densely for ``rewind_epochs`` -> matching ticket theta_T.
2. For cycle k = 0, 1, ...: mask m_k (all ones for k = 0, density (1-P)^k after).
   Each particle n starts from theta_T * m_k (or from the previous solution, ``--rewind lr|none``),
   trains ``epochs`` epochs on its own batch order (seed derived from (seed, k, n)), SWA on its last
   epochs. The cycle's solution is theta_bar = (1/N) sum_n theta_n with BatchNorm recomputed;
   m_{k+1} = prune(theta_bar, m_k).

With N = 1 and no SWA this is IMP with weight rewinding; the solution is then the particle itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from training import __version__
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import RunConfig, check_data_dir
from training.data import Dataset, dataset_spec, load_dataset, subsample_indices
from training.device import resolve_device
from training.engines import LOCAL, Collective, particle_unit, run_session, select_engine
from training.errors import UserError
from training.evaluate import ensemble_log_probs, evaluate, predict, score
from training.models import build_model, model_spec
from training.ownership import check_out_text
from training.pruning import dense_masks, density, next_masks
from training.rundir import (
    RunDir,
    load_train_state,
    prepared,
    read_metrics,
    save_train_state,
    write_metrics,
    write_results,
)
from training.seeds import derive_seed, generator
from training.train import Hyper, Schedule, steps_per_epoch, train_particle

TRAIN_EVAL_SAMPLES = 10_000  # train loss is measured on at most this many (seeded) training samples


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
    collective: Collective = LOCAL  # averaging and BN recalibration (across ranks under torchrun)

    def fresh_model(self, state: dict[str, Tensor] | None = None) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.cfg.seed, "init"))
            model = build_model(self.model_spec)
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
            model.compile()
        state = train_particle(
            model, masks, self.data, schedule, self.hyper, generator(self.cfg.seed, seed_stream, *indices),
            resume=load_train_state(resume_path, self.device, model.state_dict(), epochs=schedule.epochs),
            on_epoch=lambda s: save_train_state(resume_path, s),
            bn_batches=lambda: self.bn_batches(generator(self.cfg.seed, "bn", *indices)),
            label=unit.replace("_", " "), progress=bar.update if bar is not None else None)
        return state

    def bn_batches(self, gen: torch.Generator) -> Iterable[tuple[Tensor, Tensor]]:
        """Un-augmented training batches for BN recalibration (``--bn-samples`` of them, 0 = all)."""
        indices = subsample_indices(self.data.size("train"), self.cfg.bn_samples, gen)
        return self.data.eval_batches("train", self.cfg.eval_batch_size, indices)

    def finish_unit(self, unit: str) -> None:
        self.run.resume_state(unit).unlink(missing_ok=True)


def build_context(cfg: RunConfig) -> Context:
    """Device, data and model of the run, each checked before anything of the run is written."""
    device = resolve_device(cfg.device)
    check_data_dir(cfg)
    spec = dataset_spec(cfg)
    data = load_dataset(spec, device, download=cfg.download)
    mspec = model_spec(cfg.model, data.num_classes, cfg.model_kwargs_dict)
    hyper = Hyper(cfg.batch_size, cfg.momentum, cfg.weight_decay, cfg.eval_batch_size, cfg.amp)
    ctx = Context(cfg, RunDir(Path(cfg.out)), device, data, mspec, spec, hyper, cfg.progress)
    check_model(ctx)
    return ctx


# Float32 copies of every weight that training holds at least: weights, gradients, momentum, SWA average.
TRAINING_COPIES = 4
MODEL_ERRORS = (RuntimeError, ValueError, TypeError, UserError)


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
        with torch.device("meta"):
            numel = sum(t.numel() for t in build_model(ctx.model_spec).state_dict().values())
    except MODEL_ERRORS as err:
        raise UserError(f"{what}: the model cannot be built ({first_line(err)}); check --model-kwargs") from None
    need, memory = TRAINING_COPIES * 4 * numel, device_memory(ctx.device)
    if need > memory:
        raise UserError(f"{what}: {numel:,} weights need at least {need / 2**30:,.1f} GiB to train, more than the "
                        f"{memory / 2**30:,.1f} GiB of {ctx.device}; choose a smaller model")
    x, _ = next(iter(ctx.data.eval_batches("train", 2, torch.arange(2))))
    try:
        model = ctx.fresh_model().eval()
        with torch.no_grad():
            shape = tuple(model(x).shape)
    except MODEL_ERRORS as err:
        raise UserError(f"{what} does not fit {cfg.dataset}: a forward pass of 2 samples failed "
                        f"({first_line(err)}); choose a model for {cfg.dataset}") from None
    if shape != (2, ctx.data.num_classes):
        raise UserError(f"{what} does not fit {cfg.dataset}: 2 samples gave outputs of shape {shape}, not "
                        f"(2, {ctx.data.num_classes}); choose a model for {cfg.dataset}")


def run_config_json(ctx: Context) -> dict[str, Any]:
    return {**ctx.cfg.to_json(), "package_version": __version__, "torch_version": torch.__version__,
            "model_spec": ctx.model_spec, "dataset_spec": ctx.data_spec}


def cycle_schedule(ctx: Context, cycle: int) -> Schedule:
    cfg = ctx.cfg
    spe = steps_per_epoch(ctx.data, cfg.batch_size)
    swa_epochs = cfg.swa_epochs()
    if cfg.rewind == "none" and cycle > 0:
        return Schedule(cfg.epochs, spe, cfg.finetune_lr, cfg.swa_lr if swa_epochs else cfg.finetune_lr,
                        swa_epochs, constant=True)
    return Schedule(cfg.epochs, spe, cfg.lr, cfg.swa_lr if swa_epochs else 0.0, swa_epochs)


def saved_state(path: Path, remedy: str) -> dict[str, Tensor]:
    """The state of a checkpoint this run wrote earlier; a damaged file is a :class:`UserError` saying
    ``remedy`` (how to recover)."""
    try:
        return load_checkpoint(path).state
    except UserError as err:
        raise UserError(f"{err}; {remedy}") from None


def make_ticket(ctx: Context) -> dict[str, Tensor]:
    """Dense training for ``rewind_epochs`` at constant ``lr`` from the seeded initialisation."""
    if ctx.run.ticket.is_file():
        ctx.finish_unit("ticket")
        return saved_state(ctx.run.ticket, f"delete {ctx.run.ticket} to train the ticket again, and rerun with "
                                           "--resume")
    model = ctx.fresh_model()
    schedule = Schedule(ctx.cfg.rewind_epochs, steps_per_epoch(ctx.data, ctx.cfg.batch_size), ctx.cfg.lr,
                        constant=True)
    state = ctx.train_unit("ticket", model, {}, schedule, "ticket") if ctx.cfg.rewind_epochs else model.state_dict()
    ctx.save(ctx.run.ticket, state, dense_masks(model), "ticket")
    ctx.finish_unit("ticket")
    return state


def train_eval_indices(ctx: Context) -> Tensor | None:
    return subsample_indices(ctx.data.size("train"), TRAIN_EVAL_SAMPLES, generator(ctx.cfg.seed, "train_eval"))


def assess(ctx: Context, model: nn.Module) -> tuple[dict[str, float], Tensor, Tensor]:
    """Test loss/acc and train loss of ``model``, plus its test log-probabilities for the ensemble."""
    log_probs, labels = predict(model, ctx.data.eval_batches("test", ctx.hyper.eval_batch_size))
    test = score(log_probs, labels)
    train = evaluate(model, ctx.data.eval_batches("train", ctx.hyper.eval_batch_size, train_eval_indices(ctx)))
    return {"test_loss": test.loss, "test_acc": test.acc, "train_loss": train.loss}, log_probs, labels


def run_cycle(ctx: Context, cycle: int, start: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Any]:
    """Train the cycle's particles, average them, evaluate everything and write the cycle's files."""
    began = time.perf_counter()
    cfg, run = ctx.cfg, ctx.run
    n = cfg.particles_in_cycle(cycle)
    schedule = cycle_schedule(ctx, cycle)
    states: dict[int, dict[str, Tensor]] = {}
    for p in range(n):
        if run.particle(cycle, p).is_file():
            states[p] = saved_state(run.particle(cycle, p), f"delete {run.particle(cycle, p)} and rerun with "
                                    "--resume to train that particle again")
            ctx.finish_unit(particle_unit(cycle, p))  # a kill may have come between save and clean-up

    def done(p: int, state: dict[str, Tensor]) -> None:
        ctx.save(run.particle(cycle, p), state, masks, "particle", cycle, p)
        ctx.finish_unit(particle_unit(cycle, p))
        states[p] = state

    bar = tqdm(total=n * cfg.epochs, initial=len(states) * cfg.epochs, desc=f"cycle {cycle:02d} ({n} particles)",
               leave=False, disable=_disabled(ctx), unit="epoch")
    select_engine(cfg.engine)(ctx, cycle, start, masks, schedule, [p for p in range(n) if p not in states], done,
                              bar)
    bar.close()
    reports, member_log_probs = [], []
    for p in range(n):
        report, log_probs, labels = assess(ctx, ctx.fresh_model(states[p]))
        reports.append({"particle": p, **report})
        member_log_probs.append(log_probs)
    avg_model = ctx.fresh_model(ctx.collective.average(ctx, [states[p] for p in range(n)]))
    if n > 1:
        ctx.collective.recalibrate(ctx, avg_model, cycle)
    avg_state = {k: v.detach().clone() for k, v in avg_model.state_dict().items()}
    ctx.save(run.average(cycle), avg_state, masks, "average", cycle)
    average, _, _ = assess(ctx, avg_model)
    ens = score(ensemble_log_probs(member_log_probs), labels)
    d = density(masks)
    metrics = {"cycle": cycle, "density": d, "sparsity": 1.0 - d, "particles": reports, "average": average,
               "ensemble": {"test_loss": ens.loss, "test_acc": ens.acc}, "seconds": time.perf_counter() - began}
    write_metrics(run, cycle, metrics)
    return metrics


def _disabled(ctx: Context) -> bool | None:
    """tqdm's ``disable``: None means "only on a terminal"."""
    return None if ctx.show_progress is None else not ctx.show_progress


MaskRule = Callable[[int, dict[str, Tensor], dict[str, Tensor]], dict[str, Tensor]]
"""``rule(k, solution_k, masks_k) -> masks_{k+1}``: the mask of the cycle after ``k``."""


def iterative_rule(cfg: RunConfig) -> MaskRule:
    """IMP's rule: prune ``prune_ratio`` of the weights that survive in cycle k's solution."""
    return lambda cycle, solution, masks: next_masks(cfg.prune_method, solution, masks, cfg.prune_ratio,
                                                     generator(cfg.seed, "prune", cycle))


CycleDone = Callable[[dict[str, Any]], None]
"""``on_cycle(metrics)``: called with each cycle's metrics (those of ``metrics.json``) once it is finished."""


def run_swamp(cfg: RunConfig, mask_rule: MaskRule | None = None, extra_config: dict[str, Any] | None = None,
              on_cycle: CycleDone | None = None) -> list[dict[str, Any]]:
    """Execute (or resume) the run ``cfg`` describes; returns every cycle's metrics.

    ``mask_rule`` (default :func:`iterative_rule`) lets other pruning schedules (one-shot,
    :mod:`training.oneshot`) reuse the cycle loop; ``extra_config`` is stored in ``config.json``.
    ``on_cycle`` sees each cycle's metrics as soon as the cycle's files are written, in cycle order,
    cycles found finished on ``--resume`` included, so a caller can report progress that survives an
    interrupt. Under torchrun only rank 0 calls ``on_cycle`` and returns the metrics (see
    :mod:`training.engines.cluster`).
    """
    return run_session(cfg, build_context, lambda ctx: run_cycles(ctx, mask_rule, extra_config, on_cycle))


def run_cycles(ctx: Context, mask_rule: MaskRule | None, extra_config: dict[str, Any] | None,
               on_cycle: CycleDone | None = None) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    check_out_text(cfg.out)
    with prepared(ctx.run, {**run_config_json(ctx), **(extra_config or {})}, cfg.resume, cfg.overwrite):
        return _cycles(ctx, mask_rule, on_cycle)


def _cycles(ctx: Context, mask_rule: MaskRule | None, on_cycle: CycleDone | None) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    rule = mask_rule or iterative_rule(cfg)
    ticket = make_ticket(ctx)
    masks = {k: v.to(ctx.device) for k, v in dense_masks(ctx.fresh_model()).items()}
    start = ticket
    all_metrics: list[dict[str, Any]] = []
    for cycle in tqdm(range(cfg.cycles), desc="cycles", disable=_disabled(ctx), unit="cycle"):
        metrics = read_metrics(ctx.run, cycle) if ctx.run.average(cycle).is_file() else None
        if metrics is None:
            metrics = run_cycle(ctx, cycle, start, masks)
        all_metrics.append(metrics)
        write_results(ctx.run, all_metrics)
        if on_cycle is not None:
            on_cycle(metrics)
        saved = saved_state(ctx.run.average(cycle), f"delete {ctx.run.average(cycle)} and rerun with --resume to "
                            "average the cycle again")
        solution = {k: v.to(ctx.device) for k, v in saved.items()}
        masks = {k: v.to(ctx.device) for k, v in rule(cycle, solution, masks).items()}
        start = ticket if cfg.rewind == "ticket" else solution
    return all_metrics
