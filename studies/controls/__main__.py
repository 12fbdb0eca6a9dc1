"""``python -m studies.controls ROOT``: see :mod:`studies.controls.cli`."""

import sys

from studies.controls.cli import main
from training.errors import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main, rerun="rerun the same command to continue (finished measurements are kept)"))
