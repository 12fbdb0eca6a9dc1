"""One source of truth for a run's hyperparameters.

Each hyperparameter is one field of :class:`RunConfig`; the same field produces the command-line
flag, its help text, preset resolution, validation and the ``config.json`` of a run (the idea of
open_lth's ``foundations/hparams.py``). Values come, in increasing priority, from the field default,
the preset (``--preset`` or the dataset's default preset, see :mod:`training.presets`) and the
command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.artifacts.jsonfile import BadJSON, json_object_flag, parse_json, read_json
from core.data.names import check_dataset_name, dataset_help
from core.errors import ArgumentParser, UserError
from core.imports import TRUST_FLAG, is_import_path
from core.models import zoo_names
from core.seeds import check_seed
from training.engines import ENGINES
from training.presets import DEFAULT_PRESET, GENERIC_PRESET, PRESETS

PRESET_FIELDS = frozenset(k for preset in PRESETS.values() for k in preset)

LOGGERS = ("none", "tensorboard", "wandb", "mlflow")
REWINDS = ("ticket", "lr", "none")
PRUNE_METHODS = ("global", "layerwise", "random")
# Where and how a run executes, not what it computes: may change on --resume, and is left out of the
# config stored in checkpoints (so the same run gives the same files wherever it is written).
RUNTIME_FIELDS = frozenset({"resume", "overwrite", "device", "progress", "out", "workers", "engine", "download",
                            "data_dir", "channels_last", "compile", "log", "trust_code"})
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)  # more loader processes than cores only compete for them

# The Python types a field of each annotation accepts, and how a message names them.
FIELD_TYPES = {"int": ((int,), "an integer"), "float": ((int, float), "a number"), "str": ((str,), "a string"),
               "bool": ((bool,), "true or false"), "list[str]": ((list, tuple), "a list of strings")}


def _opt(help_: str, default: Any = None, **argparse_kwargs: Any) -> Any:
    """A config field: ``default`` None means "taken from the preset"."""
    return field(default=default, metadata={"help": help_, **argparse_kwargs})


def _repeated(help_: str) -> Any:
    """A config field given as a repeatable flag; a list, empty by default."""
    return field(default_factory=list, metadata={"help": help_})


@dataclass
class RunConfig:
    """Every hyperparameter of a SWAMP / IMP run (see docs/hyperparameters.md for their sources)."""

    # data
    dataset: str = _opt(dataset_help(), "mnist1d")
    dataset_kwargs: str = _opt("JSON object of keyword arguments for a torchvision: or PACKAGE.MODULE:CALLABLE "
                               "dataset, e.g. '{\"size\": 256}'", "{}")
    data_dir: str = _opt("where datasets live / are cached", "data")
    download: bool = _opt("allow torchvision to download a dataset (needs internet)", False)
    batch_size: int = _opt("training mini-batch size")
    eval_batch_size: int = _opt("batch size for evaluation and BN recalibration", 1000)
    workers: int = _opt("data-loader worker processes for datasets streamed from disk (default min(4, CPU cores): "
                        f"{DEFAULT_WORKERS} here; with random transforms the worker count is part of what a run "
                        "computes, and config.json records it)", DEFAULT_WORKERS)
    # model
    model: str = _opt(f"a zoo model ({zoo_names()}), torchvision:NAME, timm:NAME or "
                      "PACKAGE.MODULE:CALLABLE(num_classes=..., **model_kwargs)")
    model_kwargs: str = _opt("JSON object of extra model arguments, e.g. '{\"width\": 64}'", "{}")
    trust_code: bool = _opt("with --resume: import the PACKAGE.MODULE:CALLABLE model or dataset the run's "
                            "config.json names (naming it with --model / --dataset consents as well)", False)
    # SWAMP / IMP
    particles: int = _opt("particles per cycle (1 = IMP)", 4)
    particles_from_cycle: int = _opt("SWAMP+: one particle before this cycle, --particles from it", 0)
    cycles: int = _opt("pruning cycles; cycle k trains at density (1-prune_ratio)^k")
    epochs: int = _opt("training epochs per particle per cycle")
    rewind_epochs: int = _opt("dense epochs that produce the matching ticket")
    rewind: str = _opt("what each cycle starts from: ticket, lr (previous solution, LR restarted) "
                       "or none (previous solution, fine-tuned at --finetune-lr)", "ticket",
                       choices=REWINDS)
    prune_ratio: float = _opt("fraction of the remaining prunable weights removed per cycle", 0.2)
    prune_method: str = _opt("global (magnitude), layerwise (magnitude) or random", "global",
                             choices=PRUNE_METHODS)
    prune_exclude: list[str] = _repeated("keep the prunable weights (conv, linear, recurrent, attention) whose "
                                         "parameter name matches this regular expression (re.search) dense, "
                                         "e.g. '^conv1\\.' or '^fc\\.'; repeatable")
    # optimisation
    lr: float = _opt("peak SGD learning rate")
    momentum: float = _opt("SGD momentum", 0.9)
    weight_decay: float = _opt("SGD weight decay")
    swa: bool = _opt("stochastic weight averaging in every particle", True)
    swa_start: float = _opt("SWA over the last (1 - swa_start) of each cycle's epochs", 0.75)
    swa_lr: float = _opt("constant learning rate during SWA")
    finetune_lr: float = _opt("constant learning rate with --rewind none", 0.01)
    bn_samples: int = _opt("training samples for BN recalibration (0 = all)", 0)
    # run
    seed: int = _opt("master seed; particle p of cycle k derives its data order from (seed, k, p)", 0)
    out: str = _opt("run directory")
    resume: bool = _opt("continue the run in --out", False)
    overwrite: bool = _opt("replace an existing run directory", False)
    device: str = _opt("auto, cpu, cuda or cuda:N", "auto")
    engine: str = _opt("how particles run", "auto", choices=tuple(ENGINES))
    amp: bool = _opt("bf16 autocast of training forward passes (for GPUs; changes the numerics, so a run keeps it)",
                     False)
    channels_last: bool = _opt("channels-last memory format for 2-D convolutions (for GPUs)", False)
    compile: bool = _opt("torch.compile the training model (for GPUs; the first steps are slower)", False)
    preset: str = _opt("named hyperparameter set: " + ", ".join(PRESETS))
    progress: bool = _opt("tqdm progress bars (default: only on a terminal)")
    log: str = _opt("write per-epoch and per-cycle scalars with tensorboard, wandb or mlflow (none: only the run "
                    "directory's own files)", "none", choices=LOGGERS)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hyperparameters(self) -> dict[str, Any]:
        """The fields that define the run's results (all but :data:`RUNTIME_FIELDS`)."""
        return {k: v for k, v in self.to_json().items() if k not in RUNTIME_FIELDS}

    @property
    def model_kwargs_dict(self) -> dict[str, Any]:
        return parse_json(self.model_kwargs)

    @property
    def dataset_kwargs_dict(self) -> dict[str, Any]:
        return parse_json(self.dataset_kwargs)

    @property
    def stackable(self) -> bool:
        """Whether particles may be stacked (``vectorized``): bf16 autocast and the channels-last layout
        fail inside ``torch.func.vmap`` (BatchNorm's running statistics, layout queries; seen on CUDA)."""
        return not (self.amp or self.channels_last)

    def particles_in_cycle(self, cycle: int) -> int:
        """N particles, or one before ``particles_from_cycle`` (SWAMP+)."""
        return self.particles if cycle >= self.particles_from_cycle else 1

    def swa_epochs(self) -> int:
        """Number of final epochs whose end-of-epoch snapshots enter the SWA average."""
        if not self.swa:
            return 0
        return max(1, self.epochs - int(round(self.swa_start * self.epochs)))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(name: str, value: Any) -> str:
    """How a flag's help names its default ``value`` (None: the preset's, where the preset sets it)."""
    if isinstance(value, bool):
        return f" (default {'on' if value else 'off'})"
    if value is not None:
        return f" (default {value})"
    if name in PRESET_FIELDS:
        return " (default: from the preset; --show-config prints it)"
    if name == "preset":
        return (" (default: the dataset's, " + ", ".join(f"{v} for {k}" for k, v in DEFAULT_PRESET.items())
                + f", {GENERIC_PRESET} for any other)")
    return ""


def build_parser(prog: str, description: str, defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per :class:`RunConfig` field; every default is None (so that a
    given flag can be told from an absent one), and each help names the default of the program, the
    field's own or ``defaults`` (the ``base`` of :func:`parse_config`)."""
    defaults = defaults or {}
    parser = ArgumentParser(prog=prog, description=description)
    for f in fields(RunConfig):
        kwargs: dict[str, Any] = {"default": None, "help": f.metadata["help"]}
        if f.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.type == "list[str]":
            kwargs.update(action="append", metavar=f.name.upper().split("_")[-1])
        elif "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        else:
            kwargs["type"] = {"int": int, "float": float}.get(str(f.type), str)
            kwargs["metavar"] = f.name.upper()
        if f.name == "out":
            kwargs["help"] += (" (default runs/<preset>-<kind>-n<particles>-s<seed>, <kind> imp for one particle "
                               "without SWA, else swamp; with no flags "
                               f"{resolve_config(argparse.Namespace(), defaults).out})")
        elif "default" not in kwargs["help"] and f.type != "list[str]":
            kwargs["help"] += _default_text(f.name, defaults.get(f.name, f.default))
        parser.add_argument(_flag(f.name), **kwargs)
    parser.add_argument("--show-config", action="store_true",
                        help="print the resolved configuration (preset, program defaults and flags applied) as JSON "
                             "and exit; nothing is trained or written")
    return parser


def resolve_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> RunConfig:
    """Field defaults < ``base`` (program defaults, or a resumed run's config) < preset < command line.

    A preset only fills values that neither ``base`` nor the command line give.
    """
    given = {k: v for k, v in vars(args).items() if v is not None}
    base = base or {}
    dataset = given.get("dataset", base.get("dataset", "mnist1d"))
    preset_name = given.get("preset") or base.get("preset") or DEFAULT_PRESET.get(dataset, GENERIC_PRESET)
    if preset_name not in PRESETS:
        raise UserError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset_name], **base, **given, "preset": preset_name}
    cfg = RunConfig(**values)
    if cfg.out is None:
        kind = "swamp" if cfg.particles > 1 or cfg.swa else "imp"
        cfg.out = f"runs/{preset_name}-{kind}-n{cfg.particles}-s{cfg.seed}"
    validate(cfg)
    return cfg


def field_problem(values: dict[str, Any]) -> tuple[str, str] | None:
    """``(field, what it must be)`` for the first value of a :class:`RunConfig` field in ``values`` of the
    wrong type or outside its choices; None if all fit. None is a value only where the field's default is."""
    for f in fields(RunConfig):
        if f.name not in values or (values[f.name] is None and f.default is None):
            continue
        value = values[f.name]
        types, name = FIELD_TYPES[str(f.type)]
        if not isinstance(value, types) or (isinstance(value, bool) and f.type != "bool"):
            return f.name, f"{name}, not {value!r}"
        if f.type == "list[str]" and not all(isinstance(v, str) for v in value):
            return f.name, f"{name}, not {value!r}"
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            return f.name, f"one of {', '.join(f.metadata['choices'])}, not {value!r}"
    return None


def read_saved(path: Path) -> dict[str, Any]:
    """The JSON object of a run's ``config.json``, its :class:`RunConfig` fields type-checked (one
    :class:`UserError` line naming the file and what is wrong otherwise)."""
    try:
        saved = read_json(path)
    except (OSError, BadJSON) as err:
        raise UserError(f"cannot resume: {path} is unreadable ({err}); restore it, or start the run again "
                        "with --overwrite") from None
    if not isinstance(saved, dict):
        problem = f"a JSON object is expected, not {type(saved).__name__}"
    elif field_problem(saved):
        problem = "`{}` must be {}".format(*field_problem(saved))
    else:
        return saved
    raise UserError(f"cannot resume: {path} is not a run's config: {problem}; restore it, or start the run again "
                    "with --overwrite")


def saved_config(out: str) -> dict[str, Any]:
    """The hyperparameters stored in ``OUT/config.json`` (empty if there is none), checked as a whole."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return {}
    names = {f.name for f in fields(RunConfig)} - {"resume", "overwrite", "out"}
    saved = {k: v for k, v in read_saved(path).items() if k in names}
    try:
        resolve_config(argparse.Namespace(), saved)
    except UserError as err:
        raise UserError(f"cannot resume: {path} is not a run's config: {err}; restore it, or start the run again "
                        "with --overwrite") from None
    return saved


def _json_object(text: str, flag: str, example: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object, else one :class:`UserError` line naming ``flag``."""
    return json_object_flag(text, flag, example)


def validate(cfg: RunConfig) -> None:
    """Refuse impossible hyperparameters with one clear line (raises :class:`UserError`)."""
    if isinstance(cfg.dataset, str):
        check_dataset_name(cfg.dataset)
    missing = [f.name for f in fields(cfg) if getattr(cfg, f.name) is None and f.name != "progress"]
    if "model" in missing and cfg.preset == GENERIC_PRESET:
        raise UserError(f"--dataset {cfg.dataset} has no default model; give --model (a zoo name, torchvision:NAME, "
                        "timm:NAME or PACKAGE.MODULE:CALLABLE)")
    if missing:
        raise UserError("no value for " + ", ".join(_flag(m) for m in missing) + "; give it or a --preset")
    problem = field_problem(cfg.to_json())
    if problem:
        raise UserError(f"{_flag(problem[0])} must be {problem[1]}")
    floats = [f.name for f in fields(cfg) if f.type == "float"]
    for name in floats:
        if not math.isfinite(getattr(cfg, name)):
            raise UserError(f"{_flag(name)} must be a finite number")
    checks = [
        (0.0 < cfg.prune_ratio < 1.0, "--prune-ratio must lie in (0, 1)"),
        (cfg.particles >= 1, "--particles must be at least 1"),
        (cfg.particles_from_cycle >= 0, "--particles-from-cycle must be >= 0"),
        (cfg.cycles >= 1, "--cycles must be at least 1"),
        (cfg.particles_from_cycle < cfg.cycles,
         f"--particles-from-cycle must be below --cycles ({cfg.cycles}); 0 means --particles from the first cycle"),
        (cfg.epochs >= 1, "--epochs must be positive"),
        (cfg.rewind_epochs >= 0, "--rewind-epochs must be >= 0"),
        (0.0 <= cfg.swa_start < 1.0, "--swa-start must lie in [0, 1)"),
        (cfg.lr > 0 and cfg.swa_lr > 0 and cfg.finetune_lr > 0, "learning rates must be positive"),
        (0.0 <= cfg.momentum < 1.0, "--momentum must lie in [0, 1)"),
        (cfg.weight_decay >= 0.0, "--weight-decay must be >= 0"),
        (cfg.batch_size >= 1 and cfg.eval_batch_size >= 1, "batch sizes must be positive"),
        (cfg.bn_samples >= 0, "--bn-samples must be >= 0 (0 = all)"),
        (cfg.workers >= 0, "--workers must be >= 0"),
        (cfg.engine != "vectorized" or cfg.stackable,
         "--engine vectorized does not combine with --amp or --channels-last (they fail inside torch.func.vmap); "
         "use --engine sequential or auto"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    check_seed(cfg.seed)
    kwargs = _json_object(cfg.model_kwargs, "--model-kwargs", '{"width": 64}')
    if "num_classes" in kwargs:  # the model's output must match the labels, so the data set decides it
        raise UserError("--model-kwargs: num_classes comes from the data set; leave it out of --model-kwargs")
    _json_object(cfg.dataset_kwargs, "--dataset-kwargs", '{"size": 256}')
    for pattern in cfg.prune_exclude:
        try:
            re.compile(pattern)
        except re.error as err:
            raise UserError(f"--prune-exclude {pattern!r} is not a regular expression ({err})") from None


def check_data_dir(cfg: RunConfig) -> None:
    """Refuse a ``--data-dir`` the run cannot use, creating nothing: one that is a file, or, for MNIST-1D
    (generated and cached under ``DIR/mnist1d``), one that holds no cache and cannot be created or written."""
    root = Path(cfg.data_dir)
    if root.exists() and not root.is_dir():
        raise UserError(f"--data-dir {root} is a file, not a directory; give a directory")
    cache = root / "mnist1d"
    if cfg.dataset != "mnist1d" or (cache.is_dir() and any(cache.glob("mnist1d-*.safetensors"))):
        return
    nearest = next(p for p in (cache, *cache.parents) if p.exists() or p == Path(p.anchor or "."))
    if not nearest.is_dir() or not os.access(nearest, os.W_OK | os.X_OK):
        raise UserError(f"--data-dir {root}: MNIST-1D is generated and cached in {cache}, which cannot be created "
                        f"or written ({nearest} is {'read-only' if nearest.is_dir() else 'not a directory'}); "
                        "give a writable directory")


def parse_config(argv: Sequence[str] | None, prog: str, description: str,
                 base: dict[str, Any] | None = None) -> RunConfig:
    """Parse ``argv`` into a validated :class:`RunConfig` (argparse usage errors exit with 2); with
    ``--show-config``, print that configuration as JSON and exit with 0 instead.

    With ``--resume --out DIR`` the run's saved settings are the base, so no flag needs repeating.
    """
    args = build_parser(prog, description, base).parse_args(argv)
    show = args.show_config
    del args.show_config
    if args.resume and args.out:
        saved = saved_config(args.out)
        check_saved_code(saved, args, Path(args.out) / "config.json")
        base = {**(base or {}), **saved}
    cfg = resolve_config(args, base)
    if show:
        print(json.dumps(cfg.to_json(), indent=2))
        raise SystemExit(0)
    return cfg


def check_saved_code(saved: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    """Refuse to resume a run whose ``config.json`` names user code (``PACKAGE.MODULE:CALLABLE`` model or
    dataset) that this command line neither names itself nor trusts (``--trust-code``): a file must not
    make the tool import code (:mod:`core.imports`)."""
    for field_name in ("model", "dataset"):
        name = saved.get(field_name)
        if isinstance(name, str) and is_import_path(name) and getattr(args, field_name) is None \
                and not args.trust_code:
            raise UserError(f"{path} names the {field_name} {name}, which is user code; importing it runs that "
                            f"code, so pass {TRUST_FLAG} (or --{field_name} {name}) if you trust it")
