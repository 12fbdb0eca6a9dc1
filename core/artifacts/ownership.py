"""What the toolkit created, and so may replace: the rule that no command deletes a user's file.

``--overwrite`` replaces a run directory, and a study or a study's ``analysis/`` is written into an
existing directory, only when that directory is empty or already one of ours:

* a **run** (:mod:`core.artifacts.rundir`): ``config.json`` written by :func:`training.resume.prepared`
  (a JSON object with ``package_version``) and nothing but the names a run writes -- ``ticket.safetensors``,
  ``results.csv``, ``cycle_KK/`` holding ``particle_PP.safetensors``, ``average.safetensors`` and
  ``metrics.json``, ``.resume/*.safetensors``, ``.lock``, temporaries ``.NAME.tmp-PID``, and ``logs/``
  holding only the folders of ``--log`` (``tensorboard/``, ``wandb/``, ``mlruns/``; their files are the
  loggers');
* a **study** (:mod:`studies.grid.cli`): it holds ``study.json`` (and, with a submitit launcher,
  ``jobs/``: submitit's pickled calls and logs);
* a study's **analysis** (:mod:`studies.analyse`): it holds ``settings.json`` (and may hold ``jobs/``).

Anything else in the tree (a file of the user's, a symbolic link, a folder under a name a run never
writes) makes the directory foreign: the command stops with one line and deletes nothing. Deletion
removes only the entries this rule recognised, never following a link.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from core.artifacts.atomic import TEMPORARY
from core.artifacts.jsonfile import BadJSON, read_json
from core.artifacts.lock import LOCK_NAME
from core.errors import UserError

_RUN_FILES = {"config.json", "ticket.safetensors", "results.csv"}
_CYCLE_DIR = re.compile(r"cycle_\d{2,}")
_CYCLE_FILES = re.compile(r"particle_\d{2,}\.safetensors|average\.safetensors|metrics\.json")
_RESUME_FILE = re.compile(r"[A-Za-z0-9_]+\.safetensors")
_LOCK_BODY = re.compile(rb"\d*\n?")
_LOG_DIR, _LOGGER_DIRS = "logs", {"tensorboard", "wandb", "mlruns"}
_MAX_CONFIG_BYTES = 2**20  # a run's config.json is a few kilobytes


def check_out_text(text: str | os.PathLike, flag: str = "--out") -> Path:
    """``text`` as a path, refusing an empty or blank one (``Path('')`` would be the working directory)."""
    if not str(text).strip():
        raise UserError(f"{flag} must name a directory, not an empty string")
    return Path(text)


def _is_lock(path: Path) -> bool:
    """Our lock file: a regular file holding at most a pid (see :mod:`core.artifacts.lock`)."""
    try:
        return path.is_file() and not path.is_symlink() and path.stat().st_size < 32 and \
            _LOCK_BODY.fullmatch(path.read_bytes()) is not None
    except OSError:
        return False


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _plain_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _foreign(path: Path, depth: str) -> list[str]:
    """The entries at or below ``path`` (an entry of the run root, a cycle folder or ``.resume``) that a
    run never writes, as paths relative to the run; empty if all of it is a run's."""
    name = path.name
    if TEMPORARY.fullmatch(name):
        return [] if _plain_file(path) else [name]
    if depth == "root":
        if name == LOCK_NAME:
            return [] if _is_lock(path) else [name]
        if name in _RUN_FILES:
            return [] if _plain_file(path) else [name]
        if name == _LOG_DIR:
            return _foreign_logs(path)
        inner = "cycle" if _CYCLE_DIR.fullmatch(name) else "resume" if name == ".resume" else None
        if inner is None or not _plain_dir(path):
            return [name]
        return [f"{name}/{bad}" for child in sorted(path.iterdir()) for bad in _foreign(child, inner)]
    pattern = _CYCLE_FILES if depth == "cycle" else _RESUME_FILE
    return [] if pattern.fullmatch(name) is not None and _plain_file(path) else [name]


def _foreign_logs(path: Path) -> list[str]:
    """``logs/`` entries that no logger of :mod:`training.loggers` writes: anything but their folders. What a
    logger writes inside its folder is its own (wandb also links files of its cache there; deleting a link
    never touches its target)."""
    if not _plain_dir(path):
        return [path.name]
    return [f"{path.name}/{c.name}" for c in sorted(path.iterdir()) if c.name not in _LOGGER_DIRS or not _plain_dir(c)]


def _foreign_entries(root: Path) -> list[str]:
    return [bad for p in sorted(root.iterdir()) for bad in _foreign(p, "root")]


def is_empty(root: Path) -> bool:
    """No entries but (our) lock file."""
    return all(p.name == LOCK_NAME and _is_lock(p) for p in root.iterdir())


def is_run_config(path: Path) -> bool:
    """Whether ``path`` is a run's ``config.json`` (a JSON object with ``package_version``, as
    :func:`training.resume.prepared` writes it)."""
    try:
        if not path.is_file() or path.stat().st_size > _MAX_CONFIG_BYTES:
            return False
        body = read_json(path)
    except (OSError, BadJSON):  # unreadable, not UTF-8 or JSON, too many digits, too deep
        return False
    return isinstance(body, dict) and "package_version" in body


def check_replaceable_run(root: Path) -> None:
    """Refuse (:class:`UserError`) to ``--overwrite`` ``root`` unless it is empty or a run of ours."""
    if (root.exists() or root.is_symlink()) and not root.is_dir():
        raise UserError(f"--out {root} is not a directory; choose another --out")
    if not root.exists() or is_empty(root):
        return
    foreign = _foreign_entries(root)
    if foreign or not is_run_config(root / "config.json"):
        what = f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which no run writes" \
            if foreign else "has no config.json of a run"
        raise UserError(f"--overwrite refused: {root} is not a run directory (it {what}); nothing was deleted. "
                        "Choose another --out, or move those files away")


def clear_run(root: Path) -> None:
    """Delete the entries of a run that :func:`check_replaceable_run` accepted, keeping the lock."""
    for child in root.iterdir():
        if child.name == LOCK_NAME or _foreign(child, "root"):
            continue
        if _plain_dir(child):
            shutil.rmtree(child)
        else:
            child.unlink()


def check_usable_directory(root: Path, marker: str, what: str, flag: str) -> None:
    """``root`` may be written as a ``what`` if absent, empty, or already one (it holds ``marker``)."""
    if root.is_symlink() and not root.is_dir():
        raise UserError(f"{flag} {root} is a broken symbolic link; choose another {flag}")
    if root.exists() and not root.is_dir():
        raise UserError(f"{flag} {root} is a file, not a directory; choose another {flag}")
    if not root.exists() or is_empty(root) or (root / marker).is_file():
        return
    entries = sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME)
    raise UserError(f"{root} is not a {what} (no {marker}, but it holds {', '.join(entries[:3])}"
                    f"{' ...' if len(entries) > 3 else ''}); choose an empty or new {flag}")
