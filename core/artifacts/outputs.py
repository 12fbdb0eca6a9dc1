"""Where a command may write a file: the one guard every output flag of the toolkit passes before anything is
computed (``--json``, ``--plot``, ``landscape.align --out``, ``studies.controls --json``, ...).

:func:`check_outputs` refuses, with one :class:`UserError` line naming the flag, an output that

* is blank, or names the same file as another output flag;
* is one of the command's inputs (also through a symbolic or hard link);
* is a directory, a symbolic link, a FIFO, a device or any other file that is not a regular one, or lies in
  a "directory" that is a file;
* lies inside a **run directory** (one holding a run's ``config.json``, :mod:`core.artifacts.ownership`),
  whether or not the command reads it: a run holds only what training writes (one file of the user's makes
  it foreign to ``--overwrite``);
* lies inside a **study** (``study.json``) or a **family of studies** (``family.json``) below its top level
  (``runs/``, ``jobs/``, ``analysis/``, ``cells/`` belong to the toolkit), or takes one of the names the
  toolkit writes at that top level; a new file beside ``study.json`` (``STUDY/controls.json``) is allowed;
* exists and is not an earlier output of this flag, which a rerun replaces (:func:`earlier_output`): a PNG
  that matplotlib wrote for ``--plot``; for a JSON flag a JSON object holding one of the keys the tool writes;
  or what a :class:`Replaceable` of the caller accepts (``landscape.tools.align``: its aligned checkpoints).

Outputs are then written atomically (:mod:`core.artifacts.atomic`): a reader never sees half a file.

Example:
    >>> check_outputs({"--json": "barrier.json", "--plot": None}, ["a.safetensors", "b.safetensors"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.artifacts.jsonfile import BadJSON, read_json
from core.artifacts.lock import LOCK_NAME
from core.artifacts.ownership import is_run_config
from core.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_REPLACED_BYTES = 64 * 2**20  # no JSON output of ours is larger: a bigger file is somebody else's
# What marks a directory as a study or a family of studies (studies.grid.manifest names them too), and
# what the toolkit writes at their top level.
TOOLKIT_MANIFESTS = {"study.json": "study", "family.json": "family of studies"}
_TOOLKIT_NAMES = {*TOOLKIT_MANIFESTS, LOCK_NAME, "runs", "jobs", "analysis", "cells"}


@dataclass(frozen=True)
class Replaceable:
    """An earlier output that a rerun may replace, for a flag whose files are not JSON or PNG: ``what`` it is
    (for the refusal: ``aligned checkpoint``) and the ``test`` of an existing regular file."""

    what: str
    test: Callable[[Path], bool]


Earlier = Iterable[str] | Replaceable  # the JSON keys the tool writes, or what recognises its earlier output


def matplotlib_png(path: Path) -> bool:
    """Whether the regular file ``path`` is a PNG that matplotlib wrote (its ``Software`` text chunk)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    return head.startswith(PNG_MAGIC) and b"Software\x00Matplotlib" in head


def json_object_with(path: Path, keys: Iterable[str]) -> bool:
    """Whether the regular file ``path`` is a JSON object holding one of ``keys`` (a user's own JSON holds none
    of the keys a tool writes); a file over :data:`MAX_REPLACED_BYTES`, not UTF-8, not JSON or nested too deep
    is not."""
    if path.stat().st_size > MAX_REPLACED_BYTES:
        return False
    try:
        body = read_json(path)
    except BadJSON:  # not UTF-8 or not JSON, an integer of too many digits, too deep
        return False
    return isinstance(body, dict) and bool(set(keys) & set(body))


def replaceable(flag: str, earlier: Earlier | None) -> Replaceable:
    """What an earlier output of ``flag`` is: ``earlier`` (the JSON keys the tool writes, default none, or a
    :class:`Replaceable`) or, for ``--plot`` without one, a PNG that matplotlib wrote."""
    if isinstance(earlier, Replaceable):
        return earlier
    if flag == "--plot" and earlier is None:
        return Replaceable("PNG output", matplotlib_png)
    keys = frozenset(earlier or ())
    return Replaceable("JSON output", lambda path: json_object_with(path, keys))


def earlier_output(path: Path, flag: str, earlier: Earlier | None = None) -> bool:
    """Whether the existing regular file ``path`` is an earlier output of ``flag`` (:func:`replaceable`) that a
    rerun may replace."""
    return replaceable(flag, earlier).test(path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except (OSError, RuntimeError):  # a link loop: compare the names only
        return a.absolute() == b.absolute()


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link loop
        return path.absolute()


def toolkit_directory(directory: Path) -> str | None:
    """``"run"``, ``"study"`` or ``"family of studies"`` if ``directory`` is one the toolkit writes, else None."""
    if is_run_config(directory / "config.json"):
        return "run"
    return next((what for name, what in TOOLKIT_MANIFESTS.items() if (directory / name).is_file()), None)


def enclosing_run(path: str | os.PathLike) -> Path | None:
    """The run directory that ``path`` (a file or directory, existing or not) lies in, or None: where nothing
    but training may write (a command's cache or output there would make the run foreign to ``--overwrite``)."""
    target = _resolved(Path(path))
    return next((d for d in (target, *target.parents) if toolkit_directory(d) == "run"), None)


def _inside_toolkit_directory(flag: str, path: Path, inputs: list[Path]) -> None:
    """Refuse ``path`` inside a run, or inside a study or family below its top level (see the module)."""
    target = _resolved(path.parent) / path.name
    for depth, directory in enumerate(target.parents):
        what = toolkit_directory(directory)
        if what is None or (what != "run" and depth == 0 and target.name not in _TOOLKIT_NAMES):
            continue
        given = "input " if any(directory == p or directory in p.parents or p in directory.parents
                                for p in inputs) else ""
        raise UserError(f"{flag} {path} is inside the {given}{what} {directory}, which only the toolkit writes; "
                        "outputs never go inside a run or a study's folders: choose a file elsewhere")


def check_outputs(outputs: Mapping[str, str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None] = (),
                  markers: Mapping[str, Earlier] | None = None) -> None:
    """Refuse, before anything is computed, an output that would destroy or shadow a file the program did not
    make (the rules: this module's docstring); one :class:`UserError` line naming the flag.

    Args:
        outputs: flag (``"--json"``) -> the path it names, or None when not given.
        inputs: the files and directories the command reads (None entries are skipped).
        markers: flag -> what recognises an earlier output of it that a rerun replaces: the JSON keys the tool
            writes, or a :class:`Replaceable`; without one, a ``--plot`` replaces a matplotlib PNG and any other
            flag replaces nothing.

    Example:
        >>> check_outputs({"--json": "/etc/passwd"}, [])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        core.errors.UserError: --json /etc/passwd exists and is not an earlier JSON output of this tool, ...
    """
    markers = markers or {}
    sources = [Path(p) for p in inputs if p is not None]
    resolved = [_resolved(p) for p in sources]
    given = {flag: Path(p) for flag, p in outputs.items() if p is not None}
    for flag, path in given.items():
        if not str(path).strip():
            raise UserError(f"{flag} must name a file, not an empty string")
        for other_flag, other in given.items():
            if other_flag < flag and _same_file(path, other):
                raise UserError(f"{other_flag} and {flag} name the same file {path}; give two different files")
        for source in sources:
            if _same_file(path, source):
                raise UserError(f"{flag} {path} is the input {source}; outputs never replace inputs, choose another "
                                "file")
        if path.is_symlink():
            raise UserError(f"{flag} {path} is a symbolic link; name a regular file (the link is left as it is)")
        if path.is_dir():
            raise UserError(f"{flag} {path} is a directory; name a file in it")
        if path.exists() and not path.is_file():
            raise UserError(f"{flag} {path} is not a regular file (a FIFO or device?); name a regular file")
        parent = next((p for p in path.absolute().parents if p.exists() or p.is_symlink()), None)
        if parent is not None and not parent.is_dir():
            raise UserError(f"{flag} {path}: {parent} is not a directory")
        _inside_toolkit_directory(flag, path, resolved)
        if path.is_file() and not earlier_output(path, flag, markers.get(flag)):
            raise UserError(f"{flag} {path} exists and is not an earlier {replaceable(flag, markers.get(flag)).what} "
                            "of this tool, so it is left as it is: choose another file")
