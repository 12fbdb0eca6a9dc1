"""The learning-rate schedule of a particle: ``--schedule``, ``--schedule-kwargs``, ``--warmup-epochs`` (and the
Python API's ``scheduler_fn``).

A unit of E epochs of S steps each takes step t = epoch * S + step at the rate eta_t. Its last E_swa epochs are
SWA's window (Izmailov et al. 2018; E_swa = 0 without SWA), so D = (E - E_swa) S steps are scheduled; the first
W = S * ``warmup_epochs`` of them warm up, and u = t - W counts the steps after the warm-up:

* t >= D (the SWA window): eta_t = eta_end, the constant ``--swa-lr`` (0 without SWA, where t < D always);
* t < W (linear warm-up, Goyal et al. 2017): eta_t = eta (t + 1) / W, from eta / W at the first step to eta;
* ``cosine`` (the default; the annealing of Loshchilov & Hutter 2017 without restarts):
  eta_t = eta_end + (eta - eta_end) (1 + cos(pi u / (D - W))) / 2, from eta down to eta_end;
* ``constant``: eta_t = eta;
* ``step`` (``--schedule-kwargs '{"every": K, "factor": g}'``): eta_t = eta g^floor(u / (K S)), the rate times g
  every K epochs (g = 0.1 unless given);
* ``PACKAGE.MODULE:CALLABLE`` (or ``scheduler_fn``): eta_t = fn(epoch, step, S, E - E_swa) (:data:`SchedulerFn`),
  which warms up, if at all, in its own code.

eta is ``--lr``. The ticket's dense training and the fine-tuning cycles of ``--rewind none`` keep their constant
rate (``constant`` without warm-up). The rate is a function of (epoch, step) alone, so a resumed particle
continues on the same schedule.

Example:
    >>> s = Schedule(epochs=4, steps_per_epoch=10, lr=0.1, end_lr=0.05, swa_epochs=1)
    >>> s.lr_at(0, 0), round(s.lr_at(1, 5), 4), s.lr_at(3, 0)  # cosine from 0.1; SWA's 0.05 in the last epoch
    (0.1, 0.075, 0.05)
    >>> step = Schedule(4, 10, 0.1, swa_epochs=0, shape="step", every=2, factor=0.5, warmup_epochs=1)
    >>> [step.lr_at(0, 0), step.lr_at(0, 9), step.lr_at(2, 9), step.lr_at(3, 0)]
    [0.01, 0.1, 0.1, 0.05]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.artifacts.jsonfile import json_object_flag
from core.errors import UserError
from core.imports import import_callable, is_import_path

SchedulerFn = Callable[[int, int, int, int], float]
"""``scheduler_fn(epoch, step, steps_per_epoch, epochs) -> lr``: the rate of a step (both counted from 0) of the
``epochs`` before SWA's window (all of them without SWA); the window keeps ``--swa-lr``."""

SCHEDULES = ("cosine", "constant", "step")
DEFAULT_SCHEDULE = "cosine"
STEP_FACTOR = 0.1  # step's factor unless --schedule-kwargs gives one (torch's StepLR gamma)


@dataclass(frozen=True)
class Schedule:
    """Per-step learning rate and the SWA window of a unit (the module docstring gives the maths).

    ``shape``: one of :data:`SCHEDULES`; ``every`` and ``factor``: the ``step`` schedule's K and g; ``lr_fn``:
    a user's :data:`SchedulerFn`, which takes the place of ``shape`` and of the warm-up.
    """

    epochs: int
    steps_per_epoch: int
    lr: float
    end_lr: float = 0.0
    swa_epochs: int = 0
    shape: str = DEFAULT_SCHEDULE
    warmup_epochs: int = 0
    every: int = 1
    factor: float = STEP_FACTOR
    lr_fn: SchedulerFn | None = None

    def lr_at(self, epoch: int, step: int) -> float:
        """The rate of step ``step`` (from 0) of epoch ``epoch`` (from 0)."""
        scheduled = (self.epochs - self.swa_epochs) * self.steps_per_epoch
        t = epoch * self.steps_per_epoch + step
        if t >= scheduled:
            return self.end_lr
        if self.lr_fn is not None:
            return checked_rate(self.lr_fn, self.lr_fn(epoch, step, self.steps_per_epoch,
                                                        self.epochs - self.swa_epochs), epoch, step)
        warmup = self.warmup_epochs * self.steps_per_epoch
        if t < warmup:
            return self.lr * (t + 1) / warmup
        u, length = t - warmup, scheduled - warmup
        if self.shape == "constant":
            return self.lr
        if self.shape == "step":
            return self.lr * self.factor ** (u // (self.every * self.steps_per_epoch))
        return self.end_lr + (self.lr - self.end_lr) * 0.5 * (1.0 + math.cos(math.pi * u / length))

    def in_swa(self, epoch: int) -> bool:
        return epoch >= self.epochs - self.swa_epochs


def fn_name(fn: SchedulerFn) -> str:
    """``MODULE:QUALNAME`` of a user's schedule, for messages."""
    return f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', type(fn).__name__)}"


def checked_rate(fn: SchedulerFn, value: Any, epoch: int, step: int) -> float:
    """``value``, what ``fn`` gave for (``epoch``, ``step``), as a learning rate, else one :class:`UserError` line
    naming the schedule."""
    try:
        lr = float(value)
    except (TypeError, ValueError):
        lr = math.nan
    if not (math.isfinite(lr) and lr >= 0.0):
        raise UserError(f"the schedule {fn_name(fn)} gave {value!r} at epoch {epoch} step {step}; it must return a "
                        "finite learning rate >= 0")
    return lr


def check_schedule(name: str, kwargs_text: str, warmup_epochs: int, scheduled_epochs: int) -> dict[str, Any]:
    """The ``step`` schedule's ``{"every": K, "factor": g}`` (empty for the others), the flags checked: else one
    :class:`UserError` line naming the flag. ``scheduled_epochs``: the epochs before SWA's window."""
    if name not in SCHEDULES and not is_import_path(name):
        raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)} or PACKAGE.MODULE:CALLABLE, not {name!r}")
    kwargs = json_object_flag(kwargs_text, "--schedule-kwargs", '{"every": 30, "factor": 0.1}')
    if name != "step" and kwargs:
        raise UserError(f"--schedule-kwargs sets --schedule step's every and factor; --schedule {name} takes none")
    if name == "step":
        unknown = sorted(set(kwargs) - {"every", "factor"})
        if unknown:
            raise UserError(f"--schedule-kwargs: --schedule step takes every and factor, not {unknown[0]!r}")
        every, factor = kwargs.get("every"), kwargs.setdefault("factor", STEP_FACTOR)
        if every is None:
            raise UserError("--schedule-kwargs: --schedule step needs every, the epochs between two steps, e.g. "
                            "'{\"every\": 30, \"factor\": 0.1}'")
        if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
            raise UserError(f"--schedule-kwargs: every must be an integer >= 1, not {every!r}")
        if not (isinstance(factor, int | float) and not isinstance(factor, bool) and math.isfinite(factor)
                and factor > 0):
            raise UserError(f"--schedule-kwargs: factor must be a positive number, not {factor!r}")
    if warmup_epochs and is_import_path(name):
        raise UserError(f"--warmup-epochs applies to {', '.join(SCHEDULES)}; --schedule {name} warms up in its own "
                        "code")
    if warmup_epochs > scheduled_epochs:
        raise UserError(f"--warmup-epochs {warmup_epochs} exceeds the epochs the schedule shapes ({scheduled_epochs}: "
                        f"--epochs less SWA's window); give at most {scheduled_epochs}")
    return kwargs


def scheduler_fn(name: str, *, trust_code: bool = True) -> SchedulerFn | None:
    """The user's :data:`SchedulerFn` that ``--schedule PACKAGE.MODULE:CALLABLE`` names; None for the built-in
    schedules."""
    if name in SCHEDULES:
        return None
    return import_callable(name, "schedule", trust_code=trust_code, source=f"--schedule {name}")
