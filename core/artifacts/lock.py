"""One writer per directory: an exclusive advisory lock on ``DIR/.lock``.

A run directory (and a study, and a study's ``analysis/``) is written by one process at a time. A
second process that would write there -- ``--resume`` of a run that is still going, a second
``studies.grid.cli`` or ``studies.analyse`` on the same study -- stops with one line instead of
training the same particles twice and deleting the first process's temporary files.

The lock is ``flock(2)`` on ``DIR/.lock``: the kernel releases it when the holder exits, however it
exits (a killed run leaves no stale lock; ``--resume`` just works). The file holds the holder's pid,
for the message. Where ``fcntl`` is missing (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from core.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


def _busy(directory: Path, what: str) -> UserError:
    try:
        pid = (Path(directory) / LOCK_NAME).read_text().strip()
    except OSError:
        pid = ""
    holder = f" (pid {pid})" if pid.isdigit() else ""
    return UserError(f"{what} {directory} is in use by another process{holder}; wait for it to finish, "
                     "or stop it and rerun")


@contextlib.contextmanager
def exclusive(directory: Path, what: str) -> Iterator[None]:
    """Hold ``directory``'s lock while the block runs (``directory`` must exist).

    Raises :class:`UserError` at once, without waiting, if another process holds it.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = Path(directory) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(directory, what) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
