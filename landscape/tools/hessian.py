"""``python -m landscape.hessian CKPT`` (or ``--run DIR``): Hessian trace, top eigenvalue and eigenvalue
density of a checkpoint's training loss; the library is :mod:`landscape.tools.hessian_report` (checkpoints and
runs) over :mod:`landscape.curvature` (any module), whose names are importable from here too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.artifacts.outputs import check_outputs
from core.device import resolve_device
from core.errors import UserError, run_cli
from core.options import from_args
from landscape.tools.cli import open_checkpoint, write_json
from landscape.tools.hessian_output import build_parser, format_report, format_run, report_figure, run_figure
from landscape.tools.hessian_report import (
    EVAL_MODE,
    LOSS,
    HessianOptions,
    HessianReport,
    HessianResult,
    analyse_checkpoint,
    analyse_run,
    hessian_analysis,
    run_checkpoints,
    sample_indices,
    training_batches,
)
from landscape.tools.plots import save_figure

__all__ = ["EVAL_MODE", "LOSS", "HessianOptions", "HessianReport", "HessianResult", "analyse_checkpoint",
           "analyse_run", "hessian_analysis", "main", "options_from_args", "run_checkpoints", "sample_indices",
           "training_batches"]


def options_from_args(args: argparse.Namespace) -> HessianOptions:
    """Validated :class:`HessianOptions` from the flags of :func:`landscape.tools.hessian_output.build_parser`."""
    options = from_args(HessianOptions, args)
    options.validate()
    return options


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_outputs({"--json": args.json, "--plot": args.plot}, [args.checkpoint, args.run],
                  {"--json": {"trace", "rows"}})
    options = options_from_args(args)
    device = resolve_device(args.device)
    if (args.checkpoint is None) == (args.run is None):
        raise UserError("give one checkpoint CKPT or --run DIR (not both)")
    if args.particles and args.run is None:
        raise UserError("--particles needs --run DIR")
    if args.run is None:
        report = analyse_checkpoint(open_checkpoint(args.checkpoint, args), options, device, args.data_dir)
        print(format_report(report))
        obj, make_figure = report.to_json(), lambda: report_figure(report)
    else:
        reports = analyse_run(args.run, options, device, args.particles, args.data_dir, trust_code=args.trust_code,
                              load=lambda path: open_checkpoint(path, args))  # --model/--dataset as for files
        print(format_run(reports))
        obj = {"run": str(args.run), "mode": EVAL_MODE, "rows": [r.to_json() for r in reports]}
        make_figure = lambda: run_figure(reports)  # noqa: E731
    if args.json:
        write_json(args.json, obj)
    if args.plot:
        save_figure(make_figure(), args.plot)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m landscape.hessian``: bad input is one line on stderr and exit status 2."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
