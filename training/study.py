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
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.artifacts.lock import exclusive
from training.artifacts.ownership import check_out_text, check_usable_directory
from training.config import check_seed
from training.errors import ArgumentParser, UserError, run_cli
from training.launchers import SUBMITIT, Hooks, LauncherOptions, add_launcher_flags, launcher_options, make_launcher
from training.presets import PRESETS
from training.study_manifest import (
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
from training.workers import check_jobs, spawn_pool, worker_threads

__all__ = ["FORMAT", "MANIFEST", "ROLES", "STUDY_CYCLES", "Method", "ProcessesLauncher", "StudyPlan", "SubRun",
           "check_plan", "check_same_plan", "cycles_done", "default_plan", "environment_failure", "grid", "main",
           "parse_study", "quick_plan", "read_manifest", "run_study", "run_sub_run", "sub_config", "sub_runs",
           "write_manifest"]


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
    root = check_out_text(root)
    check_usable_directory(root, MANIFEST, "study directory", "--out")  # never write into a user's folder
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root, "study"):  # one process drives a study (its sub-runs lock their own directories)
        return _run(root, plan, runtime or {}, log, options)


def _run(root: Path, plan: StudyPlan, runtime: dict[str, Any], log: Callable[[str], None],
         options: LauncherOptions) -> list[SubRun]:
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
    make_launcher(options).launch(todo, following, hooks)
    return runs


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
    with spawn_pool(jobs) as pool:
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
            for future, (r, began) in active.items():
                future.cancel()
                finish(r, began, "partial", None)
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def build_parser() -> argparse.ArgumentParser:
    full, quick = (", ".join(m.name for m in plan("mnist1d").methods) for plan in (default_plan, quick_plan))
    parser = ArgumentParser(
        prog="python -m training.study",
        description="Run the SWAMP study grid (IMP, SWA only, particles only, SWAMP N = 2/4/8, SWAMP+, one-shot "
                    "magnitude/random pruning) for several seeds into one directory; rerun to continue it. "
                    "The directory's format: docs/format.md; on a Slurm cluster: docs/cluster.md.")
    parser.add_argument("study", nargs="?", default=None, metavar="DIR",
                        help="with --status: the study directory (or give it as --out DIR)")
    parser.add_argument("--out", default=None, metavar="DIR", help="study directory (required)")
    parser.add_argument("--status", action="store_true",
                        help="print where each sub-run stands (done, running with its job, failed with its error, "
                             "pending) and exit; reads only, so it may run beside the study")
    parser.add_argument("--quick", action="store_true",
                        help="a small grid to try the pipeline: seeds 0,1, 2 cycles of 1 epoch, SWAMP with N = 3 "
                             "(under a minute on two CPU cores)")
    parser.add_argument("--preset", default="mnist1d", choices=list(PRESETS),
                        help="hyperparameter preset (default mnist1d)")
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="seeds (default 0,1,2; quick 0,1); a finished study can be extended with more seeds")
    parser.add_argument("--methods", default=None, metavar="NAME,...",
                        help=f"run only these methods (default all: {full}; with --quick: {quick})")
    for name in ("epochs", "cycles", "rewind_epochs"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, metavar="N",
                            help=f"override the plan's {name} (a reduced study; recorded in {MANIFEST})")
    parser.add_argument("--jobs", type=int, default=1, metavar="K",
                        help="train K sub-runs at once on this machine, in separate processes or (submitit-local) "
                             "jobs (e.g. one per CPU core or GPU memory share); each gets 1/K of the torch "
                             "threads (default 1)")
    add_launcher_flags(parser, "sub-run")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                        help="with a submitit launcher: wait for the jobs, reporting each as it ends (default), or "
                             "(--no-wait) submit them and return; rerun the command or use --status to follow")
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="where datasets live (default data)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--download", action="store_true", default=None,
                        help="allow torchvision to download CIFAR (default off)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: only on a terminal)")
    return parser


def _listed(flag: str, text: str, example: str) -> list[str]:
    """The items of a comma-separated flag value; an empty item or a repeated one is refused."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise UserError(f"{flag} takes a comma-separated list such as {example}, not {text!r}")
    repeated = next((item for k, item in enumerate(items) if item in items[:k]), None)
    if repeated is not None:
        raise UserError(f"{flag} lists {repeated!r} twice")
    return items


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds S,S,...``: distinct integers in [0, 2^32)."""
    seeds = []
    for item in _listed("--seeds", text, "0,1,2"):
        try:
            seed = int(item)
        except ValueError:
            raise UserError(f"--seeds takes integers separated by commas, such as 0,1,2; {item!r} is not one") from None
        check_seed(seed, "--seeds")
        seeds.append(seed)
    return tuple(seeds)


def plan_from_args(args: argparse.Namespace) -> StudyPlan:
    """The plan the flags describe (not yet checked against RunConfig: see :func:`check_plan`)."""
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    plan = quick_plan(args.preset, *([seeds] if seeds else [])) if args.quick else \
        default_plan(args.preset, *([seeds] if seeds else []))
    settings = {**plan.settings, **{k: getattr(args, k) for k in ("epochs", "cycles", "rewind_epochs")
                                    if getattr(args, k) is not None}}
    methods = plan.methods
    if args.methods is not None:
        wanted = _listed("--methods", args.methods, "imp,swamp-n4")
        unknown = [name for name in wanted if name not in {m.name for m in methods}]
        if unknown:
            raise UserError(f"unknown method {unknown[0]!r} in --methods; choose from "
                            f"{', '.join(m.name for m in methods)}")
        methods = tuple(m for m in methods if m.name in wanted)
    return StudyPlan(plan.preset, settings, plan.seeds, methods, plan.quick)


def check_study_args(args: argparse.Namespace) -> tuple[argparse.Namespace, StudyPlan, dict[str, Any]]:
    """The parsed flags of a study to run, checked: the plan, the runtime settings, and ``args.launch`` (the
    :class:`LauncherOptions`); writes nothing."""
    if args.study is not None:
        raise UserError(f"python -m training.study: the study directory is --out DIR; a bare {args.study!r} is "
                        "taken only with --status (see --help)")
    if args.out is None:
        raise UserError("python -m training.study: the following arguments are required: --out (see --help)")
    args.launch = launcher_options(args)
    runtime = {k: getattr(args, k) for k in ("data_dir", "device", "progress", "download")
               if getattr(args, k) is not None}
    plan = plan_from_args(args)
    check_plan(plan, runtime, args.launch.name)
    return args, plan, runtime


def parse_study(argv: Sequence[str] | None) -> tuple[argparse.Namespace, StudyPlan, dict[str, Any]]:
    """The flags, the checked plan and the runtime settings of ``python -m training.study`` (the launcher's
    settings in ``args.launch``); writes nothing."""
    return check_study_args(build_parser().parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.status:
        from training.study_status import format_status, study_status

        if args.study is not None and args.out is not None and Path(args.study) != Path(args.out):
            raise UserError(f"--status: give the study directory once, not both {args.study} and --out {args.out}")
        root = args.study or args.out
        if root is None:
            raise UserError("--status needs the study directory: python -m training.study DIR --status")
        print(format_status(study_status(root)))
        return 0
    args, plan, runtime = check_study_args(args)
    runs = run_study(args.out, plan, runtime, launch=args.launch)
    running = [r.name for r in runs if r.status == "running"]
    rest = [r.name for r in runs if r.status not in ("done", "running")]
    waited = args.launch.name not in SUBMITIT or args.launch.wait
    print(f"study {args.out}: {len(runs) - len(rest) - len(running)}/{len(runs)} sub-runs done"
          + (f"; running as jobs: {', '.join(running)}" if running else "")
          + (f"; not done: {', '.join(rest)}" if rest and waited else "")
          + (f"; not submitted yet (--jobs {args.launch.jobs} at once): {', '.join(rest)}" if rest and not waited
             else "")
          + (f"; follow with python -m training.study {args.out} --status" if running else ""))
    return 1 if waited and (rest or running) else 0  # without waiting, submitting is the success


if __name__ == "__main__":
    sys.exit(run_cli(main, rerun="rerun the same command to continue (finished sub-runs are kept)"))
