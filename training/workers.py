"""Worker processes for ``--jobs K`` (the study driver and its analysis step).

Workers are *spawned* (never forked: a forked torch process can deadlock in OpenMP) and each gets
``1/K`` of this process's torch threads, so K workers use the cores one process would.
"""

from __future__ import annotations

import multiprocessing
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


def spawn_pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
