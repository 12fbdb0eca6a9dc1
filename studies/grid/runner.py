"""Running a study's plan: its directory opened or resumed under its lock, its manifest kept current, and the
sub-runs started in this process or ``--jobs K`` worker processes (:class:`ProcessesLauncher`) or handed to a
batch launcher (:mod:`studies.grid.launchers`). The command line is :mod:`studies.grid.cli`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.artifacts.lock import exclusive
from core.artifacts.ownership import check_out_text, check_usable_directory
from core.errors import UserError
from studies.grid.launchers import Hooks, LauncherOptions, make_launcher
from studies.grid.manifest import (
    FAMILY_MANIFEST,
    MANIFEST,
    JobRecord,
    SubRun,
    check_same_plan,
    cycles_done,
    saved_runs,
    settled,
    sub_runs,
    write_manifest,
)
from studies.grid.plan import (
    StudyPlan,
    environment_failure,
    run_sub_run,
)
from studies.grid.workers import WorkerPool, check_jobs, worker_threads

if TYPE_CHECKING:
    pass

def run_study(root: str | Path, plan: StudyPlan, runtime: dict[str, Any] | None = None,
              log: Callable[[str], None] = print, jobs: int = 1,
              launch: LauncherOptions | None = None) -> list[SubRun]:
    """Run (or continue) every sub-run of ``plan`` under ``root``; returns their status.

    A sub-run that fails is marked ``failed`` with its error and the others still run; an
    :func:`environment_failure` stops the study (the sub-runs it interrupts are left ``partial``). With ``jobs`` > 1
    that many sub-runs train at once, each in its own (spawned) process with ``1/jobs`` of this process's
    torch threads; this process alone writes the manifest. Sub-runs are independent and seeded, so the
    checkpoints are the same as with ``jobs = 1`` (given the same threads per run). ``launch`` (default:
    ``processes`` with ``jobs``) chooses the launcher; with a submitit one, each sub-run still to run is
    one job (a sub-run whose job is queued or running is followed, not submitted again), and without
    ``launch.wait`` the function returns once they are submitted (their status ``running``).

    Example:
        >>> runs = run_study("runs/study-quick", quick_plan("mnist1d"))  # doctest: +SKIP
        >>> [r.status for r in runs][:2]  # doctest: +SKIP
        ['done', 'done']
    """
    options = launch or LauncherOptions(jobs=jobs)
    check_jobs(options.jobs)
    with open_study(root, plan, runtime or {}, log) as study:
        make_launcher(options).launch(study.todo, study.following, study.hooks)
    return study.runs


@dataclass(frozen=True)
class OpenStudy:
    """A study being run: its directory and plan, its sub-runs (where each stands, worked out afresh), those
    to run (``todo``) and those whose jobs of an earlier command still run (``following``), and the
    :class:`Hooks` through which a launcher reports on them (they write ``study.json``)."""

    root: Path
    plan: StudyPlan
    runs: list[SubRun]
    todo: list[SubRun]
    following: list[SubRun]
    hooks: Hooks


@contextmanager
def open_study(root: str | Path, plan: StudyPlan, runtime: dict[str, Any],
               log: Callable[[str], None] = print) -> Iterator[OpenStudy]:
    """Open the study ``root`` to run ``plan`` (creating it; refusing another plan, a family of studies or a
    folder that is not a study) and hold its lock while the block runs: the block launches the sub-runs.

    Example:
        >>> with open_study("runs/study-quick", quick_plan("mnist1d"), {}) as study:  # doctest: +SKIP
        ...     make_launcher(LauncherOptions()).launch(study.todo, study.following, study.hooks)
    """
    root = check_out_text(root)
    if (root / FAMILY_MANIFEST).is_file():
        raise UserError(f"{root} is a family of studies ({FAMILY_MANIFEST}); continue it with the --models and "
                        "--rewinds it was started with, or choose another --out")
    check_usable_directory(root, MANIFEST, "study directory", "--out")  # never write into a user's folder
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root, "study"):  # one process drives a study (its sub-runs lock their own directories)
        yield _prepare(root, plan, runtime, log)


def _prepare(root: Path, plan: StudyPlan, runtime: dict[str, Any], log: Callable[[str], None]) -> OpenStudy:
    from studies.grid.submitit_launcher import job_states

    check_same_plan(root, plan)
    methods = {m.name: m for m in plan.methods}
    cycles = plan.cycles
    runs = sub_runs(plan)
    saved_runs(root, runs)
    states = job_states(root, [r.job for r in runs if r.job is not None and r.cycles_done < cycles])
    for r in runs:
        r.status, r.error = settled(r, cycles, states, root)
    write_manifest(root, plan, runs)
    todo, following = [], []
    for r in runs:
        if r.status == "done":
            log(f"skip {r.name}: finished")
        elif r.status == "running" and r.job is not None:
            log(f"skip {r.name}: running as job {r.job.id}")
            following.append(r)
        else:
            todo.append(r)

    def start(r: SubRun, job: JobRecord | None) -> float:
        r.status, r.error, r.job = "running", None, job
        write_manifest(root, plan, runs)
        log(f"run  {r.name} ({r.cycles_done}/{cycles} cycles done)" + (f": job {job.id}" if job else ""))
        return time.perf_counter()

    def finish(r: SubRun, began: float, status: str, error: str | None) -> None:
        r.status, r.error = status, error
        r.seconds += time.perf_counter() - began
        r.cycles_done = cycles_done(root / r.path)
        if error:
            log(f"FAILED {r.name}: {error}")
        write_manifest(root, plan, runs)

    def settle(r: SubRun) -> tuple[str, str | None]:
        r.cycles_done = cycles_done(root / r.path)
        return settled(r, cycles, {}, root)

    hooks = Hooks(root, start, finish, settle, lambda r: (plan, methods[r.method], r.seed, root / r.path, runtime))
    return OpenStudy(root, plan, runs, todo, following, hooks)


class ProcessesLauncher:
    """``--launcher processes``: the sub-runs one after the other in this process, or ``--jobs K`` at once in
    spawned worker processes (:func:`_run_parallel`). Sub-runs that jobs of an earlier submitit launch
    still run are left to them."""

    def __init__(self, options: LauncherOptions) -> None:
        self.jobs = options.jobs

    def launch(self, todo: list[SubRun], following: list[SubRun], hooks: Hooks) -> None:
        if self.jobs > 1:
            _run_parallel(todo, self.jobs, lambda r: hooks.start(r, None), hooks.finish, hooks.arguments)
            return
        for r in todo:
            began = hooks.start(r, None)
            try:
                status, error = run_sub_run(*hooks.arguments(r))
            except BaseException:
                hooks.finish(r, began, "partial", None)
                raise
            hooks.finish(r, began, status, error)


def _run_parallel(todo: list[SubRun], jobs: int, start: Callable[[SubRun], float],
                  finish: Callable[[SubRun, float, str, str | None], None],
                  arguments: Callable[[SubRun], tuple]) -> None:
    """Keep ``jobs`` worker processes busy with ``todo`` in order; interrupted runs are left ``partial``."""
    from concurrent.futures import FIRST_COMPLETED, wait

    threads = worker_threads(jobs)
    queue, active = list(todo), {}
    with WorkerPool(jobs) as pool:
        try:
            while queue or active:
                while queue and len(active) < jobs:
                    r = queue.pop(0)
                    began = start(r)
                    active[pool.submit(run_sub_run, *arguments(r), threads)] = (r, began)
                done, _ = wait(active, return_when=FIRST_COMPLETED)
                for future in done:
                    r, began = active[future]
                    try:
                        status, error = future.result()
                    except Exception as err:
                        if environment_failure(err):
                            raise  # r is still active: left partial below, with the others
                        # the worker process itself died (e.g. killed for memory)
                        status, error = "failed", f"worker process: {type(err).__name__}: {err}"
                    del active[future]
                    finish(r, began, status, error)
        except BaseException:
            for r, began in active.values():
                finish(r, began, "partial", None)
            raise  # the pool stops its workers
