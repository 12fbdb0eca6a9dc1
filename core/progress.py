"""Progress bars: ``tqdm`` without its monitor thread.

tqdm starts a daemon "monitor" thread with the first bar (even a disabled one) that wakes every 10 s to
adjust ``miniters``. With that thread alive, a Ctrl-C during training ended the process by the signal
itself about four times in ten, after :func:`core.errors.run_cli` had printed its one line (exit
status -2 instead of 130), and once under strace it was lost and the run went on; without the thread,
none in tens of tries (``tests/test_first_impressions.py``). The toolkit's bars update on every step, so
the monitor has nothing to do for them.
"""

from __future__ import annotations

from tqdm.auto import tqdm as _tqdm


class tqdm(_tqdm):  # noqa: N801 - the name every call site knows
    """``tqdm.auto.tqdm`` with ``monitor_interval = 0`` (no monitor thread); everything else unchanged.

    Example:
        >>> sum(1 for _ in tqdm(range(3), disable=True))
        3
    """

    monitor_interval = 0
