"""The flags of ``python -m studies.grid`` and the plan they describe (:mod:`studies.grid.cli`).

:func:`build_parser` declares them; :func:`plan_from_args` turns the parsed flags into a
:class:`studies.grid.plan.StudyPlan` (checked against ``RunConfig`` later, by
:func:`studies.grid.plan.check_plan`); :func:`parse_list` and :func:`parse_seeds` read the comma-separated
values, here and in the family axes (:mod:`studies.grid.family`).
"""

from __future__ import annotations

import argparse

from core.errors import ArgumentParser, UserError
from core.seeds import check_seed
from studies.grid.launchers import add_launcher_flags
from studies.grid.manifest import MANIFEST
from studies.grid.plan import StudyPlan, default_plan, quick_plan
from training.presets import PRESETS

# RunConfig fields a study's flags may set for every sub-run (recorded in study.json's settings)
PLAN_SETTINGS = {"epochs": int, "cycles": int, "rewind_epochs": int, "prune_ratio": float}


def build_parser() -> argparse.ArgumentParser:
    full, quick = (", ".join(m.name for m in plan("mnist1d").methods) for plan in (default_plan, quick_plan))
    parser = ArgumentParser(
        prog="python -m studies.grid",
        description="Run the SWAMP study grid (IMP, SWA only, particles only, SWAMP N = 2/4/8, SWAMP+, one-shot "
                    "magnitude/random pruning) for several seeds into one directory; rerun to continue it. "
                    "The directory's format: docs/format.md; on a Slurm cluster: docs/cluster.md.")
    parser.add_argument("study", nargs="?", default=None, metavar="DIR",
                        help="with --status: the study directory (or give it as --out DIR)")
    parser.add_argument("--out", default=None, metavar="DIR", help="study directory (required)")
    parser.add_argument("--status", action="store_true",
                        help="print where each sub-run stands (done, running with its job, failed with its error, "
                             "pending) and exit; reads only, so it may run beside the study")
    parser.add_argument("--quick", action="store_true",
                        help="a small grid to try the pipeline: seeds 0,1, 2 cycles of 1 epoch, SWAMP with N = 3 "
                             "(about 30 s on two CPU cores)")
    parser.add_argument("--preset", default="mnist1d", choices=list(PRESETS),
                        help="hyperparameter preset (default mnist1d)")
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="seeds (default 0,1,2; quick 0,1); a finished study can be extended with more seeds")
    parser.add_argument("--methods", default=None, metavar="NAME,...",
                        help=f"run only these methods (default all: {full}; with --quick: {quick})")
    for name, kind in PLAN_SETTINGS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            metavar="N" if kind is int else "P",
                            help=f"override the plan's {name} (a reduced study; recorded in {MANIFEST})")
    parser.add_argument("--models", default=None, metavar="M,M,...",
                        help="run a family of studies, one per model (training.swamp's --model: a zoo name, "
                             "torchvision:NAME, timm:NAME or PACKAGE.MODULE:CALLABLE) and rewind point, each an "
                             "ordinary study DIR/cells/MODEL-rR (docs/format.md, section 5)")
    parser.add_argument("--rewinds", default=None, metavar="R,R,...",
                        help="run a family of studies, one per rewind point (dense epochs, e.g. 0,1,2,4,8; instead "
                             "of --rewind-epochs) and model")
    parser.add_argument("--jobs", type=int, default=1, metavar="K",
                        help="train K sub-runs at once on this machine, in separate processes or (submitit-local) "
                             "jobs (e.g. one per CPU core or GPU memory share); each gets 1/K of the torch "
                             "threads (default 1)")
    add_launcher_flags(parser, "sub-run")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                        help="with a submitit launcher: wait for the jobs, reporting each as it ends (default), or "
                             "(--no-wait) submit them and return; rerun the command or use --status to follow")
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="where datasets live (default data)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--download", action="store_true", default=None,
                        help="allow torchvision to download CIFAR (default off)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: only on a terminal)")
    return parser


def parse_list(flag: str, text: str, example: str) -> list[str]:
    """The items of a comma-separated flag value; an empty item or a repeated one is refused."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise UserError(f"{flag} takes a comma-separated list such as {example}, not {text!r}")
    repeated = next((item for k, item in enumerate(items) if item in items[:k]), None)
    if repeated is not None:
        raise UserError(f"{flag} lists {repeated!r} twice")
    return items


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds S,S,...``: distinct integers in [0, 2^32)."""
    seeds = []
    for item in parse_list("--seeds", text, "0,1,2"):
        try:
            seed = int(item)
        except ValueError:
            raise UserError(f"--seeds takes integers separated by commas, such as 0,1,2; {item!r} is not one") from None
        check_seed(seed, "--seeds")
        seeds.append(seed)
    return tuple(seeds)


def parse_models(text: str) -> tuple[str, ...]:
    """``--models M,M,...``: distinct model names of the kinds ``training.swamp --model`` takes, each checked
    by name (:func:`core.models.model_spec`: a zoo name, ``torchvision:NAME`` or ``timm:NAME`` of the
    library, or the form ``PACKAGE.MODULE:CALLABLE``, which is not imported here).

    Example:
        >>> parse_models("cnn1d, mlp,torchvision:resnet18")
        ('cnn1d', 'mlp', 'torchvision:resnet18')
    """
    from core.models import model_spec

    models = parse_list("--models", text, "cnn1d,mlp,transformer1d")
    for model in models:
        try:
            model_spec(model, 10)  # the class count only sizes the output layer: the name is what is checked
        except UserError as err:
            raise UserError(f"--models: {err}") from None
    return tuple(models)


def parse_rewinds(text: str) -> tuple[int, ...]:
    """``--rewinds R,R,...``: distinct rewind points, in dense epochs (integers >= 0).

    Example:
        >>> parse_rewinds("0,1,2,4,8")
        (0, 1, 2, 4, 8)
    """
    rewinds: list[int] = []
    for item in parse_list("--rewinds", text, "0,1,2,4,8"):
        try:
            rewind = int(item)
        except ValueError:
            rewind = -1
        if rewind < 0:
            raise UserError(f"--rewinds takes dense epochs (integers >= 0) separated by commas, such as 0,1,2,4,8; "
                            f"{item!r} is not one")
        if rewind in rewinds:
            raise UserError(f"--rewinds lists {rewind} twice")
        rewinds.append(rewind)
    return tuple(rewinds)


def plan_from_args(args: argparse.Namespace) -> StudyPlan:
    """The plan the flags describe (not yet checked against RunConfig: see :func:`check_plan`)."""
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    plan = quick_plan(args.preset, *([seeds] if seeds else [])) if args.quick else \
        default_plan(args.preset, *([seeds] if seeds else []))
    settings = {**plan.settings, **{k: getattr(args, k) for k in PLAN_SETTINGS if getattr(args, k) is not None}}
    methods = plan.methods
    if args.methods is not None:
        wanted = parse_list("--methods", args.methods, "imp,swamp-n4")
        unknown = [name for name in wanted if name not in {m.name for m in methods}]
        if unknown:
            raise UserError(f"unknown method {unknown[0]!r} in --methods; choose from "
                            f"{', '.join(m.name for m in methods)}")
        methods = tuple(m for m in methods if m.name in wanted)
    return StudyPlan(plan.preset, settings, plan.seeds, methods, plan.quick)
