"""Atomic file writes: a reader sees the old file or the complete new one, never a partial file.

The bytes go to a temporary file in the target's directory (``.NAME.tmp-PID``), are flushed and
fsynced, then renamed over the target (atomic on POSIX), and the directory entry is fsynced.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TMP_MARK = ".tmp-"
TEMPORARY = re.compile(r"\..+" + re.escape(TMP_MARK) + r"\d+")  # what atomic_write_bytes names


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating parent directories."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None:  # a failed write on an open file names no path: name the target
            raise OSError(err.errno, err.strerror, str(target)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed writer left below ``directory``; returns what was removed."""
    removed = [p for p in Path(directory).rglob(f".*{TMP_MARK}*")
               if TEMPORARY.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
