"""Worker processes for ``--jobs K`` (the study driver, its analysis step and the controls).

Workers are *spawned* (never forked: a forked torch process can deadlock in OpenMP) and each gets
``1/K`` of this process's torch threads, so K workers use the cores one process would.

Signals (:class:`WorkerPool`). A Ctrl-C in a terminal reaches every process of the group. The workers ignore
SIGINT from their first instruction (they are started with SIGINT blocked, and ignore it before they unblock
it), so they never print the traceback of wherever the signal found them; the command alone is interrupted
and stops the pool: it cancels the tasks not started and sends SIGTERM to its workers. SIGTERM (from the pool,
``kill`` or a scheduler) ends a worker's task as an interrupt would (``finally`` blocks run, atomic writes
leave no partial file): the task raises :class:`core.errors.Terminated`, which goes back to the command,
and an idle worker exits at once (status 143), quietly. Every worker therefore ends by running its exit
handlers, which release the named semaphores it made (a tqdm lock, a data loader's queues); a worker killed
outright would leave them to Python's resource tracker, which warns ``leaked semaphore objects`` as the
command exits. The command prints its one ``interrupted`` (``terminated``) line
(:func:`core.errors.run_cli`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import wait as wait_for
from typing import Any

from core.errors import Terminated, UserError

# Seconds the stopped workers get to end their task before they are killed.
STOP_GRACE = 20.0
_MASKS = hasattr(signal, "pthread_sigmask")  # POSIX only: elsewhere a worker ignores SIGINT from its initializer on
_task_running = False  # in a worker: whether a task runs now
_terminated = False  # in a worker: whether SIGTERM came (the tasks queued for it then end at once)


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


def _on_terminate(signum: int, frame: object) -> None:
    global _terminated
    # once: a second SIGTERM (the pool's, after the group's) must not interrupt the exit handlers, also when it
    # arrived before this handler could ignore it
    if _terminated:
        return
    _terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _task_running:
        raise Terminated  # the task unwinds as after an interrupt and reports it; the pool then ends the worker
    _exit_now(128 + signum)


def _exit_now(code: int) -> None:
    """End an idle worker at once, through multiprocessing's exit handlers (which release its semaphores), as
    a worker ends after its last task. Not by an exception: the pool's own code around a task (sending its
    result) catches every exception and would keep the worker waiting for work."""
    from multiprocessing import util

    util._exit_function()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def worker_signals() -> None:
    """A worker's first call: ignore SIGINT (a pending one, from a Ctrl-C while it started, is dropped), then
    unblock it; SIGTERM ends the task as an interrupt (:class:`Terminated`) or the idle worker quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _MASKS:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGTERM, _on_terminate)


def _run_task(fn: Callable[..., Any], *args: Any) -> Any:
    global _task_running
    if _terminated:  # queued for this worker before the pool stopped: not started
        raise Terminated
    _task_running = True
    try:
        return fn(*args)
    finally:
        _task_running = False


@contextmanager
def _signals_blocked(*signums: int) -> Iterator[None]:
    """This thread with ``signums`` blocked: a process it starts inherits the mask; a signal that arrives
    meanwhile is delivered when the block ends."""
    if not _MASKS:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(signums))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM without effect while the pool stops (in the main thread): the exception that stops
    it is on its way already, and the stop is bounded (:data:`STOP_GRACE`)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def _running(processes: list[Any], timeout: float) -> list[Any]:
    """Those of ``processes`` that have not exited after waiting up to ``timeout`` seconds for one of them."""
    ended = set(wait_for([p.sentinel for p in processes], timeout)) if processes else set()
    return [p for p in processes if p.sentinel not in ended]


class WorkerPool:
    """``jobs`` spawned worker processes, to be used as a context manager; :meth:`submit` as
    :class:`concurrent.futures.ProcessPoolExecutor`'s. Leaving the block normally waits for the tasks; leaving
    it by an exception (an interrupt, an error) stops the pool (:meth:`stop`) and lets the exception go on.

    Example:
        >>> with WorkerPool(1) as pool:  # doctest: +SKIP
        ...     pool.submit(abs, -1).result()
        1
    """

    def __init__(self, jobs: int) -> None:
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=worker_signals)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """``fn(*args)`` in a worker (a new worker starts here, with SIGINT blocked until it ignores it)."""
        with _signals_blocked(signal.SIGINT):
            return self._pool.submit(_run_task, fn, *args)

    def stop(self) -> None:
        """Cancel the tasks not started, end the running ones (SIGTERM: they unwind as after an interrupt), and
        wait for every worker to exit (killed after :data:`STOP_GRACE` seconds if one does not)."""
        with _signals_deferred():
            workers = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            # whether a worker has exited is read from its sentinel, never by reaping it: the pool's thread reaps
            # them, and a pid reaped elsewhere may be reused by then
            running = _running(workers, 0)
            for process in running:
                process.terminate()
            deadline = time.monotonic() + STOP_GRACE
            while running and time.monotonic() < deadline:
                running = _running(running, deadline - time.monotonic())
            for process in running:
                process.kill()
            self._pool.shutdown(wait=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: object) -> None:
        if kind is not None:
            self.stop()
            return
        try:
            self._pool.shutdown(wait=True)
        except BaseException:
            self.stop()
            raise
