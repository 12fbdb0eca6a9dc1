"""``python -m training.imp``: iterative magnitude pruning with rewinding, i.e. ``training.swamp`` with
``--particles 1 --no-swa`` as defaults (Frankle et al. 2020)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from training import swamp
from training.errors import RESUME_RUN, run_cli

IMP_DEFAULTS = {"particles": 1, "swa": False}


def main(argv: Sequence[str] | None = None) -> int:
    return swamp.main(argv, "python -m training.imp", IMP_DEFAULTS,
                      "Iterative magnitude pruning with weight rewinding (one particle, no SWA).")


if __name__ == "__main__":
    sys.exit(run_cli(main, rerun=RESUME_RUN))
