"""Command-line pieces shared by the landscape tools: evaluation flags, checkpoint opening, outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from landscape.evaluation import DEFAULT_BN_SAMPLES, SPLITS, EvalOptions, cached_dataset
from training.atomic import atomic_write_text
from training.checkpoint import Checkpoint, load_checkpoint, load_plain_state_dict
from training.data import mnist1d_spec
from training.errors import UserError
from training.models import model_spec

SPLIT_CHOICES = {"train": ("train",), "test": ("test",), "both": SPLITS}


def cycle_list(text: str) -> list[int]:
    """argparse ``type`` of ``--cycles K,K,...``."""
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"integers separated by commas, not {text!r}") from None


def add_eval_arguments(parser: argparse.ArgumentParser, default_split: str) -> None:
    """The flags every landscape tool shares (see :class:`landscape.evaluation.EvalOptions`)."""
    parser.add_argument("--split", choices=tuple(SPLIT_CHOICES), default=default_split,
                        help=f"data to evaluate on (default {default_split})")
    parser.add_argument("--bn-recal", type=int, default=DEFAULT_BN_SAMPLES, metavar="N",
                        help="recompute BatchNorm statistics at every point on N seeded train samples (all if "
                             f"fewer; default {DEFAULT_BN_SAMPLES}); 0 combines the stored statistics instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of the BN subsample and of any sampling")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B",
                        help="evaluation batch size (default: the run's eval_batch_size)")
    add_io_arguments(parser)


def add_io_arguments(parser: argparse.ArgumentParser) -> None:
    """Device, data location, plain ``.pt`` description, outputs and progress: flags of every tool."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="where the data set lives (default: as recorded in the checkpoints)")
    parser.add_argument("--model", default=None, metavar="NAME", help="model of a plain .pt state_dict")
    parser.add_argument("--dataset", default=None, metavar="NAME", help="data set of a plain .pt state_dict")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the result as JSON")
    parser.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="write a figure")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: only on a terminal)")


def eval_options(args: argparse.Namespace) -> EvalOptions:
    """Validated :class:`EvalOptions` from the flags of :func:`add_eval_arguments`."""
    if args.bn_recal < 0:
        raise UserError("--bn-recal must be >= 0 (0 = combine the stored BatchNorm statistics)")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be positive")
    return EvalOptions(SPLIT_CHOICES[args.split], args.bn_recal, args.seed, args.batch_size, args.device,
                       args.data_dir, args.progress)


def open_checkpoint(path: str | Path, args: argparse.Namespace) -> Checkpoint:
    """A toolkit checkpoint, or a plain ``.pt`` state_dict described by ``--model`` and ``--dataset``."""
    p = Path(path)
    if p.suffix not in (".pt", ".pth"):
        return load_checkpoint(p)
    if not (args.model and args.dataset):
        raise UserError(f"{p} is a plain PyTorch file; pass --model and --dataset to read it as a state_dict")
    data_dir = args.data_dir or "data"
    spec = mnist1d_spec(data_dir) if args.dataset == "mnist1d" else {"name": args.dataset, "data_dir": data_dir}
    classes = cached_dataset(spec, "cpu").num_classes
    return load_plain_state_dict(p, model_spec(args.model, classes), spec)


def split_header(splits: list[str]) -> str:
    """Column titles of a printed table with a loss and an error column per split."""
    return "".join(f" {s + ' loss':>11} {s + ' err':>9}" for s in splits)


def split_cells(values: list[tuple[float, float]]) -> str:
    """The matching cells: ``(loss, error)`` per split, error as a fraction printed in percent."""
    return "".join(f" {loss:>11.4f} {100 * error:>8.2f}%" for loss, error in values)


def write_json(path: Path, obj: Any) -> None:
    """Indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
