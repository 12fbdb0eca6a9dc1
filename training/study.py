"""``python -m training.study --out DIR``: the whole SWAMP experiment grid as resumable sub-runs.

Every method of the plan (:mod:`training.study_plan`: IMP, SWA only, particles only, SWAMP with each N,
SWAMP+, one-shot pruning) runs for every seed as an ordinary run directory ``DIR/runs/METHOD-sSEED``
(docs/format.md, section 2), so every landscape tool reads it; ``DIR/study.json``
(:mod:`training.study_manifest`, written atomically after every change) lists them with their status.
The same command continues an interrupted study: finished sub-runs are skipped, unfinished ones resume
at their last finished epoch.

Where the sub-runs run is the ``--launcher`` (:mod:`training.launchers`): in this process or ``--jobs K``
worker processes (``processes``, the default), or one submitit job each, on this machine
(``submitit-local``) or on a Slurm cluster (``slurm``, docs/cluster.md). A sub-run whose job is still
queued or running is never submitted twice; ``python -m training.study DIR --status``
(:mod:`training.study_status`) shows where each one stands.

With ``--models`` or ``--rewinds`` the directory is a family of such studies, one per (model, rewind point)
cell (:mod:`training.study_family`); the flags themselves are read in :mod:`training.study_args`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.artifacts.lock import exclusive
from training.artifacts.ownership import check_out_text, check_usable_directory
from training.errors import UserError, run_cli
from training.launchers import SUBMITIT, Hooks, LauncherOptions, launcher_options, make_launcher
from training.study_args import build_parser, parse_list, parse_seeds, plan_from_args
from training.study_manifest import (
    FAMILY_MANIFEST,
    FORMAT,
    MANIFEST,
    JobRecord,
    SubRun,
    check_same_plan,
    cycles_done,
    read_manifest,
    saved_runs,
    settled,
    sub_runs,
    write_manifest,
)
from training.study_plan import (
    ROLES,
    STUDY_CYCLES,
    Method,
    StudyPlan,
    check_plan,
    default_plan,
    environment_failure,
    grid,
    quick_plan,
    run_sub_run,
    sub_config,
)
from training.workers import WorkerPool, check_jobs, worker_threads

if TYPE_CHECKING:
    from training.study_family import FamilyPlan

__all__ = ["FORMAT", "MANIFEST", "ROLES", "STUDY_CYCLES", "Method", "OpenStudy", "ProcessesLauncher", "StudyPlan",
           "SubRun", "build_parser", "check_plan", "check_same_plan", "cycles_done", "default_plan",
           "environment_failure", "grid", "main", "open_study", "parse_list", "parse_seeds", "parse_study",
           "plan_from_args", "quick_plan", "read_manifest", "run_study", "run_sub_run", "sub_config", "sub_runs",
           "summary", "write_manifest"]


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
    from training.submitit_launcher import job_states

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


def check_study_args(args: argparse.Namespace) -> tuple[argparse.Namespace, StudyPlan | FamilyPlan, dict[str, Any]]:
    """The parsed flags of a study to run, checked: the plan (a :class:`FamilyPlan` with ``--models`` or
    ``--rewinds``), the runtime settings, and ``args.launch`` (the :class:`LauncherOptions`); writes nothing."""
    if args.study is not None:
        raise UserError(f"python -m training.study: the study directory is --out DIR; a bare {args.study!r} is "
                        "taken only with --status (see --help)")
    if args.out is None:
        raise UserError("python -m training.study: the following arguments are required: --out (see --help)")
    args.launch = launcher_options(args)
    runtime = {k: getattr(args, k) for k in ("data_dir", "device", "progress", "download")
               if getattr(args, k) is not None}
    plan = plan_from_args(args)
    if args.models is None and args.rewinds is None:
        check_plan(plan, runtime, args.launch.name)
        return args, plan, runtime
    from training.study_family import check_family, family_from_args  # it builds on this module

    family = family_from_args(args, plan)
    check_family(family, runtime, args.launch.name)
    return args, family, runtime


def parse_study(argv: Sequence[str] | None) -> tuple[argparse.Namespace, StudyPlan | FamilyPlan, dict[str, Any]]:
    """The flags, the checked plan (or family of studies) and the runtime settings of ``python -m training.study``
    (the launcher's settings in ``args.launch``); writes nothing."""
    return check_study_args(build_parser().parse_args(argv))


def summary(kind: str, root: str | Path, runs: Sequence[tuple[str, str]], launch: LauncherOptions) -> tuple[str, int]:
    """The closing line of a study command over ``runs`` (``(name, status)`` pairs) of the ``kind`` (``study`` or
    ``family``) ``root``, and its exit status: 0 once every sub-run is done, or, without waiting, submitted."""
    running = [name for name, status in runs if status == "running"]
    rest = [name for name, status in runs if status not in ("done", "running")]
    waited = launch.name not in SUBMITIT or launch.wait
    line = (f"{kind} {root}: {len(runs) - len(rest) - len(running)}/{len(runs)} sub-runs done"
            + (f"; running as jobs: {', '.join(running)}" if running else "")
            + (f"; not done: {', '.join(rest)}" if rest and waited else "")
            + (f"; not submitted yet (--jobs {launch.jobs} at once): {', '.join(rest)}" if rest and not waited
               else "")
            + (f"; follow with python -m training.study {root} --status" if running else ""))
    return line, 1 if waited and (rest or running) else 0  # without waiting, submitting is the success


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.status:
        from training.study_status import family_status, format_family_status, format_status, study_status

        if args.study is not None and args.out is not None and Path(args.study) != Path(args.out):
            raise UserError(f"--status: give the study directory once, not both {args.study} and --out {args.out}")
        root = args.study or args.out
        if root is None:
            raise UserError("--status needs the study directory: python -m training.study DIR --status")
        family = (Path(root) / FAMILY_MANIFEST).is_file()
        print(format_family_status(family_status(root)) if family else format_status(study_status(root)))
        return 0
    args, plan, runtime = check_study_args(args)
    if isinstance(plan, StudyPlan):
        runs = run_study(args.out, plan, runtime, launch=args.launch)
        line, status = summary("study", args.out, [(r.name, r.status) for r in runs], args.launch)
    else:
        from training.study_family import run_family

        cells = run_family(args.out, plan, runtime, launch=args.launch)
        line, status = summary("family", args.out, [(f"{cell}/{r.name}", r.status) for cell, runs in cells.items()
                                                    for r in runs], args.launch)
    print(line)
    return status


if __name__ == "__main__":
    sys.exit(run_cli(main, rerun="rerun the same command to continue (finished sub-runs are kept)"))
