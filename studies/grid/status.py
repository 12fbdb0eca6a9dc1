"""``python -m studies.grid DIR --status``: where each sub-run of a study stands, read-only.

Worked out afresh (:func:`studies.grid.manifest.settled`): ``done`` (all cycles on disk), ``running``
(its job is queued or running, with the job id and the scheduler's state; or the study's own process
runs it), ``failed`` (with the last line of its job's log, or the error the study recorded),
``partial`` (some cycles done, not running) or ``pending``. Nothing is written and no lock is taken, so
it may run beside the study command and its jobs. On a family of studies (:mod:`studies.grid.family`)
it reports every cell (:func:`family_status`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.artifacts.lock import LOCK_NAME
from core.errors import UserError
from studies.grid.manifest import MANIFEST, JobRecord, SubRun, cycles_done, read_manifest, restore, settled
from training.presets import PRESETS

ORDER = ("done", "running", "failed", "partial", "pending")


@dataclass(frozen=True)
class SubRunState:
    """One sub-run now: its status, finished cycles, job (if a submitit launcher ran it), the scheduler's
    state of that job while it is queued or running, and the error of a failed one."""

    name: str
    status: str
    cycles_done: int
    cycles: int
    job: JobRecord | None = None
    scheduler: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class StudyStatus:
    """Every sub-run of the study ``root``, in the manifest's order."""

    root: str
    runs: tuple[SubRunState, ...]

    def counts(self) -> dict[str, int]:
        """Sub-runs per status, in :data:`ORDER`, the statuses that occur."""
        return _counts(self.runs)


def _counts(runs: tuple[SubRunState, ...]) -> dict[str, int]:
    return {s: n for s in ORDER if (n := sum(r.status == s for r in runs))}


@dataclass(frozen=True)
class CellStatus:
    """One cell of a family: its name, its study directory and that study's status (None: not started yet, the
    cell has no ``study.json``)."""

    name: str
    root: str
    study: StudyStatus | None


@dataclass(frozen=True)
class FamilyStatus:
    """Every cell of the family ``root``, in ``family.json``'s order."""

    root: str
    cells: tuple[CellStatus, ...]

    def counts(self) -> dict[str, int]:
        """Sub-runs of all cells per status, in :data:`ORDER`, the statuses that occur."""
        return _counts(tuple(r for c in self.cells if c.study is not None for r in c.study.runs))


def _cycles(manifest: dict[str, Any], path: Path) -> int:
    settings, preset = manifest.get("settings"), manifest.get("preset")
    cycles = settings.get("cycles") if isinstance(settings, dict) else None
    if not cycles and isinstance(preset, str):
        cycles = PRESETS.get(preset, {}).get("cycles")
    if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 1:
        raise UserError(f"{path} gives the study no number of cycles (settings.cycles or a known preset); restore it")
    return cycles


def _driver_alive(root: Path) -> bool:
    """Whether the process that last held the study's lock (``DIR/.lock`` holds its pid) is alive."""
    try:
        pid = int((root / LOCK_NAME).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def study_status(root: str | Path) -> StudyStatus:
    """Where each sub-run of the study ``root`` stands now (see the module docstring); writes nothing.

    Example:
        >>> status = study_status("runs/study-quick")  # doctest: +SKIP
        >>> status.counts()  # doctest: +SKIP
        {'done': 12, 'running': 2}
    """
    from studies.grid.submitit_launcher import job_states

    root = Path(root)
    manifest = read_manifest(root)
    cycles = _cycles(manifest, root / MANIFEST)
    runs = []
    for entry in manifest["runs"]:
        r = SubRun(entry["name"], str(entry.get("method")), -1, 0, entry["path"])  # seed, particles: unused here
        restore(r, entry)
        r.cycles_done = cycles_done(root / r.path)
        runs.append(r)
    states = job_states(root, [r.job for r in runs if r.job is not None and r.cycles_done < cycles])
    alive = _driver_alive(root)
    rows = []
    for r in runs:
        status, error = settled(r, cycles, states, root, alive)
        rows.append(SubRunState(r.name, status, r.cycles_done, cycles, r.job,
                                states.get(r.job.id) if r.job is not None else None, error))
    return StudyStatus(str(root), tuple(rows))


def family_status(root: str | Path) -> FamilyStatus:
    """Where each sub-run of each cell of the family ``root`` stands now (:func:`study_status` of every cell);
    writes nothing.

    Example:
        >>> status = family_status("runs/controls")  # doctest: +SKIP
        >>> [c.name for c in status.cells]  # doctest: +SKIP
        ['cnn1d-r2', 'mlp-r2', 'transformer1d-r2']
    """
    from studies.grid.family import read_family

    root = Path(root)
    cells = [(c["name"], root / c["path"]) for c in read_family(root)["cells"]]
    return FamilyStatus(str(root), tuple(CellStatus(name, str(path), study_status(path) if (path / MANIFEST).is_file()
                                                    else None) for name, path in cells))


def format_family_status(status: FamilyStatus) -> str:
    """The report ``--status`` prints for a family: a summary line, then each cell's :func:`format_status`."""
    runs = sum(len(c.study.runs) for c in status.cells if c.study is not None)
    counts = ", ".join(f"{n} {s}" for s, n in status.counts().items())
    lines = [f"family {status.root}: {len(status.cells)} cells, {runs} sub-runs" + (f": {counts}" if counts else "")]
    lines += [format_status(c.study) if c.study is not None else f"study {c.root}: not started (no {MANIFEST} yet)"
              for c in status.cells]
    return "\n".join(lines)


def format_status(status: StudyStatus) -> str:
    """The report ``--status`` prints: a summary line, then one line per sub-run."""
    counts = ", ".join(f"{n} {s}" for s, n in status.counts().items())
    lines = [f"study {status.root}: {len(status.runs)} sub-runs: {counts}"]
    width = max((len(r.name) for r in status.runs), default=0)
    for r in status.runs:
        line = f"  {r.name:<{width}}  {r.status:<7}  {r.cycles_done}/{r.cycles} cycles"
        if r.status == "running" and r.job is not None:
            line += f"  job {r.job.id} ({r.scheduler}), log {r.job.stdout}"
        elif r.status == "running":
            line += "  in the study command's process"
        elif r.status == "failed":
            line += (f"  job {r.job.id}: " if r.job is not None else "  ") + (r.error or "")
            line += f" (log {r.job.stderr})" if r.job is not None else ""
        lines.append(line)
    return "\n".join(lines)
