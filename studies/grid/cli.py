"""``python -m studies.grid --out DIR``: the whole SWAMP experiment grid as resumable sub-runs.

Every method of the plan (:mod:`studies.grid.plan`: IMP, SWA only, particles only, SWAMP with each N,
SWAMP+, one-shot pruning) runs for every seed as an ordinary run directory ``DIR/runs/METHOD-sSEED``
(docs/format.md, section 2), so every landscape tool reads it; ``DIR/study.json``
(:mod:`studies.grid.manifest`, written atomically after every change) lists them with their status.
The same command continues an interrupted study: finished sub-runs are skipped, unfinished ones resume
at their last finished epoch.

Where the sub-runs run is the ``--launcher`` (:mod:`studies.grid.launchers`): in this process or ``--jobs K``
worker processes (``processes``, the default), or one submitit job each, on this machine
(``submitit-local``) or on a Slurm cluster (``slurm``, docs/cluster.md). A sub-run whose job is still
queued or running is never submitted twice; ``python -m studies.grid DIR --status``
(:mod:`studies.grid.status`) shows where each one stands.

With ``--models`` or ``--rewinds`` the directory is a family of such studies, one per (model, rewind point)
cell (:mod:`studies.grid.family`); the flags themselves are read in :mod:`studies.grid.args`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError, run_cli
from studies.grid.args import build_parser, parse_list, parse_seeds, plan_from_args
from studies.grid.launchers import SUBMITIT, LauncherOptions, launcher_options
from studies.grid.manifest import (
    FAMILY_MANIFEST,
    FORMAT,
    MANIFEST,
    SubRun,
    check_same_plan,
    cycles_done,
    read_manifest,
    sub_runs,
    write_manifest,
)
from studies.grid.plan import (
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
from studies.grid.runner import OpenStudy, ProcessesLauncher, open_study, run_study

if TYPE_CHECKING:
    from studies.grid.family import FamilyPlan

__all__ = ["FORMAT", "MANIFEST", "ROLES", "STUDY_CYCLES", "Method", "OpenStudy", "ProcessesLauncher", "StudyPlan",
           "SubRun", "build_parser", "check_plan", "check_same_plan", "cycles_done", "default_plan",
           "environment_failure", "grid", "main", "open_study", "parse_list", "parse_seeds", "parse_study",
           "plan_from_args", "quick_plan", "read_manifest", "run_study", "run_sub_run", "sub_config", "sub_runs",
           "summary", "write_manifest"]


def check_study_args(args: argparse.Namespace) -> tuple[argparse.Namespace, StudyPlan | FamilyPlan, dict[str, Any]]:
    """The parsed flags of a study to run, checked: the plan (a :class:`FamilyPlan` with ``--models`` or
    ``--rewinds``), the runtime settings, and ``args.launch`` (the :class:`LauncherOptions`); writes nothing."""
    if args.study is not None:
        raise UserError(f"python -m studies.grid: the study directory is --out DIR; a bare {args.study!r} is "
                        "taken only with --status (see --help)")
    if args.out is None:
        raise UserError("python -m studies.grid: the following arguments are required: --out (see --help)")
    args.launch = launcher_options(args)
    runtime = {k: getattr(args, k) for k in ("data_dir", "device", "progress", "download")
               if getattr(args, k) is not None}
    plan = plan_from_args(args)
    if args.models is None and args.rewinds is None:
        check_plan(plan, runtime, args.launch.name)
        return args, plan, runtime
    from studies.grid.family import check_family, family_from_args  # it builds on this module

    family = family_from_args(args, plan)
    check_family(family, runtime, args.launch.name)
    return args, family, runtime


def parse_study(argv: Sequence[str] | None) -> tuple[argparse.Namespace, StudyPlan | FamilyPlan, dict[str, Any]]:
    """The flags, the checked plan (or family of studies) and the runtime settings of ``python -m studies.grid``
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
            + (f"; follow with python -m studies.grid {root} --status" if running else ""))
    return line, 1 if waited and (rest or running) else 0  # without waiting, submitting is the success


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.status:
        from studies.grid.status import family_status, format_family_status, format_status, study_status

        if args.study is not None and args.out is not None and Path(args.study) != Path(args.out):
            raise UserError(f"--status: give the study directory once, not both {args.study} and --out {args.out}")
        root = args.study or args.out
        if root is None:
            raise UserError("--status needs the study directory: python -m studies.grid DIR --status")
        family = (Path(root) / FAMILY_MANIFEST).is_file()
        print(format_family_status(family_status(root)) if family else format_status(study_status(root)))
        return 0
    args, plan, runtime = check_study_args(args)
    if isinstance(plan, StudyPlan):
        runs = run_study(args.out, plan, runtime, launch=args.launch)
        line, status = summary("study", args.out, [(r.name, r.status) for r in runs], args.launch)
    else:
        from studies.grid.family import run_family

        cells = run_family(args.out, plan, runtime, launch=args.launch)
        line, status = summary("family", args.out, [(f"{cell}/{r.name}", r.status) for cell, runs in cells.items()
                                                    for r in runs], args.launch)
    print(line)
    return status


if __name__ == "__main__":
    sys.exit(run_cli(main, rerun="rerun the same command to continue (finished sub-runs are kept)"))
