"""``python -m training.swamp``: run SWAMP (or IMP, SWA-only, particles-only, SWAMP+) and print a table.

With no arguments it runs the quick MNIST-1D preset on the CPU in a few minutes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from training.config import RunConfig, parse_config
from training.errors import RESUME_RUN, run_cli
from training.run import run_swamp
from training.rundir import results_row

DESCRIPTION = ("Sparse Weight Averaging with Multiple Particles (Choi et al., ICLR 2024): iterative magnitude "
               "pruning where every cycle trains N SWA particles from the same ticket and mask and keeps their "
               "weight average. Writes a run directory (its format: docs/format.md).")


def format_table(metrics: list[dict[str, Any]]) -> str:
    """Cycle, sparsity, SWAMP average, mean +- std particle and ensemble test accuracy (percent)."""
    lines = [f"{'cycle':>5} {'sparsity':>9} {'average':>8} {'particles':>15} {'ensemble':>9}"]
    for m in metrics:
        r = results_row(m)
        lines.append(f"{r['cycle']:>5d} {100 * r['sparsity']:>8.2f}% {100 * r['average_test_acc']:>7.2f}% "
                     f"{100 * r['particle_test_acc_mean']:>8.2f}±{100 * r['particle_test_acc_std']:<5.2f}% "
                     f"{100 * r['ensemble_test_acc']:>8.2f}%")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str = "python -m training.swamp",
         defaults: dict[str, Any] | None = None, description: str = DESCRIPTION) -> int:
    return run_and_report(parse_config(argv, prog, description, defaults))


def run_and_report(cfg: RunConfig) -> int:
    """Run ``cfg``, naming its directory first and ending with the table of :func:`format_table`.

    Both lines are flushed as they are printed, so output redirected to a file keeps the run directory
    even when the run is interrupted. Under torchrun only rank 0 prints.
    """
    reporting = os.environ.get("RANK", "0") == "0"
    if reporting:
        print(f"run directory: {cfg.out}", flush=True)
    metrics = run_swamp(cfg)
    if reporting and metrics:
        print(format_table(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, rerun=RESUME_RUN))
