"""Tasks for the worker pool's tests (tests/test_worker_signals.py), in a module of their own: a spawned worker
imports the module of its task, and this one imports nothing heavy (no torch, no pytest)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path


def hold_a_semaphore(marker: str, seconds: float) -> str:
    """Make a named semaphore (as tqdm's lock or a data loader's queue does: Python's resource tracker then
    watches it), say that the task started (the file ``marker``), then work ``seconds``."""
    lock = multiprocessing.get_context("spawn").RLock()
    Path(marker).write_text("started")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with lock:
            pass
    return marker
