"""``python -m training.swamp``: run SWAMP (or IMP, SWA-only, particles-only, SWAMP+) and print a table.

With no arguments it runs the quick MNIST-1D preset on the CPU in a few minutes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from core.artifacts.rundir import results_row
from core.errors import RESUME_RUN, run_cli
from core.progress import tqdm
from training.config import RunConfig, parse_config
from training.engines.cluster import exit_now
from training.run import MaskRule, run_swamp

DESCRIPTION = ("Sparse Weight Averaging with Multiple Particles (Choi et al., ICLR 2024): iterative magnitude "
               "pruning where every cycle trains N SWA particles from the same ticket and mask and keeps their "
               "weight average. Writes a run directory (its format: docs/format.md).")


TABLE_HEADER = f"{'cycle':>5} {'sparsity':>9} {'average':>8} {'particles':>15} {'ensemble':>9}"


def format_row(metrics: dict[str, Any]) -> str:
    """One cycle's row under :data:`TABLE_HEADER`: cycle, sparsity, SWAMP average, mean +- std particle and
    ensemble test accuracy (percent); without accuracies (targets that are not class labels) the average's
    test loss, and ``-`` for the particles and the ensemble."""
    r = results_row(metrics)
    if r["average_test_acc"] is None:
        return (f"{r['cycle']:>5d} {100 * r['sparsity']:>8.2f}% {r['average_test_loss']:>8.4g} {'-':>15} "
                f"{'-':>9}")
    return (f"{r['cycle']:>5d} {100 * r['sparsity']:>8.2f}% {100 * r['average_test_acc']:>7.2f}% "
            f"{100 * r['particle_test_acc_mean']:>8.2f}±{100 * r['particle_test_acc_std']:<5.2f}% "
            f"{100 * r['ensemble_test_acc']:>8.2f}%")


def main(argv: Sequence[str] | None = None, prog: str = "python -m training.swamp",
         defaults: dict[str, Any] | None = None, description: str = DESCRIPTION) -> int:
    return run_and_report(parse_config(argv, prog, description, defaults))


def print_line(line: str) -> None:
    """``line`` on stdout, flushed at once (so a file it is redirected to keeps it through an interrupt),
    without tearing a progress bar on the terminal."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def run_and_report(cfg: RunConfig, mask_rule: MaskRule | None = None,
                   extra_config: dict[str, Any] | None = None) -> int:
    """Run ``cfg``, naming its directory first, then printing the table of cycles row by row as each cycle
    finishes (:data:`TABLE_HEADER` with the first row, then :func:`format_row`); ``mask_rule`` and
    ``extra_config`` as for :func:`training.run.run_swamp` (another pruning rule, e.g. :mod:`training.transplant`).

    Every line is flushed as it is printed, so output redirected to a file keeps the run directory and
    the finished cycles even when the run is interrupted. Under torchrun only rank 0 prints.
    """
    if os.environ.get("RANK", "0") == "0":
        print_line(f"run directory: {cfg.out}")
    rows = 0

    def report(metrics: dict[str, Any]) -> None:
        nonlocal rows
        if rows == 0:
            print_line(TABLE_HEADER)
        print_line(format_row(metrics))
        rows += 1

    run_swamp(cfg, mask_rule, extra_config, on_cycle=report)
    return 0


if __name__ == "__main__":
    exit_now(run_cli(main, rerun=RESUME_RUN))
