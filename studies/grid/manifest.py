"""A study's ``study.json``: its plan and every sub-run's state, written atomically after every change.

Each sub-run (:class:`SubRun`) records its status, its finished cycles, its training time and, when a
submitit launcher (:mod:`studies.grid.launchers`) ran it, the job that did (:class:`JobRecord`: the
scheduler's job id and the job's log files). Where a sub-run stands is always worked out again from
the run directory and the job (:func:`settled`), so a manifest that a killed process left behind is
never believed: finished cycles are counted on disk, and a job is running only while its scheduler
says so. The format: docs/format.md, section 5.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from core.artifacts.atomic import atomic_write_text
from core.artifacts.jsonfile import BadJSON, read_json
from core.artifacts.rundir import RunDir
from core.errors import UserError
from studies.grid.plan import StudyPlan

FORMAT = "swamp-study/1"
MANIFEST = "study.json"
FAMILY_MANIFEST = "family.json"  # DIR/family.json: a family of studies (studies.grid.family)
JOBS = "jobs"  # DIR/jobs/: the submitit folder (pickled calls, job logs)
RUNS = "runs"  # DIR/runs/NAME: the sub-runs' run directories
LOG_TAIL = 4096  # bytes read from the end of a log for its last line


@dataclass(frozen=True)
class JobRecord:
    """The submitit job that runs (or ran) a sub-run: its launcher, the scheduler's job id, when it was
    submitted, and its log files (paths relative to the study directory, as the sub-run's ``path``)."""

    launcher: str
    id: str
    submitted: str
    stdout: str
    stderr: str

    @classmethod
    def from_json(cls, body: Any) -> JobRecord | None:
        """The record ``study.json`` holds (None: none, or not a record, as in a manifest of an older version)."""
        names = [f.name for f in fields(cls)]
        if not isinstance(body, dict) or not all(isinstance(body.get(n), str) for n in names):
            return None
        return cls(**{n: body[n] for n in names})


@dataclass
class SubRun:
    """One (method, seed) run directory of the study and where it stands."""

    name: str
    method: str
    seed: int
    particles: int
    path: str
    status: str = "pending"
    cycles_done: int = 0
    seconds: float = 0.0
    error: str | None = None
    job: JobRecord | None = None


def sub_runs(plan: StudyPlan) -> list[SubRun]:
    """Seed-major order, so an interrupted study has complete seeds first."""
    return [SubRun(f"{m.name}-s{s}", m.name, s, m.particles, f"runs/{m.name}-s{s}") for s in plan.seeds
            for m in plan.methods]


def cycles_done(path: str | Path) -> int:
    """Finished cycles of a run directory: how many of cycle_00, cycle_01, ... have their metrics."""
    rundir, k = RunDir(Path(path)), 0
    while rundir.metrics(k).is_file():
        k += 1
    return k


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_manifest(root: Path, plan: StudyPlan, runs: Sequence[SubRun]) -> None:
    body = {"format": FORMAT, **plan.to_json(), "runs": [asdict(r) for r in runs], "updated": now()}
    atomic_write_text(root / MANIFEST, json.dumps(body, indent=2) + "\n")


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The study's ``study.json``; one clear error if there is none."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} does not exist; is {root} a study directory (python -m studies.grid --out DIR)?")
    try:
        manifest = read_json(path)
    except (OSError, BadJSON) as err:
        raise UserError(f"{path} is unreadable ({err}); restore it, or start the study again in another --out") \
            from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list):
        raise UserError(f"{path} is not a study's manifest (a JSON object with a list of runs expected); restore "
                        "it, or start the study again in another --out")
    problem = next((p for entry in manifest["runs"] if (p := _sub_run_problem(entry)) is not None), None)
    if problem is not None:
        raise UserError(f"{path} lists {problem}; a sub-run has a plain name (no '/', not '..'), the path "
                        f"{RUNS}/NAME and job logs under {JOBS}/: restore it, or start the study again in another "
                        "--out")
    return manifest


def plain_name(name: Any) -> bool:
    """Whether ``name``, read from a manifest, may name one directory entry: a string that is not empty, ``.``
    or ``..`` and holds no ``/`` (nor a NUL byte), so that it cannot lead a path out of its folder."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _inside_jobs(log: str) -> bool:
    parts = Path(log).parts
    return "\0" not in log and len(parts) > 1 and parts[0] == JOBS and ".." not in parts


def _sub_run_problem(entry: Any) -> str | None:
    """What makes a ``runs[]`` entry of ``study.json`` unsafe to follow, or None: every reader joins its name and
    path to the study directory and reads its job's logs, so they must stay inside the study."""
    if not isinstance(entry, dict):
        return f"a sub-run that is a JSON {type(entry).__name__}, not an object"
    name, where = entry.get("name"), entry.get("path")
    if not plain_name(name):
        return f"a sub-run named {name!r}"
    if where != f"{RUNS}/{name}":
        return f"the sub-run {name} at {where!r}, not {RUNS}/{name}"
    job = entry.get("job") if isinstance(entry.get("job"), dict) else {}
    log = next((job[k] for k in ("stdout", "stderr") if isinstance(job.get(k), str) and not _inside_jobs(job[k])),
               None)
    return None if log is None else f"the job log {log!r} of the sub-run {name}, outside {JOBS}/"


def restore(r: SubRun, entry: Any) -> None:
    """Fill ``r`` with what ``study.json`` recorded of it (``entry``: status, error, training time, job); a
    value of the wrong type counts as not recorded."""
    entry = entry if isinstance(entry, dict) else {}
    seconds, status, error = entry.get("seconds"), entry.get("status"), entry.get("error")
    r.seconds = float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else 0.0
    r.status = status if isinstance(status, str) else "pending"
    r.error = error if isinstance(error, str) else None
    r.job = JobRecord.from_json(entry.get("job"))


def saved_runs(root: Path, runs: Sequence[SubRun]) -> None:
    """Fill ``runs`` with what ``study.json`` recorded of them (:func:`restore`) and with their finished
    cycles on disk; sub-runs it does not list stay pending."""
    saved = {r.get("name"): r for r in read_manifest(root)["runs"] if isinstance(r, dict)} \
        if (root / MANIFEST).is_file() else {}
    for r in runs:
        restore(r, saved.get(r.name))
        r.cycles_done = cycles_done(root / r.path)


def check_same_plan(root: Path, plan: StudyPlan) -> None:
    """An existing study must be continued with the grid it was started with; it may gain seeds.

    Adding seeds (``--seeds`` listing the old ones first, then new ones) runs only the new sub-runs;
    every other change (preset, settings, methods, fewer or reordered seeds) is refused. A manifest
    written before methods recorded their ``role`` is compared without it (the roles are then recorded).
    """
    if not (root / MANIFEST).is_file():
        return
    saved = read_manifest(root)
    new = json.loads(json.dumps(plan.to_json()))
    saved_methods = saved.get("methods")
    if isinstance(saved_methods, list) and not any(isinstance(m, dict) and "role" in m for m in saved_methods):
        new["methods"] = [{k: v for k, v in m.items() if k != "role"} for m in new["methods"]]
    if not extends(saved, new):
        old_seeds = _saved_seeds(saved)
        more = "" if old_seeds is None else f" (more seeds may be added after seeds {','.join(map(str, old_seeds))})"
        raise UserError(f"{root} holds a study with other settings ({MANIFEST}); continue it with the flags it "
                        f"was started with{more}, or choose another --out")


def _saved_seeds(saved: Mapping[str, Any]) -> list[int] | None:
    """The saved plan's seeds, or None where the file's ``seeds`` is not a list of integers."""
    seeds = saved.get("seeds") or []
    return seeds if isinstance(seeds, list) and all(type(s) is int for s in seeds) else None


def extends(saved: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether the plan ``new`` (as JSON) continues the saved plan ``saved``: every key but ``seeds`` equal, and
    ``new``'s seeds the saved ones followed by none or more."""
    old_seeds = _saved_seeds(saved)
    same_rest = {k: saved.get(k) for k in new if k != "seeds"} == {k: v for k, v in new.items() if k != "seeds"}
    return same_rest and old_seeds is not None and new["seeds"][:len(old_seeds)] == old_seeds


def log_tail(root: Path, log: str, size: int = LOG_TAIL) -> str:
    """The last ``size`` bytes (at most) of the job log ``log``, a path relative to the study ``root`` that
    :func:`read_manifest` checked; one :class:`UserError` line if it leads out of ``root/jobs`` (a symbolic link)
    or is not a regular file (a FIFO would block, a device never end). A missing log keeps its OSError."""
    path = root / log
    try:
        inside = path.resolve().is_relative_to(root.resolve() / JOBS)  # jobs/ itself a link leads out too
    except (OSError, RuntimeError):  # a loop of links
        inside = False
    if not inside:
        raise UserError(f"{path}, the log of a job in {root / MANIFEST}, leads out of {root / JOBS}; restore it")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path}, the log of a job in {root / MANIFEST}, is not a regular file; restore it")
        return os.pread(fd, size, max(0, info.st_size - size)).decode(errors="replace")
    finally:
        os.close(fd)


def last_log_line(root: Path, job: JobRecord) -> str:
    """The last non-empty line of the job's error log: what a job that ended before its run finished said
    last (a failed sub-run's error, a traceback's last line, the scheduler's note of a kill)."""
    try:
        lines = [line.strip() for line in log_tail(root, job.stderr).splitlines() if line.strip()]
    except OSError:
        lines = []
    return lines[-1] if lines else f"job {job.id} ended before the run finished, and {job.stderr} is empty"


def settled(run: SubRun, cycles: int, states: Mapping[str, str | None], root: Path,
            driver_alive: bool = False) -> tuple[str, str | None]:
    """Where ``run`` stands now: ``(status, error)``.

    ``done`` once all ``cycles`` are on disk; ``running`` while its job is queued or running (``states``:
    job id -> the scheduler's state, None once the job has ended), or, with no job, while the study's
    own process runs it (``driver_alive``); ``failed`` when its job ended before the run finished (the
    error: the last line of the job's log) or when it failed in the study's process; else ``partial``
    (some cycles done) or ``pending``.
    """
    if run.cycles_done >= cycles:
        return "done", None
    if run.job is not None:
        if states.get(run.job.id) is not None:
            return "running", None
        return "failed", last_log_line(root, run.job)
    if run.status == "failed" and run.error:
        return "failed", run.error
    if run.status == "running" and driver_alive:
        return "running", None
    return ("partial" if run.cycles_done else "pending"), None
