"""Command-line pieces shared by the landscape tools: evaluation flags, checkpoint opening, outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from landscape.artifacts import DEFAULT_DATA_DIR, SPLIT_CHOICES, EvalOptions, cached_dataset
from landscape.options import add_dataclass_arguments, from_args
from training.artifacts.atomic import atomic_write_text
from training.artifacts.checkpoint import Checkpoint, load_checkpoint, load_plain_state_dict
from training.artifacts.jsonfile import BadJSON, parse_json
from training.config import check_seed
from training.data import mnist1d_spec
from training.errors import UserError
from training.models import model_spec


def cycle_list(text: str) -> list[int]:
    """argparse ``type`` of ``--cycles K,K,...``."""
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"integers separated by commas, not {text!r}") from None


def add_eval_arguments(parser: argparse.ArgumentParser, default_split: str) -> None:
    """The flags of every field of :class:`landscape.artifacts.EvalOptions` (``--split`` defaulting to
    ``default_split`` for this tool), then the plain ``.pt`` description and outputs."""
    add_dataclass_arguments(parser, EvalOptions, defaults={"splits": SPLIT_CHOICES[default_split]})
    add_file_arguments(parser)


def add_io_arguments(parser: argparse.ArgumentParser) -> None:
    """Device, data location and ``--trust-code`` (as in :class:`EvalOptions`), plain ``.pt`` description and
    outputs: the flags of a tool that evaluates no landscape (and brings its own ``--progress``)."""
    add_dataclass_arguments(parser, EvalOptions, only=("device", "data_dir", "trust_code"))
    add_file_arguments(parser)


def add_file_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--dataset`` of a plain ``.pt`` state_dict, ``--json`` and ``--plot`` outputs."""
    parser.add_argument("--model", default=None, metavar="NAME", help="model of a plain .pt state_dict")
    parser.add_argument("--dataset", default=None, metavar="NAME", help="data set of a plain .pt state_dict")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the result as JSON")
    parser.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="write a figure")


# The most a command line may ask for: beyond these a scan or estimate would not fit in memory or finish
# (each grid point is one evaluation of the whole data set; each probe a vector of every weight).
MAX_POINTS = 10_001
MAX_HULL_SAMPLES = 100_000
MAX_RESOLUTION = 1_001
MAX_PROBES = 10_000
MAX_LANCZOS_RUNS = 1_000


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
    ``--model`` and ``--dataset`` (user code named there is the user's own choice, so it is trusted)."""
    p = Path(path)
    if p.suffix not in (".pt", ".pth"):
        return load_checkpoint(p, trust_code=args.trust_code)
    if not (args.model and args.dataset):
        raise UserError(f"{p} is a plain PyTorch file; pass --model and --dataset to read it as a state_dict")
    data_dir = args.data_dir or DEFAULT_DATA_DIR
    spec = mnist1d_spec(data_dir) if args.dataset == "mnist1d" else {"name": args.dataset, "data_dir": data_dir}
    classes = cached_dataset(spec, "cpu", data_dir, trust_code=True).num_classes
    return load_plain_state_dict(p, model_spec(args.model, classes), spec, trust_code=True)


def split_header(splits: list[str]) -> str:
    """Column titles of a printed table with a loss and an error column per split."""
    return "".join(f" {s + ' loss':>11} {s + ' err':>9}" for s in splits)


def split_cells(values: list[tuple[float, float]]) -> str:
    """The matching cells: ``(loss, error)`` per split, error as a fraction printed in percent."""
    return "".join(f" {loss:>11.4f} {100 * error:>8.2f}%" for loss, error in values)


def write_json(path: Path, obj: Any) -> None:
    """Indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAX_REPLACED_BYTES = 64 * 2**20  # no output of ours is larger: a bigger file is somebody else's


def _looks_like(path: Path, kind: str, markers: frozenset[str]) -> bool:
    """Whether the existing regular file ``path`` is an earlier output of this kind that a rerun may replace:
    a PNG that matplotlib wrote (its ``Software`` text chunk), or a JSON object holding one of the keys
    ``markers`` that this tool writes (a user's own JSON file holds none of them)."""
    if path.stat().st_size > _MAX_REPLACED_BYTES:
        return False
    data = path.read_bytes()
    if kind == "png":
        return data.startswith(PNG_MAGIC) and b"Software\x00Matplotlib" in data[:512]
    try:
        body = parse_json(data)
    except BadJSON:
        return False
    return isinstance(body, dict) and bool(markers & set(body))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except (OSError, RuntimeError):  # a link loop: compare the names only
        return a.absolute() == b.absolute()


def check_outputs(outputs: dict[str, Path | None], inputs: list[str | Path],
                  markers: dict[str, set[str]] | None = None) -> None:
    """Refuse, before anything is computed, an output that would destroy a file the program did not make.

    ``outputs`` maps a flag (``--json``) to its path or None; ``inputs`` are the checkpoint files and run
    directories the command reads. An output may not be one of the inputs (also through a link or a hard
    link), lie as an existing file inside an input directory, be a directory, a link or a special file,
    be given twice, or replace an existing file that is not an earlier output of its own kind (a matplotlib
    PNG for ``--plot``; for a JSON flag, a JSON object with one of the keys ``markers[flag]`` that the tool
    writes): outputs never replace inputs or a user's other files.
    """
    markers = markers or {}
    given = {flag: Path(p) for flag, p in outputs.items() if p is not None}
    for flag, path in given.items():
        if not str(path).strip():
            raise UserError(f"{flag} must name a file, not an empty string")
        for other_flag, other in given.items():
            if other_flag < flag and _same_file(path, other):
                raise UserError(f"{other_flag} and {flag} name the same file {path}; give two different files")
        for source in map(Path, inputs):
            if source.is_dir() and path.exists() and path.resolve().is_relative_to(source.resolve()):
                raise UserError(f"{flag} {path} is a file inside the input {source}; outputs never replace inputs, "
                                "choose another file")
            if _same_file(path, source):
                raise UserError(f"{flag} {path} is the input {source}; outputs never replace inputs, choose another "
                                "file")
        if path.is_symlink():
            raise UserError(f"{flag} {path} is a symbolic link; name a regular file (the link is left as it is)")
        if path.is_dir():
            raise UserError(f"{flag} {path} is a directory; name a file in it")
        if path.exists() and not path.is_file():
            raise UserError(f"{flag} {path} is not a regular file (a FIFO or device?); name a regular file")
        kind = "png" if flag == "--plot" else "json"
        if path.is_file() and not _looks_like(path, kind, frozenset(markers.get(flag, ()))):
            raise UserError(f"{flag} {path} exists and is not an earlier {kind.upper()} output of this tool, so it "
                            "is left as it is: choose another file")
        parent = next((p for p in path.absolute().parents if p.exists() or p.is_symlink()), None)
        if parent is not None and not parent.is_dir():
            raise UserError(f"{flag} {path}: {parent} is not a directory")
