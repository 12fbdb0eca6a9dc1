"""Command-line pieces shared by the landscape tools: evaluation flags, checkpoint opening, outputs."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.artifacts.atomic import atomic_write_text
from core.artifacts.checkpoint import Checkpoint, load_checkpoint, load_plain_state_dict
from core.data.names import IN_MEMORY_PREFIX, builtin_spec, is_builtin
from core.errors import UserError
from core.imports import is_import_path
from core.models import model_spec
from core.options import add_dataclass_arguments, from_args
from core.seeds import check_seed
from landscape.batches import (  # noqa: F401  the caps of every tool's flags, defined with the library's
    MAX_HULL_SAMPLES,
    MAX_LANCZOS_RUNS,
    MAX_POINTS,
    MAX_PROBES,
    MAX_RESOLUTION,
)
from landscape.tools.artifacts import DEFAULT_DATA_DIR, SPLIT_CHOICES, EvalOptions, cached_dataset


def cycle_list(text: str) -> list[int]:
    """argparse ``type`` of ``--cycles K,K,...``."""
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"integers separated by commas, not {text!r}") from None


def add_eval_arguments(parser: argparse.ArgumentParser, default_split: str) -> None:
    """The flags of every field of :class:`landscape.tools.artifacts.EvalOptions` (``--split`` defaulting to
    ``default_split`` for this tool), then the plain ``.pt`` description and outputs."""
    add_dataclass_arguments(parser, EvalOptions, defaults={"splits": SPLIT_CHOICES[default_split]})
    add_file_arguments(parser)


def add_io_arguments(parser: argparse.ArgumentParser) -> None:
    """Device, data location and ``--trust-code`` (as in :class:`EvalOptions`), plain ``.pt`` description and
    outputs: the flags of a tool that evaluates no landscape (and brings its own ``--progress``)."""
    add_dataclass_arguments(parser, EvalOptions, only=("device", "data_dir", "trust_code"))
    add_file_arguments(parser)


def add_file_arguments(parser: argparse.ArgumentParser, plot: bool = True) -> None:
    """``--model`` and ``--dataset`` of a plain ``.pt`` state_dict, ``--json`` and (with ``plot``) ``--plot``
    outputs."""
    parser.add_argument("--model", default=None, metavar="NAME", help="model of a plain .pt state_dict")
    parser.add_argument("--dataset", default=None, metavar="NAME", help="data set of a plain .pt state_dict")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the result as JSON")
    if plot:
        parser.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="write a figure")




def check_at_most(value: int, limit: int, flag: str) -> None:
    """Refuse (:class:`UserError`) a size above its :data:`MAX_POINTS`-style cap."""
    if value > limit:
        raise UserError(f"{flag} must be at most {limit:,}, not {value:,}")


def check_data_dir(data_dir: str | None) -> None:
    """``--data-dir`` may be absent or a directory, not a file."""
    if data_dir is not None and Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {data_dir} is not a directory")


def eval_options(args: argparse.Namespace) -> EvalOptions:
    """Validated :class:`EvalOptions` from the flags of :func:`add_eval_arguments`."""
    options = from_args(EvalOptions, args)
    if options.bn_recal < 0:
        raise UserError("--bn-recal must be >= 0 (0 = combine the stored BatchNorm statistics)")
    if options.batch_size is not None and options.batch_size < 1:
        raise UserError("--batch-size must be positive")
    check_seed(options.seed)
    check_data_dir(options.data_dir)
    return options


def open_checkpoint(path: str | Path, args: argparse.Namespace) -> Checkpoint:
    """A toolkit checkpoint, loaded with ``--trust-code``'s consent, or a plain ``.pt`` state_dict described by
    ``--model`` and ``--dataset`` (user code named there is the user's own choice, so it is trusted).

    A toolkit checkpoint records its model and data set, so ``--model`` / ``--dataset`` naming others are
    refused (a flag is never silently ignored), with one exception: ``--dataset`` stands in for data that
    were handed to ``training.run_swamp`` as Python objects, which no name can reload."""
    p = Path(path)
    if p.suffix not in (".pt", ".pth"):
        return checkpoint_with_flags(load_checkpoint(p, trust_code=args.trust_code), args)
    if not (args.model and args.dataset):
        raise UserError(f"{p} is a plain PyTorch file; pass --model and --dataset to read it as a state_dict")
    spec = _named_dataset(args)
    classes = cached_dataset(spec, "cpu", spec["data_dir"], trust_code=True).num_classes
    return load_plain_state_dict(p, model_spec(args.model, classes), spec, trust_code=True)


def _named_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """The data set spec of ``--dataset`` under ``--data-dir``."""
    data_dir = args.data_dir or DEFAULT_DATA_DIR
    return builtin_spec(args.dataset, data_dir) if is_builtin(args.dataset) else {"name": args.dataset,
                                                                                   "data_dir": data_dir}


def checkpoint_with_flags(ckpt: Checkpoint, args: argparse.Namespace) -> Checkpoint:
    """``ckpt`` as ``--model`` / ``--dataset`` leave it: refused (:class:`UserError`) where they name another model
    or data set than it records; ``--dataset`` replaces data handed to ``run_swamp`` as Python objects (its
    import is the user's choice, so trusted when the checkpoint's model needs no import or ``--trust-code``
    consents to it)."""
    if args.model is not None and args.model != ckpt.model.get("name"):
        raise UserError(f"--model {args.model}: {ckpt.path} is a SWAMP checkpoint of the model "
                        f"{ckpt.model.get('name')}, which the tools rebuild; --model describes plain .pt state_dicts, "
                        "leave it out")
    recorded = ckpt.dataset.get("name")
    if args.dataset is None or args.dataset == recorded:
        return ckpt
    if not (isinstance(recorded, str) and recorded.startswith(IN_MEMORY_PREFIX)):
        raise UserError(f"--dataset {args.dataset}: {ckpt.path} records its data set ({recorded}), which the tools "
                        "use; --dataset describes plain .pt state_dicts (and data handed to run_swamp as Python "
                        "objects), leave it out")
    model_is_code = is_import_path(str(ckpt.model.get("name")))
    return replace(ckpt, dataset=_named_dataset(args), trust_code=args.trust_code or not model_is_code)


def split_header(splits: list[str]) -> str:
    """Column titles of a printed table with a loss and an error column per split."""
    return "".join(f" {s + ' loss':>11} {s + ' err':>9}" for s in splits)


def split_cells(values: list[tuple[float, float]]) -> str:
    """The matching cells: ``(loss, error)`` per split, error as a fraction printed in percent."""
    return "".join(f" {loss:>11.4f} {100 * error:>8.2f}%" for loss, error in values)


def write_json(path: Path, obj: Any) -> None:
    """Indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
