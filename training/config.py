"""One source of truth for a run's hyperparameters.

Each hyperparameter is one field of :class:`RunConfig`; the same field produces the command-line
flag, its help text, preset resolution, validation and the ``config.json`` of a run (the idea of
open_lth's ``foundations/hparams.py``), through the toolkit's one option mechanism,
:mod:`core.options`. Values come, in increasing priority, from the field default, the preset
(``--preset`` or the dataset's default preset, see :mod:`training.presets`) and the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core.artifacts.jsonfile import BadJSON, json_object_flag, parse_json, read_json
from core.data.names import check_dataset_name, dataset_help
from core.errors import ArgumentParser, UserError
from core.imports import TRUST_FLAG, is_import_path
from core.models import zoo_names
from core.options import add_dataclass_arguments, check_fields, field_problem, flag_of, option, repeated, to_json
from core.pruning import PRUNE_SCHEDULES, max_linear_cycles, runner_methods
from core.seeds import check_seed
from training.engines import ENGINES
from training.optim import DEFAULT_LOSS, DEFAULT_OPTIMIZER, check_loss, check_optimizer, optimizer_fn
from training.presets import DEFAULT_PRESET, GENERIC_PRESET, PRESETS
from training.schedules import DEFAULT_SCHEDULE, SCHEDULES, check_schedule

LOGGERS = ("none", "tensorboard", "wandb", "mlflow")
REWINDS = ("ticket", "lr", "none")
PRUNE_METHODS = runner_methods()  # the criteria of core.pruning.CRITERIA that need no data
# Where and how a run executes, not what it computes: may change on --resume, and is left out of the
# config stored in checkpoints (so the same run gives the same files wherever it is written).
RUNTIME_FIELDS = frozenset({"resume", "overwrite", "device", "progress", "out", "workers", "engine", "download",
                            "data_dir", "channels_last", "compile", "log", "trust_code"})
# Settings added after checkpoints existed: their stored config leaves them out at these defaults, so a run
# with the defaults writes the same bytes as before they existed (readers take a missing one as its default).
RECORDED_WHEN_SET = {"optimizer": DEFAULT_OPTIMIZER, "optimizer_kwargs": "{}", "loss": DEFAULT_LOSS,
                     "label_smoothing": 0.0, "schedule": DEFAULT_SCHEDULE, "schedule_kwargs": "{}", "warmup_epochs": 0,
                     "prune_schedule": "geometric", "prune_biases": False}
# The settings the stacked engines (vectorized, distributed) train with at their defaults only: SGD, cross-entropy.
STACKED_DEFAULTS = ("optimizer", "optimizer_kwargs", "loss", "label_smoothing")
# Fields naming user code (PACKAGE.MODULE:CALLABLE) that --resume imports only with consent.
CODE_FIELDS = ("model", "dataset", "optimizer", "loss", "schedule")
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)  # more loader processes than cores only compete for them

FROM_PRESET = "from the preset; --show-config prints it"
PRESET_TEXT = ("the dataset's, " + ", ".join(f"{v} for {k}" for k, v in DEFAULT_PRESET.items())
               + f", {GENERIC_PRESET} for any other")
OUT_TEXT = "runs/<preset>-<kind>-n<particles>-s<seed>, <kind> imp for one particle without SWA, else swamp"


def _from_preset(help_: str) -> Any:
    """A field whose default the preset gives (None until it is resolved)."""
    return option(None, help_, default_text=FROM_PRESET)


@dataclass
class RunConfig:
    """Every hyperparameter of a SWAMP / IMP run (see docs/hyperparameters.md for their sources)."""

    # data
    dataset: str = option("mnist1d", dataset_help())
    dataset_kwargs: str = option("{}", "JSON object of keyword arguments for a torchvision: or PACKAGE.MODULE:CALLABLE "
                                 "dataset, e.g. '{\"size\": 256}'")
    data_dir: str = option("data", "where datasets live / are cached")
    download: bool = option(False, "allow torchvision to download a dataset (needs internet)")
    batch_size: int = _from_preset("training mini-batch size")
    eval_batch_size: int = option(1000, "batch size for evaluation and BN recalibration")
    workers: int = option(DEFAULT_WORKERS, "data-loader worker processes for datasets streamed from disk (default "
                          f"min(4, CPU cores): {DEFAULT_WORKERS} here; with random transforms the worker count is part "
                          "of what a run computes, and config.json records it)")
    # model
    model: str = _from_preset(f"a zoo model ({zoo_names()}), torchvision:NAME, timm:NAME or "
                              "PACKAGE.MODULE:CALLABLE(num_classes=..., **model_kwargs)")
    model_kwargs: str = option("{}", "JSON object of extra model arguments, e.g. '{\"width\": 64}'")
    trust_code: bool = option(False, "with --resume: import the PACKAGE.MODULE:CALLABLE model, dataset, optimizer, "
                              "loss or schedule the run's config.json names (naming it with its flag consents as "
                              "well)")
    # SWAMP / IMP
    particles: int = option(4, "particles per cycle (1 = IMP)")
    particles_from_cycle: int = option(0, "SWAMP+: one particle before this cycle, --particles from it")
    cycles: int = _from_preset("pruning cycles; cycle k trains at density (1-prune_ratio)^k (--prune-schedule)")
    epochs: int = _from_preset("training epochs per particle per cycle")
    rewind_epochs: int = _from_preset("dense epochs that produce the matching ticket")
    rewind: str = option("ticket", "what each cycle starts from: ticket, lr (previous solution, LR restarted) or none "
                         "(previous solution, fine-tuned at --finetune-lr)", choices=REWINDS)
    prune_ratio: float = option(0.2, "fraction of the remaining prunable weights removed per cycle")
    prune_method: str = option("global", "global (magnitude), layerwise (magnitude) or random", choices=PRUNE_METHODS)
    prune_schedule: str = option("geometric", "geometric: cycle k at density (1-prune_ratio)^k; linear: at "
                                 "1 - k*prune_ratio (the MNIST-1D paper's lottery tickets)", choices=PRUNE_SCHEDULES)
    prune_biases: bool = option(False, "prune the biases of the pruned layers too (the MNIST-1D paper's lottery "
                                "tickets)")
    prune_exclude: list[str] = repeated("keep the prunable weights (conv, linear, recurrent, attention) whose "
                                        "parameter name matches this regular expression (re.search) dense, "
                                        "e.g. '^conv1\\.' or '^fc\\.'; repeatable", metavar="EXCLUDE")
    # optimisation
    lr: float = _from_preset("peak learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = _from_preset("weight decay (SGD and Adam: L2 in the gradient; AdamW: decoupled)")
    optimizer: str = option(DEFAULT_OPTIMIZER, "sgd, adam, adamw or PACKAGE.MODULE:CALLABLE(params, lr) returning a "
                            "torch.optim.Optimizer (--momentum applies to sgd only)")
    optimizer_kwargs: str = option("{}", "JSON object of the optimizer's other settings: sgd dampening, nesterov, "
                                   "maximize; adam and adamw betas, eps, amsgrad, maximize; e.g. "
                                   "'{\"betas\": [0.9, 0.95]}'")
    loss: str = option(DEFAULT_LOSS, "cross-entropy (class labels), mse (real-valued targets of the output's shape), "
                       "model (the model's own outputs.loss, labels passed in: Hugging Face models) or "
                       "PACKAGE.MODULE:CALLABLE(outputs, targets) returning the batch's mean loss")
    label_smoothing: float = option(0.0, "label smoothing of --loss cross-entropy, in [0, 1)")
    schedule: str = option(DEFAULT_SCHEDULE, f"learning rate of a particle's epochs before SWA: {', '.join(SCHEDULES)} "
                           "or PACKAGE.MODULE:CALLABLE(epoch, step, steps_per_epoch, epochs) returning the rate")
    schedule_kwargs: str = option("{}", "JSON object of --schedule step's settings: every (epochs between two steps, "
                                  "required) and factor (0.1 unless given), e.g. '{\"every\": 30, \"factor\": 0.1}'")
    warmup_epochs: int = option(0, "epochs of linear warm-up to --lr before --schedule cosine, constant or step",
                                least=0)
    swa: bool = option(True, "stochastic weight averaging in every particle")
    swa_start: float = option(0.75, "SWA over the last (1 - swa_start) of each cycle's epochs")
    swa_lr: float = _from_preset("constant learning rate during SWA")
    finetune_lr: float = option(0.01, "constant learning rate with --rewind none")
    bn_samples: int = option(0, "training samples for BN recalibration (0 = all)")
    # run
    seed: int = option(0, "master seed; particle p of cycle k derives its data order from (seed, k, p)")
    init_seed: int | None = option(None, "seed of the initial weights alone (default: --seed); the data order, "
                                         "pruning and BatchNorm streams keep --seed, so two runs that differ only here "
                                         "differ only in their initialisation")
    out: str = option(None, "run directory", default_text=OUT_TEXT)
    resume: bool = option(False, "continue the run in --out")
    overwrite: bool = option(False, "replace an existing run directory")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    engine: str = option("auto", "how particles run", choices=tuple(ENGINES))
    amp: bool = option(False, "bf16 autocast of training forward passes (for GPUs; changes the numerics, so a run "
                       "keeps it)")
    channels_last: bool = option(False, "channels-last memory format for 2-D convolutions (for GPUs)")
    compile: bool = option(False, "torch.compile the training model (for GPUs; the first steps are slower)")
    preset: str = option(None, "named hyperparameter set: " + ", ".join(PRESETS), default_text=PRESET_TEXT)
    progress: bool = option(None, "tqdm progress bars", default_text="only on a terminal")
    log: str = option("none", "write per-epoch and per-cycle scalars with tensorboard, wandb or mlflow (none: only the "
                      "run directory's own files)", choices=LOGGERS)

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    def hyperparameters(self) -> dict[str, Any]:
        """The fields that define the run's results (all but :data:`RUNTIME_FIELDS`; those of
        :data:`RECORDED_WHEN_SET` only when they differ from their defaults)."""
        return {k: v for k, v in self.to_json().items()
                if k not in RUNTIME_FIELDS and not (k in RECORDED_WHEN_SET and RECORDED_WHEN_SET[k] == v)}

    def own_training(self) -> list[str]:
        """The flags that set another optimizer or loss than the stacked engines' SGD and cross-entropy
        (``vectorized``, ``distributed``), or a user's schedule, e.g. ``['--optimizer adam']``; empty for the
        defaults. The built-in schedules are theirs as well: every engine trains with the one
        :class:`training.schedules.Schedule` the run gives."""
        own = [f"{flag_of(k)} {getattr(self, k)}" for k in STACKED_DEFAULTS if getattr(self, k) != RECORDED_WHEN_SET[k]]
        return own + ([f"--schedule {self.schedule}"] if self.schedule not in SCHEDULES else [])

    @property
    def model_kwargs_dict(self) -> dict[str, Any]:
        return parse_json(self.model_kwargs)

    @property
    def dataset_kwargs_dict(self) -> dict[str, Any]:
        return parse_json(self.dataset_kwargs)

    @property
    def stackable(self) -> bool:
        """Whether particles may be stacked (``vectorized``): bf16 autocast and the channels-last layout
        fail inside ``torch.func.vmap`` (BatchNorm's running statistics, layout queries; seen on CUDA), and
        the stacked engine trains with SGD, cross-entropy and a built-in schedule only (:meth:`own_training`)."""
        return not (self.amp or self.channels_last or self.own_training())

    def particles_in_cycle(self, cycle: int) -> int:
        """N particles, or one before ``particles_from_cycle`` (SWAMP+)."""
        return self.particles if cycle >= self.particles_from_cycle else 1

    def swa_epochs(self) -> int:
        """Number of final epochs whose end-of-epoch snapshots enter the SWA average."""
        if not self.swa:
            return 0
        return max(1, self.epochs - int(round(self.swa_start * self.epochs)))


def build_parser(prog: str, description: str, defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per :class:`RunConfig` field; every default is None (so that a
    given flag can be told from an absent one), and each help names the default of the program, the
    field's own or ``defaults`` (the ``base`` of :func:`parse_config`)."""
    defaults = defaults or {}
    parser = ArgumentParser(prog=prog, description=description)
    out = f"{OUT_TEXT}; with no flags {resolve_config(argparse.Namespace(), defaults).out}"
    add_dataclass_arguments(parser, RunConfig, defaults={k: v for k, v in defaults.items() if k != "out"},
                            unset=True, default_words={"out": out})
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
    elif field_problem(RunConfig, saved):
        problem = "`{}` must be {}".format(*field_problem(RunConfig, saved))
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


NONE_MEANS_DEFAULT = ("progress", "init_seed")  # fields whose None is a value (a terminal decides; --seed's), not a gap


def validate(cfg: RunConfig) -> None:
    """Refuse impossible hyperparameters with one clear line (raises :class:`UserError`)."""
    if isinstance(cfg.dataset, str):
        check_dataset_name(cfg.dataset)
    missing = [f.name for f in fields(cfg) if getattr(cfg, f.name) is None and f.name not in NONE_MEANS_DEFAULT]
    if "model" in missing and cfg.preset == GENERIC_PRESET:
        raise UserError(f"--dataset {cfg.dataset} has no default model; give --model (a zoo name, torchvision:NAME, "
                        "timm:NAME or PACKAGE.MODULE:CALLABLE)")
    if missing:
        raise UserError("no value for " + ", ".join(flag_of(m) for m in missing) + "; give it or a --preset")
    check_fields(cfg)
    floats = [f.name for f in fields(cfg) if f.type == "float"]
    for name in floats:
        if not math.isfinite(getattr(cfg, name)):
            raise UserError(f"{flag_of(name)} must be a finite number")
    linear_cycles = max_linear_cycles(cfg.prune_ratio) if 0.0 < cfg.prune_ratio < 1.0 else None
    checks = [
        (0.0 < cfg.prune_ratio < 1.0, "--prune-ratio must lie in (0, 1)"),
        (cfg.prune_schedule != "linear" or linear_cycles is None or cfg.cycles <= linear_cycles,
         f"--prune-schedule linear with --prune-ratio {cfg.prune_ratio} reaches density 0 at cycle "
         f"{linear_cycles}; use at most --cycles {linear_cycles}"),
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
        (cfg.engine != "vectorized" or not (cfg.amp or cfg.channels_last),
         "--engine vectorized does not combine with --amp or --channels-last (they fail inside torch.func.vmap); "
         "use --engine sequential or auto"),
        (cfg.engine not in ("vectorized", "distributed") or not cfg.own_training(),
         f"--engine {cfg.engine} trains with SGD, cross-entropy and a built-in schedule only, not "
         f"{', '.join(cfg.own_training())}; use --engine sequential or auto"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    check_seed(cfg.seed)
    if cfg.init_seed is not None:
        check_seed(cfg.init_seed, "--init-seed")
    kwargs = _json_object(cfg.model_kwargs, "--model-kwargs", '{"width": 64}')
    if "num_classes" in kwargs:  # the model's output must match the labels, so the data set decides it
        raise UserError("--model-kwargs: num_classes comes from the data set; leave it out of --model-kwargs")
    _json_object(cfg.dataset_kwargs, "--dataset-kwargs", '{"size": 256}')
    if is_import_path(cfg.optimizer):  # imported when the run starts, with the user's consent
        check_optimizer(cfg.optimizer, cfg.optimizer_kwargs)
    else:
        optimizer_fn(cfg.optimizer, cfg.optimizer_kwargs, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    check_loss(cfg.loss, cfg.label_smoothing)
    check_schedule(cfg.schedule, cfg.schedule_kwargs, cfg.warmup_epochs, cfg.epochs - cfg.swa_epochs())
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
    """Refuse to resume a run whose ``config.json`` names user code (``PACKAGE.MODULE:CALLABLE`` model,
    dataset, optimizer, loss or schedule) that this command line neither names itself nor trusts (``--trust-code``):
    a file must not make the tool import code (:mod:`core.imports`)."""
    for field_name in CODE_FIELDS:
        name = saved.get(field_name)
        if isinstance(name, str) and is_import_path(name) and getattr(args, field_name) is None \
                and not args.trust_code:
            raise UserError(f"{path} names the {field_name} {name}, which is user code; importing it runs that "
                            f"code, so pass {TRUST_FLAG} (or --{field_name} {name}) if you trust it")
