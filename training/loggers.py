"""Experiment logging (``--log tensorboard|wandb|mlflow``): the run's scalars, written beside its own files.

Off by default (``--log none``): a run's record is its directory (``metrics.json``, ``results.csv``).
With a logger, the same numbers also go to the tool a researcher watches, under ``OUT/logs/``:

* per cycle (step = cycle index): every numeric column of ``results.csv`` as ``cycle/<column>``
  (density, sparsity, SWAMP average / particle mean and std / ensemble test accuracy and loss,
  average train loss, particles, seconds), so the logged curves equal ``results.csv``;
* per epoch of a training unit (step = epoch within the unit): ``epoch/<unit>/train_loss`` (mean
  training loss over the epoch's batches) and ``epoch/<unit>/lr`` (the learning rate of its last step).
  A unit is the ticket or one particle (``cycle_00_particle_01``); the ``vectorized`` engine trains a
  stack of particles as one unit (``cycle_00_particles_0_1_2_3``), whose loss is the mean over the stack.
  Under torchrun only rank 0 logs, and only what it trains itself.

No logger sends anything over the network by itself: wandb starts in offline mode and mlflow writes to
a local ``file:`` store unless the user's environment (``WANDB_MODE``, ``MLFLOW_TRACKING_URI``) says
otherwise. tensorboard, wandb and mlflow are optional packages; a missing one is one line saying how to
install it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from core.errors import UserError

LOG_DIR = "logs"
INSTALL = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class Logger(Protocol):
    """Where scalars go: ``log({tag: value}, step)``, then ``close()``."""

    def log(self, scalars: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    """``--log none``: logs nothing."""

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Event files under ``OUT/logs/tensorboard`` (read them with ``tensorboard --logdir OUT/logs``)."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / LOG_DIR / "tensorboard"))

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A wandb run in ``OUT/logs/wandb``, offline unless ``WANDB_MODE`` says otherwise."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any]):
        import wandb

        folder = run_dir / LOG_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(dir=str(folder), config=dict(config), name=run_dir.name,
                              mode=os.environ.get("WANDB_MODE", "offline"), settings=wandb.Settings(silent=True))

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        # wandb's own step must only grow; the toolkit's step goes in as a value of its own
        self.run.log({**scalars, "step": step})

    def close(self) -> None:
        self.run.finish()


class MlflowLogger:
    """An mlflow run in the file store ``OUT/logs/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any]):
        import mlflow

        self.mlflow = mlflow
        if "MLFLOW_TRACKING_URI" not in os.environ:
            mlflow.set_tracking_uri((run_dir / LOG_DIR / "mlruns").resolve().as_uri())
        mlflow.start_run(run_name=run_dir.name)
        mlflow.log_params({k: str(v)[:250] for k, v in config.items()})

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self.mlflow.log_metrics({k.replace("/", "."): float(v) for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


LOGGERS = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger, "mlflow": MlflowLogger}


def check_logger(kind: str) -> None:
    """Refuse (:class:`UserError`) a ``--log`` whose package is not installed, before the run starts."""
    if kind == "none":
        return
    module = "torch.utils.tensorboard" if kind == "tensorboard" else kind
    try:
        importlib.import_module(module)
    except ImportError:
        raise UserError(f"--log {kind} needs the {INSTALL[kind]} package: pip install {INSTALL[kind]}") from None


def open_logger(kind: str, run_dir: Path, config: Mapping[str, Any]) -> Logger:
    """The ``--log`` logger of a run in ``run_dir`` (a :class:`NullLogger` for ``none``).

    Args:
        kind: ``none``, ``tensorboard``, ``wandb`` or ``mlflow``.
        run_dir: the run directory; the logger writes under ``run_dir/logs``.
        config: the run's hyperparameters, recorded where the logger keeps parameters.

    Returns:
        The logger; call its ``close()`` when the run ends.

    Example:
        >>> open_logger("none", Path("runs/x"), {}).log({"cycle/density": 1.0}, 0)
    """
    if kind == "none":
        return NullLogger()
    check_logger(kind)
    return LOGGERS[kind](run_dir, config)


def cycle_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The per-cycle scalars of one ``results.csv`` row: each numeric column but ``cycle`` as ``cycle/<column>``."""
    return {f"cycle/{k}": float(v) for k, v in row.items() if k != "cycle" and isinstance(v, (int, float))}
