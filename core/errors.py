"""User-facing errors: one clear line and exit code 2, never a traceback.

Every command-line entry point of the toolkit runs through :func:`run_cli`, which turns a
:class:`UserError` (bad hyperparameter, missing dataset, unreadable checkpoint, ...) or an
environment failure (full disk, read-only or forbidden path) into a single line on stderr and exit
status 2; Ctrl-C and SIGTERM stop it with one line saying how to continue. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

EXIT_USAGE = 2
# Failures of the user's environment or paths, not of the toolkit: a full disk or quota, a file-size limit
# (``ulimit -f``), a read-only, forbidden, missing, too long, looping or wrong-type path.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                      errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ELOOP,
                      errno.ENXIO, errno.ETXTBSY, errno.EBUSY, errno.EMFILE, errno.ENFILE, errno.EXDEV, errno.EIO}
RERUN = "rerun the command"
RESUME_RUN = "rerun with --resume to continue the run"

class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread while :func:`run_cli` runs: the program stops as after Ctrl-C
    (every clean-up written for an interrupt runs; files are written atomically, so none is left half)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


class UserError(Exception):
    """An error caused by the user's input; its message says what is wrong and what to do."""


class LibraryArgumentError(ValueError):
    """A bad argument of a library function, named in Python terms (``points must be >= 2``). The CLIs
    validate their flags first, so one that still arrives is reported by :func:`run_cli` as one line."""


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every CLI: an argument error is a :class:`UserError`, so :func:`run_cli` prints the one
    line ``error: PROG: MESSAGE (see --help)`` and exits with status 2, instead of argparse's usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def quiet_start_up_interrupts() -> None:
    """For ``python -m <tool>``: a Ctrl-C while the tool is still importing (torch takes a second), before
    :func:`run_cli` runs, ends with one line instead of a traceback; the exit status stays the interrupt's.

    Likewise a Ctrl-C once the tool has returned and the interpreter is exiting is ignored: it would interrupt
    an exit handler (a traceback), or, once Python has reset its handlers, kill the process without a line (status
    -2), after the tool's work and output were complete.

    Called by the ``training``, ``landscape`` and ``studies`` packages as they are imported; it acts only
    while ``python -m`` is locating a module (``sys.argv[0]`` is then ``"-m"``), never in a user's program.
    """
    if not sys.argv or sys.argv[0] != "-m" or getattr(sys.excepthook, "quiet_interrupts", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print("interrupted while starting; nothing was done", file=sys.stderr)
        else:
            previous(kind, value, tb)

    hook.quiet_interrupts = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    # the first thing the interpreter's exit runs, in the main thread (before joining threads and atexit)
    threading._register_atexit(_ignore_interrupts)  # type: ignore[attr-defined]


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stopped_line(signum: int, rerun: str = RERUN) -> str:
    """The one line a program stopped by SIGTERM or SIGINT (Ctrl-C) prints: its name, how, and ``rerun``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    typed = list(getattr(sys, "orig_argv", []))
    if "-m" in typed[:-1]:  # the name the user typed, also where a command alias forwards to its module
        prog = f"python -m {typed[typed.index('-m') + 1]}"
    elif spec is not None and spec.name:
        prog = f"python -m {spec.name.removesuffix('.__main__')}"
    else:
        prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "swamp"
    return f"{prog}: {'terminated' if signum == signal.SIGTERM else 'interrupted'}; {rerun}"


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None, *,
            rerun: str = RERUN) -> int:
    """Run ``main(argv)`` and map user errors, environment failures, Ctrl-C and SIGTERM to one line and an exit
    status (SIGTERM: 143, while ``main`` runs in the main thread; the previous handler is restored after).

    ``rerun`` tells the user how to continue after an environment failure or an interrupt
    (:data:`RESUME_RUN` for training); a tool whose outputs are written whole keeps the default.
    """
    # signal handlers can be set only in the main thread; elsewhere SIGTERM keeps its effect
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        code = int(main(argv) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return code
    except (UserError, LibraryArgumentError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (``... | head``): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror}{where}; fix this and {rerun}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        signum = signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT
        print(stopped_line(signum, rerun), file=sys.stderr)
        return 128 + signum
    finally:
        if in_main:  # None: a handler not set from Python, which cannot be restored; the default then
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
