"""``python -m studies.controls ROOT``: compute the missing control measurements and print the tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from core.artifacts.outputs import check_outputs
from core.errors import ArgumentParser, UserError
from core.options import add_dataclass_arguments
from landscape.tools.artifacts import EvalOptions
from landscape.tools.cli import write_json
from studies.controls.cache import measure
from studies.controls.measurements import Settings
from studies.controls.runs import Run, find_runs
from studies.controls.tables import correlation_rows, report

JSON_KEYS = {"unalignable", "correlations"}  # what marks an earlier --json of this tool, which a rerun replaces
COUNTS = ("rewind", "points", "hull_samples", "hull_vertices", "probes", "hessian_samples")  # the flags of Settings


def grid_rewind(runs: Sequence[Run]) -> int:
    """The grid's rewind point: the only one of the runs, or the only one that every model has (a rewind sweep
    of one model beside a grid of several); otherwise one :class:`UserError` line asking for ``--rewind``."""
    models: dict[str, set[int]] = {}
    for run in runs:
        models.setdefault(run.model, set()).add(run.rewind)
    shared = sorted(set.intersection(*models.values()))
    if len(shared) == 1:
        return shared[0]
    found = sorted(set.union(*models.values()))
    raise UserError(f"the runs have rewind points {', '.join(map(str, found))}"
                    f"{', none of them shared by every model' if not shared else ''}; choose the grid's with "
                    "--rewind N")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m studies.controls",
                            description="A control beside every landscape verdict (docs/controls.md): compute the "
                                        "measurements missing from ROOT/analysis/controls (rerun to continue) and "
                                        "print the tables as Markdown.")
    parser.add_argument("root", type=Path, help="directory holding IMP and SWAMP run directories (any depth: a "
                        "directory of runs, a study or a family of studies)")
    add_dataclass_arguments(parser, Settings, only=COUNTS)
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="where the data set is read (default data/)")
    parser.add_argument("--jobs", type=int, default=1, metavar="K",
                        help="compute K measurements at once in separate processes, each with 1/K of the torch "
                             "threads (default 1)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar (default: only on a terminal)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write every row as JSON")
    add_dataclass_arguments(parser, EvalOptions, only=("trust_code",))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_outputs({"--json": args.json}, [args.root], {"--json": JSON_KEYS})
    if args.rewind is None:
        args.rewind = grid_rewind(find_runs(args.root))
    settings = replace(Settings(), data_dir=args.data_dir, trust_code=args.trust_code,
                       **{name: getattr(args, name) for name in COUNTS})
    controls = measure(args.root, settings, args.jobs, args.progress, log=lambda line: print(line, file=sys.stderr))
    print("\n\n".join(report(controls)))
    if args.json:
        write_json(args.json, {**controls.to_json(), "correlations": correlation_rows(controls)})
    return 0
