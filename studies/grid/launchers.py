"""Where a study's sub-runs (or an analysis's measurements) run: the ``--launcher`` registry.

A launcher (:class:`Launcher`) takes the sub-runs that still need running and runs them, calling the
study's driver back (:class:`Hooks`) when each one starts and ends; the driver alone writes
``study.json``. :data:`LAUNCHERS` is the one registry; a launcher's module is imported only when it is
chosen (the submitit ones need the optional ``submitit``: ``pip install -e ".[cluster]"``).

* ``processes`` (:class:`studies.grid.runner.ProcessesLauncher`, the default): in this process, or ``--jobs K``
  at once in spawned worker processes of this machine.
* ``submitit-local`` (:class:`studies.grid.submitit_launcher.LocalLauncher`): one submitit job per sub-run
  through submitit's ``LocalExecutor``, at most ``--jobs K`` at once: the code path of ``slurm`` on one
  machine, which is what the tests run.
* ``slurm`` (:class:`studies.grid.submitit_launcher.SlurmLauncher`): one Slurm job per sub-run (job arrays,
  at most ``--slurm-array-parallelism`` running at once), requeued when preempted or timed out.

Each sub-run is an ordinary resumable run directory with its own lock, so a job that dies or is
requeued continues where the run stopped, and no sub-run is ever written by two processes at once.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from core.artifacts.jsonfile import BadJSON, JSONTooLarge, parse_json
from core.errors import UserError
from studies.grid.workers import check_jobs

if TYPE_CHECKING:
    from studies.grid.manifest import JobRecord, SubRun

# name -> (module, class); every launcher is built from the flags' LauncherOptions
LAUNCHERS: dict[str, tuple[str, str]] = {
    "processes": ("studies.grid.runner", "ProcessesLauncher"),
    "submitit-local": ("studies.grid.submitit_launcher", "LocalLauncher"),
    "slurm": ("studies.grid.submitit_launcher", "SlurmLauncher"),
}
SUBMITIT = ("submitit-local", "slurm")
INSTALL = 'pip install -e ".[cluster]"'
# SlurmExecutor parameters that have their own flag
OWN_FLAG = {"partition": "--slurm-partition", "time": "--slurm-time", "gpus_per_node": "--slurm-gpus-per-job",
            "ntasks_per_node": "--slurm-gpus-per-job", "num_gpus": "--slurm-gpus-per-job",
            "gpus_per_task": "--slurm-gpus-per-job", "array_parallelism": "--slurm-array-parallelism"}
SLURM_ONLY = ("partition", "array_parallelism", "slurm_args")
_TIME = re.compile(r"(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)")


@dataclass(frozen=True)
class LauncherOptions:
    """The ``--launcher`` flags: which launcher, and its settings.

    ``jobs``: sub-runs at once on this machine (``processes``, ``submitit-local``); ``wait``: whether the
    command waits for its jobs (submitit launchers; without, it submits and returns); ``partition``,
    ``gpus_per_job`` (GPUs, one task each, of a job; a sub-run gets at most one per particle; None: 1 on
    Slurm, on one machine 1 if it has a GPU, else 0), ``minutes`` (each job's time limit; a job that
    reaches it is requeued), ``array_parallelism`` (jobs of an array running at once) and ``slurm_args``
    (further ``SlurmExecutor.update_parameters`` keywords) are Slurm's.
    """

    name: str = "processes"
    jobs: int = 1
    wait: bool = True
    partition: str | None = None
    gpus_per_job: int | None = None
    minutes: int | None = None
    array_parallelism: int | None = None
    slurm_args: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Hooks:
    """What a launcher calls in the study's driver: ``start(r, job)`` when sub-run ``r`` starts (or its job
    is submitted; returns the start time), ``finish(r, began, status, error)`` when it ends,
    ``settle(r)`` -> ``(status, error)`` of a sub-run whose job has ended; ``arguments(r)``: the arguments
    of :func:`studies.grid.plan.run_sub_run` for ``r``; ``root``: the study directory."""

    root: Path
    start: Callable[[SubRun, JobRecord | None], float]
    finish: Callable[[SubRun, float, str, str | None], None]
    settle: Callable[[SubRun], tuple[str, str | None]]
    arguments: Callable[[SubRun], tuple]


class Launcher(Protocol):
    """Runs ``todo`` (sub-runs to start) and, when it waits, follows ``following`` (sub-runs whose jobs an
    earlier command submitted and which still run), reporting each through ``hooks``."""

    def launch(self, todo: list[SubRun], following: list[SubRun], hooks: Hooks) -> None: ...


def make_launcher(options: LauncherOptions) -> Launcher:
    """The launcher ``options.name`` (a key of :data:`LAUNCHERS`) built with ``options``."""
    module, name = LAUNCHERS[options.name]
    return getattr(importlib.import_module(module), name)(options)


def require_submitit(flag: str) -> ModuleType:
    """The ``submitit`` module; without it one line saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise UserError(f"{flag} needs the optional package submitit: {INSTALL}") from None
    return submitit


def add_launcher_flags(parser: argparse.ArgumentParser, unit: str) -> None:
    """``--launcher`` and the ``--slurm-*`` flags (read back by :func:`launcher_options`), for commands that
    run one job per ``unit``."""
    parser.add_argument("--launcher", default="processes", choices=list(LAUNCHERS),
                        help=f"where each {unit} runs: processes (this machine, --jobs at once; default), "
                             f"submitit-local (one submitit job per {unit} on this machine: the Slurm code path) "
                             f"or slurm (one Slurm job per {unit}; needs {INSTALL}); docs/cluster.md")
    parser.add_argument("--slurm-partition", default=None, metavar="NAME", help="Slurm partition of the jobs")
    parser.add_argument("--slurm-gpus-per-job", type=int, default=None, metavar="G",
                        help="GPUs of each job, one task per GPU (a study's sub-run gets at most one per particle "
                             "and trains them with the distributed engine; an analysis job uses one; 0: CPU jobs; "
                             "default 1 on Slurm, with submitit-local 1 if this machine has a GPU)")
    parser.add_argument("--slurm-time", default=None, metavar="TIME",
                        help="time limit of each job, minutes or [D-]HH:MM:SS (default 24:00:00); a job that "
                             "reaches it is requeued and resumes")
    parser.add_argument("--slurm-array-parallelism", type=int, default=None, metavar="K",
                        help="at most K jobs of each of the study's job arrays (one per GPU count) running at "
                             "once (default: as many as Slurm allows)")
    parser.add_argument("--slurm-arg", action="append", default=None, metavar="KEY=VALUE",
                        help="any other parameter of submitit's SlurmExecutor (sbatch's option, with _ for -), "
                             "e.g. account=myproject, cpus_per_task=8, mem=32G, qos=normal; repeat for more")


def check_device(name: str, launcher: str) -> str:
    """``--device`` for ``launcher``: resolved now where this machine does the work (an absent GPU is one
    line); on Slurm checked by name only, as the job resolves it on its own node."""
    import torch

    from core.device import resolve_device

    if launcher != "slurm":
        return str(resolve_device(name))
    try:
        kind = "auto" if name == "auto" else torch.device(name).type
    except RuntimeError:
        kind = None
    if kind not in ("auto", "cpu", "cuda"):
        resolve_device(name)  # raises its one line for this name
    return name


def parse_minutes(text: str) -> int:
    """``--slurm-time``: whole minutes (rounded up) of ``MINUTES`` or ``[D-]HH:MM:SS``, at least 1."""
    match = _TIME.fullmatch(text.strip())
    if text.strip().isdigit():
        minutes = int(text)
    elif match:
        days, hours, mins, secs = (int(g or 0) for g in match.groups())
        minutes = days * 1440 + hours * 60 + mins + (secs > 0)
    else:
        raise UserError(f"--slurm-time takes minutes or [D-]HH:MM:SS, such as 1440 or 1-00:00:00, not {text!r}")
    if minutes < 1:
        raise UserError(f"--slurm-time must be at least one minute, not {text!r}")
    return minutes


def parse_slurm_args(items: Sequence[str], valid: set[str]) -> tuple[tuple[str, Any], ...]:
    """``--slurm-arg KEY=VALUE`` items as ``(key, value)`` pairs; a VALUE that is JSON (``8``, ``true``,
    ``["module load cuda"]``) is decoded, any other is a string. ``valid``: the SlurmExecutor's parameters."""
    pairs: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or not text.strip():
            raise UserError(f"--slurm-arg takes KEY=VALUE, such as account=myproject, not {item!r}")
        if key in OWN_FLAG:
            raise UserError(f"--slurm-arg {key}: use {OWN_FLAG[key]} instead")
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else "; see submitit's SlurmExecutor parameters"
            raise UserError(f"--slurm-arg {key}: submitit's SlurmExecutor has no parameter {key!r}{hint}")
        if key in pairs:
            raise UserError(f"--slurm-arg gives {key} twice")
        try:
            pairs[key] = parse_json(text)
        except JSONTooLarge as err:
            raise UserError(f"--slurm-arg {key}: its JSON value cannot be read ({err})") from None
        except BadJSON:
            pairs[key] = text
    return tuple(pairs.items())


def launcher_options(args: argparse.Namespace) -> LauncherOptions:
    """The checked :class:`LauncherOptions` of parsed flags (``add_launcher_flags`` and ``--jobs``); one
    line naming the flag for a setting that does not apply to the launcher or a bad value. Writes nothing."""
    check_jobs(args.jobs)
    name, wait = args.launcher, getattr(args, "wait", None)
    given = {"partition": args.slurm_partition, "gpus_per_job": args.slurm_gpus_per_job,
             "minutes": args.slurm_time, "array_parallelism": args.slurm_array_parallelism,
             "slurm_args": args.slurm_arg}
    flags = {"partition": "--slurm-partition", "gpus_per_job": "--slurm-gpus-per-job", "minutes": "--slurm-time",
             "array_parallelism": "--slurm-array-parallelism", "slurm_args": "--slurm-arg"}
    used = [key for key, value in given.items() if value is not None]
    if name == "processes" and (used or wait is False):
        flag = flags[used[0]] if used else "--no-wait"
        raise UserError(f"{flag} applies to --launcher submitit-local or slurm, not to processes")
    if name == "submitit-local" and any(key in SLURM_ONLY for key in used):
        raise UserError(f"{flags[next(k for k in used if k in SLURM_ONLY)]} applies to --launcher slurm only")
    if name == "slurm" and args.jobs != 1:
        raise UserError("--jobs applies to --launcher processes and submitit-local; on Slurm, "
                        "--slurm-array-parallelism limits the jobs running at once")
    if name not in SUBMITIT:
        return LauncherOptions(name, args.jobs)
    submitit = require_submitit(f"--launcher {name}")
    if args.slurm_gpus_per_job is not None and args.slurm_gpus_per_job < 0:
        raise UserError(f"--slurm-gpus-per-job must be 0 or more, not {args.slurm_gpus_per_job}")
    if args.slurm_array_parallelism is not None and args.slurm_array_parallelism < 1:
        raise UserError(f"--slurm-array-parallelism must be at least 1, not {args.slurm_array_parallelism}")
    if args.slurm_partition is not None and not args.slurm_partition.strip():
        raise UserError("--slurm-partition must name a partition, not an empty string")
    minutes = parse_minutes(args.slurm_time) if args.slurm_time is not None else None
    slurm_args = parse_slurm_args(args.slurm_arg or (), submitit.SlurmExecutor._valid_parameters())
    if name == "slurm" and shutil.which("srun") is None:
        raise UserError("--launcher slurm runs on a Slurm cluster, but srun is not on this machine's PATH; "
                        "use --launcher submitit-local to try the Slurm code path here")
    return LauncherOptions(name, args.jobs, wait is not False, args.slurm_partition, args.slurm_gpus_per_job,
                           minutes, args.slurm_array_parallelism, slurm_args)
