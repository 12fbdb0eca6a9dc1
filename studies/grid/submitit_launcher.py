"""The submitit launchers: one job per sub-run, on Slurm (``slurm``) or on this machine (``submitit-local``).

Each pending sub-run becomes one job whose function (:class:`SubRunJob`) runs it with ``--resume``
semantics (:func:`studies.grid.plan.run_sub_run`): a job that is killed, preempted or times out
leaves the run directory as an interrupted run leaves it, and the next job of that sub-run continues
at its last finished epoch. Preemption and time-outs: Slurm signals the job (``USR2``, 90 s before
its time limit, or on preemption where the cluster sends it); submitit then calls
:meth:`SubRunJob.checkpoint`, which returns the same call, and requeues the job under the same id.
A job that ends otherwise (killed, out of memory, too many requeues) is found ``failed`` by the next
study command, which submits the sub-run again.

A job that needs several GPUs (``--slurm-gpus-per-job G`` and a sub-run of N > 1 particles) gets
``min(G, N)`` tasks, one per GPU on one node; every task runs the same function, which first sets
torch.distributed's ``env://`` rendezvous from submitit's job environment (:func:`rendezvous`), so
the run trains with the distributed engine (:mod:`training.engines.cluster`): rank 0 writes the run
directory, the other ranks train their share of the particles.

Whether a job still runs (:func:`job_states`) is asked of the scheduler (Slurm: ``sacct``, one call for
all jobs; local: whether the job's controller process is alive), so a second study command neither
submits a running sub-run again nor forgets one whose job died.
"""

from __future__ import annotations

import abc
import calendar
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError
from studies.grid.launchers import Hooks, LauncherOptions, require_submitit
from studies.grid.manifest import JOBS, JobRecord, SubRun, now
from studies.grid.plan import Method, StudyPlan
from studies.grid.workers import worker_threads

DEFAULT_MINUTES = 24 * 60
REQUEUES = 100  # time-outs after which submitit stops requeuing a job (preemptions do not count)
# sacct states of a job that is queued or running (a requeued job is queued again under its id)
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "COMPLETING",
          "CONFIGURING", "STAGE_OUT", "SIGNALING", "READY"}
UNKNOWN_GRACE_S = 600  # sacct may not know a job for a while after sbatch accepted it


def rendezvous(env: Any) -> dict[str, str]:
    """torch.distributed's ``env://`` variables for a task of a multi-task job, from submitit's
    ``JobEnvironment`` ``env`` (which reads ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NTASKS``,
    ``SLURM_JOB_NODELIST`` and ``SLURM_JOB_ID``): ranks as Slurm numbers its tasks, the job's first node
    as the master, and a port derived from the job id, so jobs sharing a node do not collide.

    Example:
        >>> from types import SimpleNamespace
        >>> env = SimpleNamespace(global_rank=1, local_rank=1, num_tasks=4, hostnames=["gpu07"], raw_job_id="4242")
        >>> rendezvous(env)["MASTER_ADDR"], rendezvous(env)["MASTER_PORT"], rendezvous(env)["WORLD_SIZE"]
        ('gpu07', '24242', '4')
    """
    job = str(env.raw_job_id)
    port = 20000 + int(job) % 20000 if job.isdigit() else 29500
    return {"RANK": str(env.global_rank), "LOCAL_RANK": str(env.local_rank), "WORLD_SIZE": str(env.num_tasks),
            "MASTER_ADDR": env.hostnames[0], "MASTER_PORT": str(port)}


@dataclass(frozen=True)
class SubRunJob:
    """One sub-run as a submitit job: calling it runs (or resumes) the sub-run; :meth:`checkpoint` is
    submitit's requeue hook. A failed sub-run ends the job with exit status 1 and its error (as the study
    records it in its own processes) as the last line of the job's error log, which ``--status`` shows."""

    plan: StudyPlan
    method: Method
    seed: int
    path: Path
    runtime: dict[str, Any]
    threads: int | None = None

    def __call__(self) -> tuple[str, None]:
        import submitit

        from studies.grid.plan import run_sub_run
        from training.engines.cluster import exit_now

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            os.environ.update(rendezvous(env))
        status, error = run_sub_run(self.plan, self.method, self.seed, self.path, self.runtime, self.threads)
        if error is not None:
            print(error, file=sys.stderr, flush=True)
            exit_now(1)
        return status, None

    def checkpoint(self) -> Any:
        """The same call again: the requeued job resumes the run from its last finished epoch."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


class SubmititLauncher(abc.ABC):
    """One submitit job per sub-run (see the module docstring); :class:`LocalLauncher` and
    :class:`SlurmLauncher` say where (:meth:`executor`) and how a job's state is asked (:meth:`states`)."""

    name = ""
    poll_seconds = 1.0

    def __init__(self, options: LauncherOptions) -> None:
        self.options = options
        self.submitit = require_submitit(f"--launcher {options.name}")
        self.own: dict[str, Any] = {}  # job id -> the submitit Job this command submitted

    def gpus(self) -> int:
        return 1 if self.options.gpus_per_job is None else self.options.gpus_per_job

    def threads(self) -> int | None:
        """Torch threads of each job (None: the job's own default)."""
        return None

    def tasks(self, r: SubRun) -> int:
        """Tasks (one per GPU) of ``r``'s job: no more than its particles."""
        return max(1, min(self.gpus(), r.particles))

    def room(self, queued: int, active: int) -> int:
        """How many of ``queued`` sub-runs to submit now, with ``active`` jobs running."""
        return queued

    @abc.abstractmethod
    def executor(self, folder: Path, tasks: int, name: str) -> Any:
        """A submitit executor writing into ``folder`` whose jobs have ``tasks`` tasks (one per GPU, if any)
        and the job name ``name``."""

    @classmethod
    @abc.abstractmethod
    def states(cls, root: Path, records: Sequence[JobRecord], own: Mapping[str, Any]) -> dict[str, str | None]:
        """Job id -> the scheduler's state of each job of ``records`` while queued or running, None once
        ended; ``own``: the submitit Jobs this command submitted, by id."""

    def launch(self, todo: list[SubRun], following: list[SubRun], hooks: Hooks) -> None:
        """Submit ``todo`` (as many at once as :meth:`room` allows) and, when waiting, follow every job
        until it ends. An interrupted wait leaves the jobs running: the next command follows them."""
        queue = list(todo)
        active = {r.job.id: (r, time.perf_counter()) for r in following if r.job is not None}
        while queue or (self.options.wait and active):
            room = self.room(len(queue), len(active))
            if room > 0:
                batch, queue = queue[:room], queue[room:]
                for r, record in self.submit(batch, hooks):
                    active[record.id] = (r, hooks.start(r, record))
            if not self.options.wait:
                return
            time.sleep(self.poll_seconds)
            states = self.states(hooks.root, [r.job for r, _ in active.values() if r.job], self.own)
            for job_id in [j for j in active if states.get(j) is None]:
                r, began = active.pop(job_id)
                hooks.finish(r, began, *hooks.settle(r))

    def submit(self, batch: list[SubRun], hooks: Hooks) -> Iterator[tuple[SubRun, JobRecord]]:
        """Submit one job per sub-run of ``batch`` (one job array per task count); yields each with its record."""
        root = hooks.root
        folder = (root / JOBS).absolute()
        by_tasks: dict[int, list[SubRun]] = {}
        for r in batch:
            by_tasks.setdefault(self.tasks(r), []).append(r)
        for tasks, runs in by_tasks.items():
            jobs = self.submit_calls(folder, tasks, f"study-{root.absolute().name}",
                                     [(SubRunJob(*hooks.arguments(r), self.threads()), ()) for r in runs])
            for r, job in zip(runs, jobs, strict=True):
                self.own[job.job_id] = job
                yield r, JobRecord(self.name, job.job_id, now(), _relative(job.paths.stdout, root),
                                   _relative(job.paths.stderr, root))


    def submit_calls(self, folder: Path, tasks: int, name: str, calls: list[tuple[Callable[..., Any], tuple]]) \
            -> list[Any]:
        """Submit ``function(*args)`` for each of ``calls`` as one batch (a job array on Slurm) of jobs with
        ``tasks`` tasks; returns their submitit Jobs. A refusal by the scheduler is one line."""
        executor = self.executor(folder, tasks, name)
        errors = self.submitit.core.utils
        try:
            with executor.batch():
                jobs = [executor.submit(function, *args) for function, args in calls]
        except (errors.UncompletedJobError, errors.FailedSubmissionError) as err:  # sbatch said no
            first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise UserError(f"the scheduler refused the jobs ({first.strip()}); check --slurm-partition, "
                            "--slurm-time and --slurm-arg") from None
        return jobs


def _relative(path: Path, root: Path) -> str:
    return str(Path(path).relative_to(root.absolute()))


class LocalLauncher(SubmititLauncher):
    """``--launcher submitit-local``: submitit's ``LocalExecutor``, at most ``--jobs`` jobs at once."""

    name = "submitit-local"
    poll_seconds = 0.5

    def gpus(self) -> int:
        if self.options.gpus_per_job is not None:
            return self.options.gpus_per_job
        import torch

        return min(1, torch.cuda.device_count())  # the local executor hides the GPUs a job is not given

    def room(self, queued: int, active: int) -> int:
        return min(queued, self.options.jobs - active)

    def threads(self) -> int | None:
        """As ``--jobs K`` worker processes: 1/K of this process's torch threads each (so the checkpoints are
        those of ``--launcher processes --jobs K``)."""
        return worker_threads(self.options.jobs)

    def executor(self, folder: Path, tasks: int, name: str) -> Any:
        executor = self.submitit.LocalExecutor(folder, max_num_timeout=REQUEUES)
        executor.update_parameters(timeout_min=self.options.minutes or DEFAULT_MINUTES, tasks_per_node=tasks,
                                   gpus_per_node=tasks if self.gpus() else 0)
        return executor

    @classmethod
    def states(cls, root: Path, records: Sequence[JobRecord], own: Mapping[str, Any]) -> dict[str, str | None]:
        folder = (root / JOBS).absolute()
        states: dict[str, str | None] = {}
        for record in records:
            job = own.get(record.id)
            running = job.state == "RUNNING" if job is not None else _controller_alive(record.id, folder)
            states[record.id] = "RUNNING" if running else None
        return states


def _controller_alive(job_id: str, folder: Path) -> bool:
    """Whether the local job ``job_id`` (its controller's pid) still runs: the process exists, is not a
    zombie, and is submitit's controller of ``folder`` (not another process that got the pid since)."""
    if not job_id.isdigit():
        return False
    proc = Path("/proc") / job_id
    if not Path("/proc/self").is_dir():  # no procfs (macOS): whether the pid exists
        try:
            os.kill(int(job_id), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    words = [w.decode(errors="replace") for w in argv if w]
    return state not in ("Z", "X") and "submitit.local._local" in words and \
        any(Path(w).resolve() == folder.resolve() for w in words[1:])


class SlurmLauncher(SubmititLauncher):
    """``--launcher slurm``: submitit's ``SlurmExecutor``; a batch of sub-runs is one job array."""

    name = "slurm"
    poll_seconds = 60.0

    def executor(self, folder: Path, tasks: int, name: str) -> Any:
        options = self.options
        executor = self.submitit.SlurmExecutor(folder, max_num_timeout=REQUEUES)
        parameters: dict[str, Any] = {"job_name": name, "time": options.minutes or DEFAULT_MINUTES,
                                      "nodes": 1, "ntasks_per_node": tasks}
        if self.gpus():
            parameters["gpus_per_node"] = tasks
        if options.partition is not None:
            parameters["partition"] = options.partition
        if options.array_parallelism is not None:
            parameters["array_parallelism"] = options.array_parallelism
        parameters.update(options.slurm_args)
        try:
            executor.update_parameters(**parameters)
        except (ValueError, TypeError) as err:
            raise UserError(f"--slurm-arg: submitit refused the job parameters ({str(err).splitlines()[0]})") \
                from None
        return executor

    @classmethod
    def states(cls, root: Path, records: Sequence[JobRecord], own: Mapping[str, Any]) -> dict[str, str | None]:
        submitit = require_submitit("a study with Slurm jobs")
        folder = (root / JOBS).absolute()
        jobs = [own.get(r.id) or submitit.SlurmJob(folder, r.id) for r in records]
        submitit.SlurmJob.watcher.update()  # one sacct call for every registered job
        states: dict[str, str | None] = {}
        for record, job in zip(records, jobs, strict=True):
            state = (job.watcher.get_state(record.id, mode="cache") or "UNKNOWN").split()[0].upper()
            # a stamp in the future (a damaged record) is young no longer than one just written
            young = abs(time.time() - _seconds(record.submitted)) < UNKNOWN_GRACE_S
            active = state in ACTIVE or (state == "UNKNOWN" and young)
            states[record.id] = state if active and not job.paths.result_pickle.exists() else None
        return states


def _seconds(stamp: str) -> float:
    """Seconds since the epoch of a :func:`studies.grid.manifest.now` time stamp (0 if unreadable)."""
    try:
        return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return 0.0


LAUNCHER_CLASSES = {cls.name: cls for cls in (LocalLauncher, SlurmLauncher)}


def run_jobs(options: LauncherOptions, folder: Path, name: str, work: Callable[..., Any], items: Sequence[tuple],
             done: Callable[[Any], None]) -> None:
    """Run ``work(*item, threads)`` for each of ``items`` as one single-task submitit job of the launcher
    ``options.name`` (at most ``--jobs`` at once on this machine, each with its share of the torch
    ``threads``; one job array on Slurm) and wait, handing each job's result to ``done`` as it ends. A job
    that fails is one line naming its log; an interrupted wait (or a failure) cancels the jobs still
    queued or running, whose work the next command then does again. A job gets a GPU if ``options`` gives
    jobs any (:attr:`LauncherOptions.gpus_per_job`)."""
    launcher = LAUNCHER_CLASSES[options.name](options)
    queue, active = list(items), {}
    try:
        while queue or active:
            room = launcher.room(len(queue), len(active))
            if room > 0:
                batch, queue = queue[:room], queue[room:]
                jobs = launcher.submit_calls(folder, 1, name, [(work, (*item, launcher.threads())) for item in batch])
                active.update((job.job_id, job) for job in jobs)
            time.sleep(launcher.poll_seconds)
            for job_id in [j for j, job in active.items() if job.done()]:
                job = active.pop(job_id)
                try:
                    result = job.result()
                except launcher.submitit.core.utils.UncompletedJobError:
                    lines = [line for line in (job.stderr() or "").splitlines() if line.strip()]
                    raise UserError(f"job {job_id} failed: {lines[-1].strip() if lines else 'its log is empty'} "
                                    f"(log {job.paths.stderr})") from None
                done(result)
    except BaseException:
        for job in active.values():
            job.cancel(check=False)
        raise


def job_states(root: Path, records: Sequence[JobRecord], own: Mapping[str, Any] | None = None) \
        -> dict[str, str | None]:
    """Job id -> the scheduler's state of each job in ``records`` while it is queued or running, None once
    it has ended (or if its launcher is unknown); each launcher is asked about its own jobs."""
    states: dict[str, str | None] = {}
    for name, cls in LAUNCHER_CLASSES.items():
        mine = [r for r in records if r.launcher == name]
        if mine:
            states.update(cls.states(root, mine, own or {}))
    return states

