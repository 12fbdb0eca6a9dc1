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

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core import __version__
from core.artifacts.checkpoint import load_checkpoint
from core.artifacts.ownership import check_out_text
from core.artifacts.rundir import particle_unit, read_metrics, results_row, write_metrics, write_results
from core.data import Dataset, subsample_indices
from core.errors import UserError
from core.evaluate import ensemble_log_probs, evaluate, mean_loss, predict, score
from core.models.meta import on_meta
from core.progress import tqdm
from core.pruning import coverage, cycle_ratios, dense_masks, density, next_masks
from core.seeds import generator
from training.config import RunConfig
from training.context import Context, ModelFn, build_context
from training.engines import select_engine
from training.engines.session import run_session
from training.loggers import cycle_scalars, open_logger
from training.optim import LossFn, OptimizerFn, batch_loss
from training.resume import prepared
from training.schedules import Schedule, SchedulerFn, check_schedule
from training.train import StepInfo, steps_per_epoch

TRAIN_EVAL_SAMPLES = 10_000  # train loss is measured on at most this many (seeded) training samples


def run_config_json(ctx: Context) -> dict[str, Any]:
    return {**ctx.cfg.to_json(), "package_version": __version__, "torch_version": torch.__version__,
            "model_spec": ctx.model_spec, "dataset_spec": ctx.data_spec}


def cycle_schedule(ctx: Context, cycle: int) -> Schedule:
    """The particles' schedule of ``cycle``: ``--schedule`` (:mod:`training.schedules`), or the constant
    ``--finetune-lr`` of the cycles after the first with ``--rewind none``."""
    cfg = ctx.cfg
    spe = steps_per_epoch(ctx.data, cfg.batch_size)
    swa_epochs = cfg.swa_epochs()
    if cfg.rewind == "none" and cycle > 0:
        return Schedule(cfg.epochs, spe, cfg.finetune_lr, cfg.swa_lr if swa_epochs else cfg.finetune_lr,
                        swa_epochs, shape="constant")
    step = check_schedule(cfg.schedule, cfg.schedule_kwargs, cfg.warmup_epochs, cfg.epochs - swa_epochs)
    return Schedule(cfg.epochs, spe, cfg.lr, cfg.swa_lr if swa_epochs else 0.0, swa_epochs, cfg.schedule,
                    cfg.warmup_epochs, **step, lr_fn=ctx.scheduler)


def saved_state(ctx: Context, path: Path, remedy: str) -> dict[str, Tensor]:
    """The state of a checkpoint this run wrote earlier, checked against the run's model (the model is
    never rebuilt from the file's metadata: the run's own builder, e.g. the Python API's ``model_fn``,
    is what the file must fit); a damaged file is a :class:`UserError` saying ``remedy`` (how to recover)."""
    try:
        state = load_checkpoint(path).state
        expected = on_meta(ctx.builder).state_dict()
        odd = sorted(set(state) ^ set(expected))
        if odd:
            raise UserError(f"{path} does not hold the run's model (tensor {odd[0]})")
        for key, want in expected.items():
            if state[key].shape != want.shape or state[key].dtype != want.dtype:
                raise UserError(f"{path}: tensor {key} is {tuple(state[key].shape)} {state[key].dtype}, but the "
                                f"run's model has {tuple(want.shape)} {want.dtype}")
    except UserError as err:
        raise UserError(f"{err}; {remedy}") from None
    # files load on the CPU, freshly trained states live on the run's device (a resumed cycle mixes the two)
    return {k: v.to(ctx.device) for k, v in state.items()}


def make_ticket(ctx: Context) -> dict[str, Tensor]:
    """Dense training for ``rewind_epochs`` at constant ``lr`` from the seeded initialisation."""
    if ctx.run.ticket.is_file():
        ctx.finish_unit("ticket")
        return saved_state(ctx, ctx.run.ticket, f"delete {ctx.run.ticket} to train the ticket again, and rerun with "
                                           "--resume")
    model = ctx.fresh_model()
    schedule = Schedule(ctx.cfg.rewind_epochs, steps_per_epoch(ctx.data, ctx.cfg.batch_size), ctx.cfg.lr,
                        shape="constant")
    state = ctx.train_unit("ticket", model, {}, schedule, "ticket") if ctx.cfg.rewind_epochs else model.state_dict()
    ctx.save(ctx.run.ticket, state, dense_masks(model, ctx.cfg.prune_exclude, biases=ctx.cfg.prune_biases), "ticket")
    ctx.finish_unit("ticket")
    return state


def train_eval_indices(ctx: Context) -> Tensor | None:
    return subsample_indices(ctx.data.size("train"), TRAIN_EVAL_SAMPLES, generator(ctx.cfg.seed, "train_eval"))


def assess(ctx: Context, model: nn.Module) -> tuple[dict[str, float | None], Tensor | None, Tensor | None]:
    """Test loss/acc and train loss of ``model``, plus its test log-probabilities for the ensemble.

    Class labels: the cross-entropy and accuracy of the outputs' class logits. Other targets: the mean of the
    run's loss (:func:`core.evaluate.mean_loss`), ``test_acc`` None and no log-probabilities (no ensemble).
    """
    test_batches = ctx.data.eval_batches("test", ctx.hyper.eval_batch_size)
    train_batches = ctx.data.eval_batches("train", ctx.hyper.eval_batch_size, train_eval_indices(ctx))
    if not ctx.data.class_labels:
        def loss_of(m: nn.Module, batch: Any) -> Tensor:
            return batch_loss(m, batch, ctx.hyper.loss)

        test, train = mean_loss(model, test_batches, loss_of), mean_loss(model, train_batches, loss_of)
        return {"test_loss": test.loss, "test_acc": None, "train_loss": train.loss}, None, None
    log_probs, labels = predict(model, test_batches)
    test = score(log_probs, labels)
    train = evaluate(model, train_batches)
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
            states[p] = saved_state(ctx, run.particle(cycle, p), f"delete {run.particle(cycle, p)} and rerun with "
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
    # the ensemble averages the members' class probabilities: for other targets it has no value (null)
    ensemble: dict[str, float | None] = {"test_loss": None, "test_acc": None}
    if labels is not None:
        ens = score(ensemble_log_probs(member_log_probs), labels)
        ensemble = {"test_loss": ens.loss, "test_acc": ens.acc}
    d = density(masks)
    metrics = {"cycle": cycle, "density": d, "sparsity": 1.0 - d, "particles": reports, "average": average,
               "ensemble": ensemble, "seconds": time.perf_counter() - began}
    write_metrics(run, cycle, metrics)
    return metrics


def _disabled(ctx: Context) -> bool | None:
    """tqdm's ``disable``: None means "only on a terminal"."""
    return None if ctx.show_progress is None else not ctx.show_progress


MaskRule = Callable[[int, dict[str, Tensor], dict[str, Tensor]], dict[str, Tensor]]
"""``rule(k, solution_k, masks_k) -> masks_{k+1}``: the mask of the cycle after ``k``."""


def iterative_rule(cfg: RunConfig) -> MaskRule:
    """IMP's rule: prune the weights that survive in cycle k's solution to the next density of
    ``--prune-schedule`` (the fraction ``prune_ratio`` of them with the default geometric schedule)."""
    ratios = cycle_ratios(cfg.prune_schedule, cfg.prune_ratio, cfg.cycles)

    def rule(cycle: int, solution: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        if cycle >= len(ratios):  # after the last cycle: no cycle trains at the next density
            return masks
        return next_masks(cfg.prune_method, solution, masks, ratios[cycle], generator(cfg.seed, "prune", cycle))

    return rule


CycleDone = Callable[[dict[str, Any]], None]
"""``on_cycle(metrics)``: called with each cycle's metrics (those of ``metrics.json``) once it is finished."""


def run_swamp(cfg: RunConfig, mask_rule: MaskRule | None = None, extra_config: dict[str, Any] | None = None,
              on_cycle: CycleDone | None = None, *, data: Dataset | None = None,
              model_fn: ModelFn | None = None, optimizer_fn: OptimizerFn | None = None,
              loss_fn: LossFn | None = None, scheduler_fn: SchedulerFn | None = None,
              on_step: Callable[[StepInfo], None] | None = None) -> list[dict[str, Any]]:
    """Execute (or resume) the run ``cfg`` describes; returns every cycle's metrics.

    ``mask_rule`` (default :func:`iterative_rule`) lets other pruning schedules (one-shot,
    :mod:`training.oneshot`) reuse the cycle loop; ``extra_config`` is stored in ``config.json``.
    ``on_cycle`` sees each cycle's metrics as soon as the cycle's files are written, in cycle order,
    cycles found finished on ``--resume`` included, so a caller can report progress that survives an
    interrupt. Under torchrun only rank 0 calls ``on_cycle`` and returns the metrics (see
    :mod:`training.engines.cluster`). ``data`` and ``model_fn`` (the Python API, :func:`training.run_swamp`)
    stand in for the dataset and model ``cfg`` names, ``optimizer_fn``, ``loss_fn`` and ``scheduler_fn`` for its
    optimizer, loss and schedule (:func:`training.context.build_context`); ``on_step`` sees every optimizer step.
    """
    return run_session(cfg, lambda c: build_context(c, data, model_fn, optimizer=optimizer_fn, loss=loss_fn,
                                                    scheduler=scheduler_fn, on_step=on_step),
                       lambda ctx: run_cycles(ctx, mask_rule, extra_config, on_cycle))


def run_cycles(ctx: Context, mask_rule: MaskRule | None, extra_config: dict[str, Any] | None,
               on_cycle: CycleDone | None = None) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    check_out_text(cfg.out)
    note_coverage(ctx)
    with prepared(ctx.run, {**run_config_json(ctx), **(extra_config or {})}, cfg.resume, cfg.overwrite):
        ctx.logger = open_logger(cfg.log, ctx.run.root, cfg.hyperparameters())
        try:
            return _cycles(ctx, mask_rule, on_cycle)
        finally:
            ctx.logger.close()


def note_coverage(ctx: Context) -> None:
    """Before training, one line on stderr when weight matrices of the model get no mask although no
    ``--prune-exclude`` pattern chose them (embeddings, a model's own ``nn.Parameter`` matrices): which, and
    what share of all weights the reported sparsity covers (:func:`core.pruning.coverage`)."""
    cov = coverage(on_meta(ctx.builder), ctx.cfg.prune_exclude)
    if cov.dense:
        tqdm.write(f"note: {cov.describe()}", file=sys.stderr)


def _cycles(ctx: Context, mask_rule: MaskRule | None, on_cycle: CycleDone | None) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    rule = mask_rule or iterative_rule(cfg)
    ticket = make_ticket(ctx)
    first = dense_masks(ctx.fresh_model(), ctx.cfg.prune_exclude, biases=ctx.cfg.prune_biases)
    masks = {k: v.to(ctx.device) for k, v in first.items()}
    start = ticket
    all_metrics: list[dict[str, Any]] = []
    for cycle in tqdm(range(cfg.cycles), desc="cycles", disable=_disabled(ctx), unit="cycle"):
        metrics = read_metrics(ctx.run, cycle) if ctx.run.average(cycle).is_file() else None
        if metrics is None:
            metrics = run_cycle(ctx, cycle, start, masks)
            ctx.logger.log(cycle_scalars(results_row(metrics)), cycle)
        all_metrics.append(metrics)
        write_results(ctx.run, all_metrics)
        if on_cycle is not None:
            on_cycle(metrics)
        saved = saved_state(ctx, ctx.run.average(cycle), f"delete {ctx.run.average(cycle)} and rerun with --resume to "
                            "average the cycle again")
        solution = {k: v.to(ctx.device) for k, v in saved.items()}
        masks = {k: v.to(ctx.device) for k, v in rule(cycle, solution, masks).items()}
        start = ticket if cfg.rewind == "ticket" else solution
    return all_metrics
