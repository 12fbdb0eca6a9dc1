"""Worker processes for ``--jobs K`` (the study driver and its analysis step).

Workers are *spawned* (never forked: a forked torch process can deadlock in OpenMP) and each gets
``1/K`` of this process's torch threads, so K workers use the cores one process would.

A Ctrl-C in a terminal reaches every process of the group, the workers too. The parent prints the one
``interrupted`` line (:func:`training.errors.run_cli`); a worker ends quietly (:func:`quiet_interrupt`)
instead of printing the traceback of wherever the signal found it.
"""

from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor

from training.errors import UserError


def check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")


def worker_threads(jobs: int) -> int:
    """Torch threads for each of ``jobs`` workers."""
    import torch

    return max(1, torch.get_num_threads() // jobs)


def set_threads(threads: int | None) -> None:
    """Called first in a worker: its share of the threads."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _exit_interrupted(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def quiet_interrupt() -> None:
    """A worker's SIGINT handler: ``SystemExit(130)`` instead of ``KeyboardInterrupt``. Idle, the worker ends
    without a traceback (multiprocessing prints one for every other exception); in a task, the exception
    unwinds it as a KeyboardInterrupt would (``finally`` blocks run, atomic writes leave no partial file) and
    goes back to the parent, which is ending anyway."""
    signal.signal(signal.SIGINT, _exit_interrupted)


def spawn_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes that end quietly on Ctrl-C (:func:`quiet_interrupt`)."""
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=quiet_interrupt)
