"""User-facing errors: one clear line and exit code 2, never a traceback.

Every command-line entry point of the toolkit runs through :func:`run_cli`, which turns a
:class:`UserError` (bad hyperparameter, missing dataset, unreadable checkpoint, ...) or an
environment failure (full disk, read-only or forbidden path) into a single line on stderr and exit
status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Sequence

EXIT_USAGE = 2
# Failures of the user's environment, not of the toolkit: a full disk, a read-only or forbidden path.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class UserError(Exception):
    """An error caused by the user's input; its message says what is wrong and what to do."""


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and map user errors and Ctrl-C to one line and an exit status."""
    prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "swamp"
    try:
        return int(main(argv) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror}{where}; every finished step is saved: fix this and rerun with --resume",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
