"""The one module of :mod:`landscape` that reads the toolkit's artifacts: checkpoint files and run directories.

It turns checkpoints into what the library (:mod:`landscape.combination`, :mod:`landscape.connectivity`,
:mod:`landscape.curvature`) takes -- a model, its states, masks and data batches -- for the command-line
tools: compatible checkpoints (:func:`load_compatible`), their mask comparison, their data set
(:func:`checkpoint_data`), the model, splits and BatchNorm batches the library's scans take
(:class:`CheckpointSet`: the checkpoint's train/test splits and a seeded BatchNorm subsample of training data,
the same at every point so that the landscape stays smooth; ``bn_recal=0`` combines the stored statistics like
the weights), and the checkpoints of a run directory
(:func:`run_particles`, :func:`run_solutions`, :func:`run_checkpoints`). Nothing else in
:mod:`landscape` reads run directories.

Data location: data are read (and MNIST-1D is cached) only under the directory the user gives
(``--data-dir``, default ``data`` in the working directory), never where a checkpoint says: a file
must not choose the paths a tool reads or writes. The ``data_dir`` a checkpoint records is ignored.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from core.artifacts.checkpoint import Checkpoint, build_model, load_checkpoint
from core.artifacts.rundir import RunDir
from core.averaging import has_batchnorm
from core.data import Dataset, load_dataset, subsample_indices
from core.device import resolve_device
from core.errors import UserError
from core.evaluate import Evaluation
from core.options import option
from core.pruning import density
from core.seeds import generator
from landscape.batches import DEFAULT_BATCH_SIZE, DEFAULT_BN_SAMPLES
from landscape.combination import Combination

SPLITS = ("train", "test")
DEFAULT_DATA_DIR = "data"  # relative to the working directory
_LOCATION_KEYS = ("data_dir", "workers")  # where a data set lives or how it is read, not what it is

CheckpointLike = Checkpoint | str | os.PathLike


SPLIT_CHOICES = {"train": ("train",), "test": ("test",), "both": SPLITS}  # ``--split`` -> ``splits``


def _split_flag(splits: tuple[str, ...]) -> str:
    return next(name for name, value in SPLIT_CHOICES.items() if value == tuple(splits))


@dataclass(frozen=True)
class EvalOptions:
    """How every point of a landscape is evaluated: each field is a flag of the landscape tools
    (:func:`landscape.tools.cli.add_eval_arguments`) and its help says what it means.

    ``bn_recal`` 0 combines the stored statistics; ``batch_size`` None is the run's ``eval_batch_size``;
    ``data_dir`` None is :data:`DEFAULT_DATA_DIR`, never the path the checkpoints record; ``progress``
    None shows progress bars only on a terminal; ``trust_code`` is the consent to import user code that a
    checkpoint names (a checkpoint loaded with ``trust_code=True`` has it already).
    """

    splits: tuple[str, ...] = option(("test",), "data to evaluate on", name="--split", choices=tuple(SPLIT_CHOICES),
                                     to_field=SPLIT_CHOICES.__getitem__, to_flag=_split_flag)
    bn_recal: int = option(DEFAULT_BN_SAMPLES, "recompute BatchNorm statistics at every point on N seeded train "
                           "samples (all if fewer); 0 combines the stored statistics instead", metavar="N")
    seed: int = option(0, "seed of the BN subsample and of any sampling")
    batch_size: int | None = option(None, "evaluation batch size", metavar="B",
                                    default_text="the run's eval_batch_size")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    data_dir: str | None = option(None, "where the data set is read and cached; the path a checkpoint records is "
                                  "never used", metavar="DIR", default_text=f"{DEFAULT_DATA_DIR}/ in the working "
                                  "directory")
    progress: bool | None = option(None, "progress bars", default_text="only on a terminal")
    trust_code: bool = option(False, "import and run the PACKAGE.MODULE:CALLABLE model or data set a checkpoint "
                              "names (user code); without it such checkpoints are refused")


TEST_SPLIT = EvalOptions()


@dataclass(frozen=True)
class Series:
    """Loss and accuracy at a sequence of points of one split."""

    loss: tuple[float, ...]
    acc: tuple[float, ...]

    @property
    def error(self) -> tuple[float, ...]:
        return tuple(1.0 - a for a in self.acc)

    def to_json(self) -> dict[str, list[float]]:
        return {"loss": list(self.loss), "acc": list(self.acc)}


@dataclass(frozen=True)
class MaskInfo:
    """Whether the checkpoints share one mask; densities of each and of the union of their masks."""

    shared: bool
    density: float
    densities: tuple[float, ...]

    def describe(self) -> str:
        if self.shared:
            return f"shared mask, density {self.density:.4f}"
        each = ", ".join(f"{d:.4f}" for d in self.densities)
        return (f"masks differ (densities {each}): the masked weights are combined as they are; "
                f"union density {self.density:.4f}")

    def to_json(self) -> dict:
        return {"shared": self.shared, "density": self.density, "densities": list(self.densities),
                "note": self.describe()}


def describe_checkpoint(ckpt: Checkpoint) -> str:
    """``kind cycle k particle p, density d`` as far as the metadata says."""
    parts = [ckpt.kind]
    if ckpt.cycle is not None:
        parts.append(f"cycle {ckpt.cycle}")
    if ckpt.particle is not None:
        parts.append(f"particle {ckpt.particle}")
    return " ".join(parts) + f", density {ckpt.density:.4f}"


def _data_identity(spec: Mapping) -> dict:
    return {k: v for k, v in spec.items() if k not in _LOCATION_KEYS}


def check_compatible(ckpts: Sequence[Checkpoint]) -> None:
    """Refuse (:class:`UserError`) checkpoints of different architectures, shapes or data sets."""
    first = ckpts[0]
    for other in ckpts[1:]:
        where = f"{other.path} and {first.path}"
        if other.model != first.model:
            raise UserError(f"{where} are different architectures ({json.dumps(other.model)} vs "
                            f"{json.dumps(first.model)}); compare checkpoints of one model")
        if _data_identity(other.dataset) != _data_identity(first.dataset):
            raise UserError(f"{where} were trained on different data sets ({json.dumps(other.dataset)} vs "
                            f"{json.dumps(first.dataset)}); compare checkpoints of one data set")
        odd = sorted(set(other.state) ^ set(first.state))
        if odd:
            raise UserError(f"{where} do not hold the same tensors (e.g. {odd[0]}); they are not one model")
        for key, value in first.state.items():
            theirs = other.state[key]
            if theirs.shape != value.shape:
                raise UserError(f"{where} differ in the shape of tensor {key} ({tuple(theirs.shape)} vs "
                                f"{tuple(value.shape)}); they are not one model")
            if theirs.dtype != value.dtype:
                raise UserError(f"{where} differ in the dtype of tensor {key} ({theirs.dtype} vs {value.dtype}); "
                                "they are not one model")


def load_compatible(items: Sequence[CheckpointLike], *, trust_code: bool = False) -> tuple[Checkpoint, ...]:
    """Load the checkpoints that are not loaded yet (with ``trust_code``, :func:`load_checkpoint`), then
    :func:`check_compatible`."""
    ckpts = tuple(c if isinstance(c, Checkpoint) else load_checkpoint(c, trust_code=trust_code) for c in items)
    check_compatible(ckpts)
    return ckpts


def mask_info(ckpts: Sequence[Checkpoint]) -> MaskInfo:
    """Compare masks; a checkpoint without masks (a plain state_dict) counts as dense."""
    names = sorted(set().union(*(c.masks for c in ckpts)))
    if not names:
        return MaskInfo(True, 1.0, tuple(1.0 for _ in ckpts))
    masks = [{n: c.masks.get(n, torch.ones_like(c.state[n])).float() for n in names} for c in ckpts]
    shared = all(torch.equal(m[n], masks[0][n]) for m in masks[1:] for n in names)
    union = {n: torch.stack([m[n] for m in masks]).amax(0) for n in names}
    return MaskInfo(shared, density(union), tuple(density(m) for m in masks))


def shared_mask_or_refuse(ckpts: Sequence[Checkpoint], allow_union: bool) -> MaskInfo:
    """:func:`mask_info`, refusing different masks unless ``allow_union`` (``--allow-mask-union``)."""
    info = mask_info(ckpts)
    if not info.shared and not allow_union:
        each = ", ".join(f"{d:.4f}" for d in info.densities)
        raise UserError(f"the checkpoints have different masks (densities {each}); pass --allow-mask-union to "
                        "combine the masked weights as they are")
    return info


@functools.lru_cache(maxsize=2)
def _load_cached(spec_json: str, device: str, trust_code: bool) -> Dataset:
    return load_dataset(json.loads(spec_json), torch.device(device), trust_code=trust_code)


def cached_dataset(spec: Mapping, device: torch.device | str, data_dir: str | os.PathLike | None = None, *,
                   trust_code: bool = False) -> Dataset:
    """The data set ``spec`` describes, read (and cached) under ``data_dir`` (None: :data:`DEFAULT_DATA_DIR`),
    whatever ``spec["data_dir"]`` says; loaded once per (spec, directory, device, trust) and kept for the next
    call. ``trust_code``: consent to import a ``PACKAGE.MODULE:CALLABLE`` data set
    (:func:`core.data.load_dataset`)."""
    located = {**spec, "data_dir": os.path.abspath(data_dir or DEFAULT_DATA_DIR)}
    return _load_cached(json.dumps(located, sort_keys=True), str(device), trust_code)


def checkpoint_data(ckpt: Checkpoint, device: torch.device | str, data_dir: str | os.PathLike | None = None, *,
                    trust_code: bool | None = None) -> Dataset:
    """:func:`cached_dataset` of a checkpoint's data set; refuses a model with another number of classes.
    ``trust_code`` None: the trust the checkpoint was loaded with."""
    trust = ckpt.trust_code if trust_code is None else trust_code
    data = cached_dataset(ckpt.dataset, device, data_dir, trust_code=trust)
    classes = ckpt.model.get("kwargs", {}).get("num_classes")
    if classes is not None and classes != data.num_classes:
        raise UserError(f"{ckpt.path} is a model of {classes} classes, but the {ckpt.dataset.get('name')} data "
                        f"under {data.spec.get('data_dir')} has {data.num_classes}; pass the right --data-dir")
    return data


def bn_subsample(size: int, samples: int, seed: int) -> Tensor | None:
    """The training samples every landscape point recomputes BatchNorm on; None (all) if not fewer."""
    return subsample_indices(size, samples, generator(seed, "bn"))


def even_batch_size(samples: int, batch_size: int) -> int:
    """Largest batches of near-equal size: the cumulative BN average weighs batches, not samples."""
    return math.ceil(samples / math.ceil(samples / batch_size))


class SplitBatches:
    """One split of a data set (or the given sample indices of it) as re-iterable evaluation batches: each
    iteration streams it again, as the library's scans iterate their data once per point."""

    def __init__(self, data: Dataset, split: str, batch_size: int, indices: Tensor | None = None):
        self.data, self.split, self.batch_size, self.indices = data, split, batch_size, indices

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.data.eval_batches(self.split, self.batch_size, self.indices)


class CheckpointSet:
    """Compatible checkpoints rebuilt as the library's scans take them (:mod:`landscape.connectivity`,
    :class:`landscape.combination.Combination`), on ``options.device``: the first checkpoint's model, the
    named splits to evaluate on (``splits``), the batches that recompute BatchNorm at every point
    (``bn_data``: a seeded subsample of ``options.bn_recal`` training samples in batches of near-equal size,
    the same at every point; False with ``--bn-recal 0`` or without BatchNorm) and what the tools print about
    BatchNorm (``bn``).
    """

    def __init__(self, checkpoints: Sequence[Checkpoint], options: EvalOptions = TEST_SPLIT):
        unknown = [s for s in options.splits if s not in SPLITS]
        if unknown or not options.splits:
            raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {options.splits}")
        check_compatible(checkpoints)
        self.checkpoints = tuple(checkpoints)
        self.options = options
        self.device = resolve_device(options.device)
        first = checkpoints[0]
        self._trust = options.trust_code or None  # None: the trust the checkpoint was loaded with
        self.model = build_model(first, self.device, trust_code=self._trust)  # checks the tensors before any data
        self.data = checkpoint_data(first, self.device, options.data_dir, trust_code=self._trust)
        self.batch_size = options.batch_size or int(first.config.get("eval_batch_size") or DEFAULT_BATCH_SIZE)
        self.splits = {s: SplitBatches(self.data, s, self.batch_size) for s in options.splits}
        batchnorm = has_batchnorm(self.model)
        self.recalibrates = batchnorm and options.bn_recal > 0
        self.bn_data: SplitBatches | bool = False
        if self.recalibrates:
            train_size = self.data.size("train")
            bn_samples = min(options.bn_recal, train_size)
            self.bn_data = SplitBatches(self.data, "train", even_batch_size(bn_samples, self.batch_size),
                                        bn_subsample(train_size, bn_samples, options.seed))
            self.bn = f"recalibrated on {bn_samples} train samples"
        elif batchnorm:
            self.bn = "stored BatchNorm statistics combined like the weights (--bn-recal 0)"
        else:
            self.bn = "no BatchNorm layers: nothing to recalibrate"

    def models(self) -> list[nn.Module]:
        """One module per checkpoint, each holding its weights (the first is :attr:`model`)."""
        return [self.model, *(build_model(c, self.device, trust_code=self._trust) for c in self.checkpoints[1:])]

    @functools.cached_property
    def combination(self) -> Combination:
        """The :class:`landscape.combination.Combination` of the checkpoints."""
        return Combination(self.model, [c.state for c in self.checkpoints], name="checkpoints")

    def scan(self, rows: Sequence[Sequence[float]], desc: str,
             results: dict[int, dict[str, Evaluation]] | None = None,
             on_point: Callable[[dict[int, dict[str, Evaluation]]], None] | None = None) -> dict[str, Series]:
        """:meth:`landscape.combination.Combination.evaluate` of every row on the splits, BatchNorm recomputed
        on :attr:`bn_data`, as one :class:`Series` per split (``results``, ``on_point``: as there)."""
        values = self.combination.evaluate(rows, self.splits, bn=self.bn_data or None, desc=desc,
                                      progress=self.options.progress, results=results, on_point=on_point)
        return {s: Series(tuple(v[s].loss for v in values), tuple(v[s].acc for v in values))
                for s in self.options.splits}


def run_particles(run: str | os.PathLike, cycle: int) -> list[Path]:
    """The particle checkpoints of one cycle of a run directory (docs/format.md section 2)."""
    folder = RunDir(Path(run)).cycle(cycle)
    paths = sorted(folder.glob("particle_*.safetensors"))
    if not paths:
        raise UserError(f"{folder} holds no particle checkpoints; is {run} a run directory with cycle {cycle}?")
    return paths


def run_solutions(run: str | os.PathLike) -> list[Path]:
    """Every finished cycle's solution ``cycle_KK/average.safetensors``, in cycle order."""
    rundir = RunDir(Path(run))
    paths = []
    while rundir.average(len(paths)).is_file():
        paths.append(rundir.average(len(paths)))
    if not paths:
        raise UserError(f"{run} holds no cycle_00/average.safetensors; is it a run directory?")
    return paths


def run_checkpoints(run: str | Path, particles: bool = False) -> list[Path]:
    """Every cycle's ``average.safetensors`` (and, with ``particles``, its particles) in cycle order."""
    root = Path(run)
    if not root.is_dir():
        raise UserError(f"run directory {root} does not exist")
    paths = []
    for cycle in sorted(root.glob("cycle_[0-9][0-9]")):
        if (cycle / "average.safetensors").is_file():
            paths.append(cycle / "average.safetensors")
        if particles:
            paths.extend(sorted(cycle.glob("particle_[0-9][0-9].safetensors")))
    if not paths:
        raise UserError(f"{root} holds no cycle_KK/average.safetensors; is it a run directory?")
    return paths
