"""``python -m training.imp``: iterative magnitude pruning with rewinding, i.e. ``training.swamp`` with
``--particles 1 --no-swa`` as defaults (Frankle et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import RESUME_RUN, UserError, run_cli
from training import swamp
from training.config import parse_config
from training.engines.cluster import exit_now

IMP_DEFAULTS = {"particles": 1, "swa": False}
PROG = "python -m training.imp"


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(argv, PROG, "Iterative magnitude pruning with weight rewinding (one particle, no SWA).",
                       IMP_DEFAULTS)
    if cfg.particles != 1:
        raise UserError(f"{PROG} trains one particle per cycle (IMP); for {cfg.particles} particles use "
                        f"python -m training.swamp --particles {cfg.particles} (add --no-swa for particles "
                        "without SWA)")
    return swamp.run_and_report(cfg)


if __name__ == "__main__":
    exit_now(run_cli(main, rerun=RESUME_RUN))
