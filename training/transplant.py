"""``python -m training.transplant --masks-from RUN``: IMP or SWAMP trained on the masks of another run.

Is a pruned solution good because of its *mask* or because of the *weights* trained under it? Cycle k of a
transplanted run trains from its own ticket, with its own particles, SWA and schedule, under the mask that cycle
k of ``RUN`` trained under:

    m_k = mask of RUN's cycle k      (instead of prune(theta_{k-1}, m_{k-1}, P), IMP's rule)

so its masks no longer depend on its own solutions. With the seed, model, data and rewind point of ``RUN`` the
ticket is RUN's, and the run differs from RUN only in how each cycle trains; beside a run of its own method and
seed it differs only in its masks. Both comparisons together separate the two factors, as Frankle & Carbin
(2019) and Zhou et al. (2019, "Deconstructing lottery tickets") separate mask and initialisation: IMP trained on
SWAMP's masks answers "is SWAMP's gain in its masks?", SWAMP trained on IMP's masks "... or in its training?".

Every flag of ``python -m training.swamp`` applies (``--particles 1 --no-swa`` for IMP); ``--cycles`` may not
exceed RUN's finished cycles. ``config.json`` records ``"pruning_schedule": "transplanted"`` and
``"masks_from"`` (the path as given), and ``--resume`` needs the same ``--masks-from``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from core.artifacts.checkpoint import load_checkpoint
from core.artifacts.rundir import RunDir
from core.errors import RESUME_RUN, ArgumentParser, UserError, run_cli
from training import swamp
from training.config import RunConfig, parse_config, read_saved
from training.engines.cluster import exit_now
from training.run import MaskRule

PROG = "python -m training.transplant"
DESCRIPTION = ("IMP or SWAMP trained on the masks of another run. --masks-from RUN (required): cycle k trains "
               "from this run's own ticket under the mask that cycle k of RUN trained under; every other flag is "
               "that of python -m training.swamp (--particles 1 --no-swa for IMP).")


def run_masks(run: str | Path, cycles: int) -> list[dict[str, Tensor]]:
    """The masks cycles ``0 .. cycles - 1`` of the run directory ``run`` trained under (read from each cycle's
    ``average.safetensors``); a :class:`UserError` naming ``--masks-from`` when a cycle is missing or unreadable.

    Args:
        run: a finished (or partly finished) run directory of this toolkit.
        cycles: how many cycles are needed.

    Returns:
        One ``{parameter name: 0/1 float tensor}`` per cycle.

    Example:
        >>> try:
        ...     run_masks("runs/no-such-run", 2)
        ... except UserError as err:
        ...     print(str(err)[:52])
        --masks-from runs/no-such-run: cycle 0 is not finish
    """
    rd = RunDir(Path(run))
    masks = []
    for k in range(cycles):
        path = rd.average(k)
        if not path.is_file():
            raise UserError(f"--masks-from {run}: cycle {k} is not finished there (no {path}); --cycles {cycles} "
                            f"needs {cycles} finished cycles")
        try:
            masks.append(load_checkpoint(path).masks)
        except UserError as err:
            raise UserError(f"--masks-from {run}: {err}") from None
    return masks


def transplant_rule(masks: Sequence[dict[str, Tensor]], source: str = "--masks-from") -> MaskRule:
    """The :data:`~training.run.MaskRule` that gives cycle k + 1 the mask ``masks[k + 1]`` whatever cycle k's
    solution is; it refuses (:class:`UserError` naming ``source``) masks whose names or shapes are not those
    of the run's weights, and a cycle-0 mask that is not the run's own first (dense) mask.

    Args:
        masks: one mask per cycle (:func:`run_masks`).
        source: what the masks came from, for messages.

    Returns:
        ``rule(cycle, solution, current_masks) -> next masks``.

    Example:
        >>> import torch
        >>> rule = transplant_rule([{"w": torch.ones(2)}, {"w": torch.tensor([1.0, 0.0])}])
        >>> rule(0, {}, {"w": torch.ones(2)})["w"].tolist()
        [1.0, 0.0]
    """

    def rule(cycle: int, solution: dict[str, Tensor], current: dict[str, Tensor]) -> dict[str, Tensor]:
        if cycle == 0:
            _check_first(masks[0], current, source)
        if cycle + 1 >= len(masks):  # after the last cycle: no cycle trains at the next density
            return current
        return {k: masks[cycle + 1][k].to(device=m.device, dtype=m.dtype) for k, m in current.items()}

    return rule


def _check_first(first: dict[str, Tensor], current: dict[str, Tensor], source: str) -> None:
    if set(first) != set(current):
        extra, missing = sorted(set(first) - set(current)), sorted(set(current) - set(first))
        raise UserError(f"{source}: its masks are not this model's prunable weights (only there: "
                        f"{', '.join(extra) or 'none'}; only here: {', '.join(missing) or 'none'})")
    for k, m in current.items():
        if tuple(first[k].shape) != tuple(m.shape):
            raise UserError(f"{source}: the mask of {k} has shape {tuple(first[k].shape)}, the weight {tuple(m.shape)}")
        if not bool((first[k].to(m.device, m.dtype) == m).all()):
            raise UserError(f"{source}: its cycle 0 mask of {k} is not this run's first mask (dense); transplant "
                            "from a run that starts dense, with the same --prune-exclude and --prune-biases")


def parse_transplant(argv: Sequence[str] | None) -> tuple[RunConfig, str]:
    """The run's settings and ``--masks-from`` of a command line, checked but not run (nothing is read or
    written); a :class:`UserError` line for a missing ``--masks-from`` or one that is the run's ``--out``."""
    pre = ArgumentParser(prog=PROG, add_help=False)
    pre.add_argument("--masks-from", metavar="RUN")
    known, rest = pre.parse_known_args(argv)
    cfg = parse_config(rest, PROG, DESCRIPTION)
    if known.masks_from is None:
        raise UserError("--masks-from RUN is required: the run directory whose cycle k mask cycle k trains under")
    if Path(known.masks_from).resolve() == Path(cfg.out).resolve():
        raise UserError(f"--out {cfg.out} is --masks-from: a transplanted run never replaces the run it reads")
    return cfg, known.masks_from


def check_same_model(cfg: RunConfig, masks_from: str) -> None:
    """Refuse, before training, a source run whose ``config.json`` names another model or model arguments than
    ``cfg`` (its masks could not fit); a source without a readable config is left to :func:`run_masks`."""
    path = Path(masks_from) / "config.json"
    if not path.is_file():
        return
    saved = read_saved(path)
    theirs = (saved.get("model"), saved.get("model_kwargs", "{}"))
    if theirs != (cfg.model, cfg.model_kwargs):
        raise UserError(f"--masks-from {masks_from} trained --model {theirs[0]} --model-kwargs {theirs[1]}, this run "
                        f"--model {cfg.model} --model-kwargs {cfg.model_kwargs}: its masks cannot fit; transplant "
                        "from a run of the same model")


def main(argv: Sequence[str] | None = None) -> int:
    cfg, masks_from = parse_transplant(argv)
    check_same_model(cfg, masks_from)
    rule = transplant_rule(run_masks(masks_from, cfg.cycles), f"--masks-from {masks_from}")
    return swamp.run_and_report(cfg, rule, {"pruning_schedule": "transplanted", "masks_from": masks_from})


if __name__ == "__main__":
    exit_now(run_cli(main, rerun=RESUME_RUN))
