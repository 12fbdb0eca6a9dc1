"""The Python API: :func:`run_swamp` runs exactly what ``python -m training.swamp`` runs, on any model and data.

It takes the settings of :class:`training.config.RunConfig` (a config, a dict of its fields, or keyword
arguments: the same names as the flags, with underscores), resolves presets as the command line does,
and writes the same run directory (same files, same resume, same engines). On top of what the command
line can name, it accepts the user's own model and data as Python objects:

* ``model_fn(num_classes=..., **model_kwargs)``: a function or class returning a fresh ``nn.Module``
  (its random initialisation is seeded by the run). The run records it by its import name
  (``MODULE:QUALNAME``), so the landscape tools can rebuild it with ``--trust-code`` when that module is
  importable (for a script's own class: pass ``model="PACKAGE.MODULE:CALLABLE"`` naming where it lives).
* ``train_set`` / ``test_set``: map-style datasets of ``(input, label)`` (e.g. torchvision datasets), of
  ``(input, target)`` with tensor targets, or of mappings of named tensors (the Hugging Face convention,
  batched as mappings: :mod:`core.data.records`, :mod:`core.batch`), held on the device or streamed as the
  command line's datasets are (:func:`core.data.from_datasets`). Without class labels the metrics hold the
  run's loss and no accuracy (docs/format.md).
  Such data cannot be rebuilt from a file: analyse the run's checkpoints with the landscape library on
  batches you pass (docs/api.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core.data.names import IN_MEMORY_PREFIX
from core.imports import is_import_path
from training.config import RunConfig, check_saved_code, resolve_config, saved_config
from training.context import ModelFn
from training.optim import LossFn, OptimizerFn
from training.schedules import SchedulerFn
from training.train import StepInfo

FIELDS = frozenset(f.name for f in fields(RunConfig))


@dataclass(frozen=True)
class SwampResult:
    """What a run produced: its directory, its resolved settings and every cycle's ``metrics.json``."""

    run_dir: Path
    config: RunConfig
    cycles: tuple[dict[str, Any], ...]

    @property
    def final(self) -> dict[str, Any]:
        """The last cycle's metrics (the sparsest solution)."""
        return self.cycles[-1]


def _settings(config: RunConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The given settings as RunConfig field values (None = not given), refusing unknown names."""
    if isinstance(config, RunConfig):
        base = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    else:
        base = dict(config or {})
    values = {**base, **overrides}
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise TypeError(f"run_swamp() got an unknown setting {unknown[0]!r}; the settings are RunConfig's fields")
    for key in ("model_kwargs", "dataset_kwargs", "optimizer_kwargs", "schedule_kwargs"):
        if isinstance(values.get(key), Mapping):
            values[key] = json.dumps(dict(values[key]))
    return values


def _callable_name(fn: Callable[..., Any], what: str, setting: str) -> str:
    name = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    if not is_import_path(name):
        raise ValueError(f"{what} {fn!r} has no importable name (a lambda, functools.partial or local function); "
                         f"define it at module level or pass {setting}='PACKAGE.MODULE:CALLABLE'")
    return name


def _refuse_second(fn: Callable[..., Any], given: Any, argument: str, setting: str, what: str) -> None:
    """Refuse the setting ``given`` naming another ``what`` than ``fn``, the ``argument`` (``model_fn``,
    ``optimizer_fn``, ``loss_fn``, ``scheduler_fn``): the run would use ``fn`` but record ``given`` (which the
    landscape tools or a resume would then rebuild). ``given`` may name where ``fn`` lives
    (``PACKAGE.MODULE:CALLABLE``), which only a function of a script (module ``__main__``) needs."""
    if given is None:
        return
    own = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    if not is_import_path(str(given)) or (getattr(fn, "__module__", "__main__") != "__main__" and given != own):
        raise ValueError(f"{argument} and {setting}={given!r} name two {what}; the run would use {argument} but "
                         f"record {given!r}: pass {argument} alone (it is recorded as {own!r}), or {setting} alone")


# The Python objects that stand in for a setting: argument -> (setting, what it is, in the plural).
CALLABLES = {"model_fn": ("model", "models"), "optimizer_fn": ("optimizer", "optimizers"),
             "loss_fn": ("loss", "losses"), "scheduler_fn": ("schedule", "schedules")}


def resolve_run_config(config: RunConfig | Mapping[str, Any] | None = None, *, model_fn: ModelFn | None = None,
                       train_set: Any = None, optimizer_fn: OptimizerFn | None = None, loss_fn: LossFn | None = None,
                       scheduler_fn: SchedulerFn | None = None, **overrides: Any) -> RunConfig:
    """The validated :class:`RunConfig` of :func:`run_swamp`'s arguments (presets resolved as on the command
    line; with ``resume=True`` the run's saved settings are the base)."""
    values = _settings(config, overrides)
    given = {"model_fn": model_fn, "optimizer_fn": optimizer_fn, "loss_fn": loss_fn, "scheduler_fn": scheduler_fn}
    for argument, fn in given.items():
        if fn is not None:
            setting, what = CALLABLES[argument]
            if values.get(setting) == RunConfig.__dataclass_fields__[setting].default:  # e.g. a RunConfig's "sgd"
                values.pop(setting, None)
            _refuse_second(fn, values.get(setting), argument, setting, what)
            values.setdefault(setting, _callable_name(fn, argument, setting))
    if train_set is not None and values.get("dataset") is not None \
            and not str(values["dataset"]).startswith(IN_MEMORY_PREFIX):
        raise ValueError(f"train_set and dataset={values['dataset']!r} name two data sets; the run would train on "
                         "train_set but record the other: pass one of them")
    if train_set is not None and "dataset" not in values:
        values["dataset"] = IN_MEMORY_PREFIX + type(train_set).__qualname__
    args = argparse.Namespace(**{name: values.get(name) for name in FIELDS})
    base = None
    if args.resume and args.out:
        base = saved_config(args.out)
        check_saved_code(base, args, Path(args.out) / "config.json")
    return resolve_config(args, base)


def run_swamp(config: RunConfig | Mapping[str, Any] | None = None, *, model_fn: ModelFn | None = None,
              train_set: Any = None, test_set: Any = None, optimizer_fn: OptimizerFn | None = None,
              loss_fn: LossFn | None = None, scheduler_fn: SchedulerFn | None = None,
              on_cycle: Callable[[dict[str, Any]], None] | None = None,
              on_step: Callable[[StepInfo], None] | None = None, **overrides: Any) -> SwampResult:
    """Run (or, with ``resume=True``, continue) SWAMP or IMP exactly as ``python -m training.swamp`` does.

    Args:
        config: a :class:`RunConfig`, or a dict of its fields; None for the defaults (the MNIST-1D preset).
        model_fn: optional ``model_fn(num_classes=..., **model_kwargs) -> nn.Module`` instead of ``model``.
        train_set, test_set: optional map-style datasets of ``(input, label)``, ``(input, target)`` or mappings
            of named tensors instead of ``dataset`` (both or neither).
        optimizer_fn: optional ``optimizer_fn(params, lr) -> torch.optim.Optimizer`` instead of ``optimizer``
            (recorded by its import name, as ``model_fn``); the schedule sets every group's ``lr`` each step.
        loss_fn: optional ``loss_fn(outputs, targets) -> scalar tensor`` instead of ``loss`` (recorded likewise).
        scheduler_fn: optional ``scheduler_fn(epoch, step, steps_per_epoch, epochs) -> lr`` instead of
            ``schedule`` (recorded likewise): the rate of every step of a particle's ``epochs`` before SWA's
            window (:data:`training.schedules.SchedulerFn`); runs the particles on the sequential engine.
        on_cycle: called with each cycle's metrics as soon as the cycle's files are written.
        on_step: called with a :class:`training.train.StepInfo` (unit, cycle, particle, epoch, step, loss,
            model, optimizer) after every optimizer step; runs the particles on the sequential engine.
        **overrides: RunConfig fields (``particles=4``, ``cycles=3``, ``out="runs/x"``, ...), over ``config``.

    Returns:
        A :class:`SwampResult` with the run directory and every cycle's metrics.

    Raises:
        core.errors.UserError: bad settings, model or data (one line, as the command line prints it).
        TypeError, ValueError: arguments that are not settings, or a ``model_fn`` without an importable name.

    Example:
        >>> from torch import nn
        >>> class Net(nn.Sequential):
        ...     def __init__(self, num_classes):
        ...         super().__init__(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, num_classes))
        >>> result = run_swamp(model_fn=Net, particles=2, cycles=2, epochs=1, rewind_epochs=1,
        ...                    out="runs/my-net", progress=False)  # doctest: +SKIP
        >>> [round(c["density"], 2) for c in result.cycles]  # doctest: +SKIP
        [1.0, 0.8]
    """
    from core.data import from_datasets
    from training.run import run_swamp as run

    if (train_set is None) != (test_set is None):
        raise ValueError("pass both train_set and test_set, or neither")
    cfg = resolve_run_config(config, model_fn=model_fn, train_set=train_set, optimizer_fn=optimizer_fn,
                             loss_fn=loss_fn, scheduler_fn=scheduler_fn, **overrides)
    if on_step is not None:  # the stacked engines have no per-particle step
        if cfg.engine in ("vectorized", "distributed"):
            raise ValueError(f"on_step sees the steps of the sequential engine; engine={cfg.engine!r} has none per "
                             "particle: pass engine='sequential' or 'auto'")
        cfg.engine = "sequential"
    data = None
    if train_set is not None:
        from core.device import resolve_device

        data = from_datasets(train_set, test_set, name=cfg.dataset, device=resolve_device(cfg.device),
                             workers=cfg.workers)
    metrics = run(cfg, on_cycle=on_cycle, data=data, model_fn=model_fn, optimizer_fn=optimizer_fn, loss_fn=loss_fn,
                  scheduler_fn=scheduler_fn, on_step=on_step)
    return SwampResult(Path(cfg.out), cfg, tuple(metrics))
