"""One-shot pruning baselines at IMP's sparsities, written as ordinary run directories.

Cycle 0 trains the dense network from the ticket exactly as IMP does (same seeds, so the same
weights). Every later cycle k starts again from the ticket with the mask that prunes the *dense*
solution theta_0 in one step to IMP's density d_k = (1 - P)^k (Han et al. 2015; Frankle & Carbin
2019 compare IMP against it):

    m_k = prune(theta_0, 1, ratio = 1 - d_k)     (global magnitude, or uniformly random),

and trains it with the run's schedule. Unlike IMP, m_k does not depend on m_{k-1}; ``cycle_KK`` of the
run directory holds the network trained at density d_k, so every landscape tool reads it as usual.
``config.json`` records ``"pruning_schedule": "one-shot"``.

``python -m training.oneshot`` runs it from the command line with every flag of ``python -m training.imp`` (one
particle, no SWA by default; ``--prune-method random`` for the random-mask baseline); ``studies.grid`` runs the same
function for its ``oneshot-*`` arms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from core.errors import RESUME_RUN, UserError, run_cli
from core.pruning import next_masks, target_densities
from core.seeds import generator
from training import swamp
from training.config import RunConfig, parse_config
from training.engines.cluster import exit_now
from training.imp import IMP_DEFAULTS
from training.run import MaskRule, run_swamp

ONESHOT_CONFIG = {"pruning_schedule": "one-shot"}
PROG = "python -m training.oneshot"


def oneshot_rule(cfg: RunConfig) -> MaskRule:
    """Masks for cycle k + 1 pruned from cycle 0's (dense) solution straight to its density d_{k+1}
    (``--prune-schedule``: (1 - P)^(k+1) by default)."""
    dense: dict[str, dict[str, Tensor]] = {}

    def rule(cycle: int, solution: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        if cycle == 0:  # the cycle loop visits cycle 0 first, also on resume
            dense["solution"], dense["masks"] = solution, {k: torch.ones_like(m) for k, m in masks.items()}
        if cycle + 1 >= cfg.cycles:  # after the last cycle: no cycle trains at the next density
            return masks
        ratio = 1.0 - target_densities(cfg.prune_schedule, cfg.prune_ratio, cfg.cycles)[cycle + 1]
        return next_masks(cfg.prune_method, dense["solution"], dense["masks"], ratio,
                          generator(cfg.seed, "prune", cycle))

    return rule


def run_oneshot(cfg: RunConfig) -> list[dict[str, Any]]:
    """Train the dense network, then one network per IMP density with a one-shot mask."""
    return run_swamp(cfg, oneshot_rule(cfg), ONESHOT_CONFIG)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(argv, PROG, "One-shot pruning baseline: the dense network, then one network per IMP density "
                                   "with the dense solution pruned to it in one step (one particle, no SWA).",
                       IMP_DEFAULTS)
    if cfg.particles != 1:
        raise UserError(f"{PROG} trains one particle per density; --particles {cfg.particles} is not a one-shot "
                        "baseline")
    return swamp.run_and_report(cfg, oneshot_rule(cfg), ONESHOT_CONFIG)


if __name__ == "__main__":
    exit_now(run_cli(main, rerun=RESUME_RUN))
