"""``python -m studies.controls ROOT``: see :mod:`studies.controls.cli`."""

import sys

from core.errors import run_cli
from studies.controls.cli import main

if __name__ == "__main__":
    sys.exit(run_cli(main, rerun="rerun the same command to continue (finished measurements are kept)"))
