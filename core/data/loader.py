"""Map-style datasets of ``(input, label)`` samples, held on the device when small and streamed when large.

:func:`map_style_dataset` turns a (train, test) pair of map-style datasets (``len`` and ``[i]``: torchvision
datasets, ``torch.utils.data.TensorDataset``, a user's own class) into the toolkit's :class:`Dataset`:

- a :class:`core.data.tensors.TensorDataset` on the device when both splits together take at most
  :data:`MATERIALISE_LIMIT` bytes (counted as samples x elements x bytes per element of the first input,
  before anything is read);
- otherwise a :class:`StreamingDataset`, which reads batches through a ``torch.utils.data.DataLoader``
  with ``workers`` worker processes and pinned memory on CUDA.

Both draw an epoch's order from the caller's generator in the same way (:func:`epoch_order`, last
incomplete batch dropped) and augment the same way (:func:`augment_batch`, after the batch is formed),
and both convert samples with :class:`SampleCollator`, so one seed gives the same batches on either path.

Samples: the input is a tensor or NumPy array or a PIL image (a ``(C, H, W)`` float tensor in [0, 1], as
torchvision's ``ToTensor``). Arrays and tensors are used as they are: floating-point ones and ``uint8`` ones
(pixels) as float32, other integer ones (token ids, indices: what ``nn.Embedding`` takes) as int64, so the
model sees integers as integers. The label is an integer (a Python or NumPy integer or
a 0-d integer tensor) in ``[0, num_classes)``; a collator built with ``class_labels=False`` takes instead
a target that is a tensor or NumPy array (converted as inputs are, all of one shape: regression targets,
token sequences), batched into a tensor of targets. A dataset's own random transforms run once per sample
when it is held on the device, but anew in every epoch when it streams.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.data.tensors import Batch, TensorDataset, augment_batch, batch_starts, epoch_order
from core.errors import UserError

MATERIALISE_LIMIT = 2 * 2**30  # bytes of inputs (both splits) up to which a dataset is held on the device
LOAD_BATCH = 512  # samples per batch while a dataset is read into memory
# Samples a split may have: each training epoch draws a permutation of its indices (8 bytes per sample).
MAX_SAMPLES = 2**28


def _numbers(value: Tensor) -> Tensor:
    """A tensor input as float32, or as int64 if it holds integers other than ``uint8`` pixels."""
    if value.is_floating_point() or value.dtype == torch.uint8:
        return value.float()
    return value.long()


def as_input(value: Any) -> Tensor | None:
    """A sample's input as a float32 or int64 tensor (see the module docstring), or None if it is none of the
    kinds."""
    from PIL import Image

    if isinstance(value, Image.Image):
        from torchvision.transforms.functional import pil_to_tensor

        pixels = pil_to_tensor(value)
        return pixels.float().div(255) if pixels.dtype == torch.uint8 else pixels.float()
    if isinstance(value, np.ndarray) and (np.issubdtype(value.dtype, np.integer) or
                                          np.issubdtype(value.dtype, np.floating)):
        return _numbers(torch.from_numpy(np.ascontiguousarray(value)))
    if isinstance(value, Tensor) and not value.is_complex() and value.dtype != torch.bool:
        return _numbers(value)
    return None


def as_label(value: Any) -> int | None:
    """A sample's label as an int (a Python or NumPy integer, or a 0-d integer tensor), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, Tensor) and value.ndim == 0 and not (
            value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        return int(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.integer):
        return int(value)
    return None


def _kind(value: Any) -> str:
    """What a sample (or a part of one) is, for a message: its type, and dtype and shape for arrays."""
    if isinstance(value, (Tensor, np.ndarray)):
        return f"{type(value).__name__} of {value.dtype} with shape {tuple(value.shape)}"
    return type(value).__name__


def _mixed_kinds(name: str, split: str, dtypes: Sequence[torch.dtype]) -> UserError:
    return UserError(f"dataset {name}: {split} inputs are both {dtypes[0]} and {dtypes[1]}; every input must hold "
                     "the same kind of numbers (all integers, such as token ids, or all floating-point)")


@dataclass(frozen=True)
class SampleCollator:
    """Turns a list of ``(input, label)`` samples into a normalised batch ``(x, y)``; a ``collate_fn``.

    ``mean`` and ``std`` (per channel, or one for all) normalise as ``(x - mean) / std``; empty: as is.
    ``name`` names the dataset in errors. ``class_labels`` False: the samples are ``(input, target)`` with
    tensor or array targets (see the module docstring).
    """

    name: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    class_labels: bool = True

    def sample(self, sample: Any, split: str) -> tuple[Tensor, int | Tensor]:
        """One sample converted, or a :class:`UserError` saying what it should be."""
        pair = isinstance(sample, (tuple, list)) and len(sample) == 2
        target = as_label if self.class_labels else as_input
        x, y = (as_input(sample[0]), target(sample[1])) if pair else (None, None)
        if x is None or y is None:
            got = f"a pair ({_kind(sample[0])}, {_kind(sample[1])})" if pair else _kind(sample)
            if not self.class_labels:
                raise UserError(f"dataset {self.name}: a {split} sample must be (input, target) with tensor or NumPy "
                                f"array input and target (as its first sample is), not {got}")
            raise UserError(f"dataset {self.name}: a {split} sample must be (input, label) with a tensor, NumPy array "
                            f"or PIL image input and an integer label, not {got}")
        return x, y

    def normalise_(self, x: Tensor) -> Tensor:
        """``x`` (a fresh batch of images, ``(B, C, ...)``) normalised in place: a held dataset needs no copy."""
        if not self.mean:
            return x
        shape = (-1, *([1] * (x.ndim - 2)))
        return x.sub_(torch.tensor(self.mean).view(shape)).div_(torch.tensor(self.std).view(shape))

    def __call__(self, samples: Sequence[Any], split: str = "train") -> Batch:
        pairs = [self.sample(s, split) for s in samples]
        shapes = {tuple(x.shape) for x, _ in pairs}
        if len(shapes) > 1:
            raise UserError(f"dataset {self.name}: {split} inputs have different shapes {sorted(shapes)[:2]}; "
                            "every input must have the same shape")
        kinds = {x.dtype for x, _ in pairs}
        if len(kinds) > 1:
            raise _mixed_kinds(self.name, split, sorted(kinds, key=str))
        x = self.normalise_(torch.stack([x for x, _ in pairs]))
        if self.class_labels:
            return x, torch.tensor([y for _, y in pairs])
        targets = {(tuple(y.shape), y.dtype) for _, y in pairs}
        if len(targets) > 1:
            raise UserError(f"dataset {self.name}: {split} targets differ in shape or dtype "
                            f"{sorted(targets, key=str)[:2]}; every target needs one shape and kind of numbers")
        return x, torch.stack([y for _, y in pairs])


def check_labels(name: str, split: str, y: Tensor, num_classes: int, class_labels: bool = True) -> None:
    """Refuse labels outside ``[0, num_classes)``, naming the first one (targets that are not class labels:
    nothing to check)."""
    if not class_labels:
        return
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        raise UserError(f"dataset {name}: {split} label {int(y[bad][0])} is outside [0, {num_classes}); labels must "
                        "be class indices (set the train dataset's num_classes or classes to cover them)")


def _last_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[-1]


def _unwrapped(loader: torch.utils.data.DataLoader, name: str, split: str) -> Iterator[Batch]:
    """The loader's batches; a :class:`UserError` raised in a worker process (it arrives wrapped in the
    worker's traceback) is re-raised as its own one line, and an error of the dataset's own code (its
    ``[index]`` or transforms) as one line naming the dataset."""
    try:
        yield from loader
    except UserError as err:
        raise UserError(_last_line(err).removeprefix("core.errors.UserError: ")) from None
    except Exception as err:  # the user's dataset failed, here or in a worker (which wraps its traceback)
        raise UserError(f"dataset {name}: reading a {split} sample failed ({type(err).__name__}: "
                        f"{_last_line(err)})") from None


def split_length(dataset: Any, split: str, name: str) -> int:
    """``len(dataset)``, refused (one :class:`UserError` line naming the dataset ``name``) if ``len`` fails, is
    negative or is more than :data:`MAX_SAMPLES`."""
    try:
        n = len(dataset)
    except Exception as err:  # the dataset's own __len__: negative, too large for an index, or failing
        raise UserError(f"dataset {name}: len() of the {split} dataset failed ({type(err).__name__}: "
                        f"{_last_line(err)})") from None
    if n > MAX_SAMPLES:
        raise UserError(f"dataset {name}: the {split} dataset has {n:,} samples, more than the {MAX_SAMPLES:,} the "
                        "toolkit reads")
    return n


class StreamingDataset:
    """A (train, test) pair of map-style datasets read batch by batch through a DataLoader onto ``device``.

    The epoch's order and the batch augmentation come from the caller's generator exactly as in
    :class:`TensorDataset`. ``sample_random``: the training split's own transforms are random (ImageFolder's
    random-resized crop); each epoch then seeds the worker processes from the generator (with 0 workers
    such transforms use torch's global RNG). ``train_eval`` is the training split without those transforms.
    """

    def __init__(self, spec: dict[str, Any], num_classes: int, train: Any, test: Any, *, device: torch.device,
                 workers: int, collator: SampleCollator, augment: str = "none", pad: int = 4,
                 train_eval: Any = None, sample_random: bool = False):
        self.spec, self.num_classes, self.device, self.workers = spec, num_classes, device, workers
        self._train, self._test, self._train_eval = train, test, train if train_eval is None else train_eval
        self.collator, self.augment, self.pad, self.sample_random = collator, augment, pad, sample_random
        self.class_labels = collator.class_labels

    def size(self, split: str) -> int:
        return len(self._train if split == "train" else self._test)

    def _stream(self, dataset: Any, split: str, batches: list[list[int]], worker_seed: int) -> Iterator[Batch]:
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=self.workers,
                                             collate_fn=functools.partial(self.collator, split=split),
                                             pin_memory=self.device.type == "cuda",
                                             generator=torch.Generator().manual_seed(worker_seed))
        for x, y in _unwrapped(loader, self.collator.name, split):
            check_labels(self.collator.name, split, y, self.num_classes, self.class_labels)
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One shuffled, augmented epoch; the last incomplete batch is dropped."""
        n = len(self._train)
        order = epoch_order(n, generator)
        batches = [order[s:s + batch_size].tolist() for s in batch_starts(n, batch_size)]
        # worker seeds: drawn per epoch where the samples' own transforms need them, else fixed per generator
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if self.sample_random \
            else generator.initial_seed()
        for x, y in self._stream(self._train, "train", batches, seed):
            yield augment_batch(x, self.augment, generator, self.pad), y

    def eval_batches(self, split: str, batch_size: int, indices: Tensor | None = None) -> Iterator[Batch]:
        """The split (or the given sample indices of it) in order, without augmentation."""
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}")
        dataset = self._train_eval if split == "train" else self._test
        order = list(range(len(dataset))) if indices is None else indices.tolist()
        yield from self._stream(dataset, split, [order[s:s + batch_size] for s in range(0, len(order), batch_size)],
                                0)


def first_sample(dataset: Any, split: str, name: str) -> Any:
    """Sample 0 of a split, after checking that the split is map-style and not empty (one :class:`UserError`
    line naming the dataset ``name`` otherwise)."""
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise UserError(f"dataset {name}: the {split} dataset is a {type(dataset).__name__}, not a map-style "
                        "dataset (one with len() and [index], e.g. a torch.utils.data.Dataset)")
    if split_length(dataset, split, name) == 0:
        raise UserError(f"dataset {name}: the {split} dataset is empty")
    try:
        return dataset[0]
    except Exception as err:  # the user's dataset failed
        raise UserError(f"dataset {name}: reading {split} sample 0 failed ({type(err).__name__}: "
                        f"{_last_line(err)})") from None


def _first_input(dataset: Any, split: str, collator: SampleCollator, num_classes: int) -> tuple[Tensor, Tensor]:
    """The first input and target of a split, after checking that its first sample is a valid one."""
    x, y = collator.sample(first_sample(dataset, split, collator.name), split)
    target = torch.as_tensor(y)
    check_labels(collator.name, split, target[None], num_classes, collator.class_labels)
    return x, target


def _read_all(dataset: Any, split: str, first: tuple[Tensor, Tensor], collator: SampleCollator,
              workers: int) -> Batch:
    """Every sample of ``dataset`` as one (x, y) pair of CPU tensors of the shapes and dtypes of the ``first``
    input and target, filled batch by batch, with at most as many worker processes as there are full batches
    (a small dataset is read faster without starting any)."""
    first, target = first
    shape = tuple(first.shape)
    x = torch.empty((len(dataset), *shape), dtype=first.dtype)
    y = torch.empty((len(dataset), *target.shape), dtype=torch.int64 if collator.class_labels else target.dtype)
    loader = torch.utils.data.DataLoader(dataset, batch_size=LOAD_BATCH, num_workers=min(workers, len(y) // LOAD_BATCH),
                                         collate_fn=functools.partial(collator, split=split),
                                         generator=torch.Generator().manual_seed(0))
    start = 0
    for xb, yb in _unwrapped(loader, collator.name, split):
        if tuple(xb.shape[1:]) != shape:
            raise UserError(f"dataset {collator.name}: {split} inputs have shape {tuple(xb.shape[1:])} and {shape}; "
                            "every input must have the same shape")
        if xb.dtype != first.dtype:
            raise _mixed_kinds(collator.name, split, [xb.dtype, first.dtype])
        if yb.shape[1:] != y.shape[1:] or yb.dtype != y.dtype:
            raise UserError(f"dataset {collator.name}: {split} targets are {yb.dtype} {tuple(yb.shape[1:])} and "
                            f"{y.dtype} {tuple(y.shape[1:])}; every target needs one shape and kind of numbers")
        x[start:start + len(yb)], y[start:start + len(yb)] = xb, yb
        start += len(yb)
    return x, y


def map_style_dataset(spec: dict[str, Any], train: Any, test: Any, *, num_classes: int, device: torch.device,
                      workers: int, collator: SampleCollator, augment: str = "none", pad: int = 4,
                      arrays: Any = None) -> TensorDataset | StreamingDataset:
    """The toolkit's dataset over map-style ``train`` / ``test`` datasets (see the module docstring).

    The first sample of each split is checked before anything else is read; the spec of the result keeps
    ``workers`` only if it streams. ``arrays(dataset) -> (x, y)``, if given, reads a whole split at once (inputs
    scaled to [0, 1], not yet normalised) instead of sample by sample.

    Raises:
        UserError: a split that is not map-style or is empty, a sample that is not ``(input, label)``, inputs of
            different shapes, a label outside ``[0, num_classes)`` (one line each).
    """
    first = _first_input(train, "train", collator, num_classes)
    _first_input(test, "test", collator, num_classes)
    if (len(train) + len(test)) * first[0].numel() * first[0].element_size() > MATERIALISE_LIMIT:
        return StreamingDataset({**spec, "workers": workers}, num_classes, train, test, device=device, workers=workers,
                                collator=collator, augment=augment, pad=pad)
    splits = []
    for dataset, split in ((train, "train"), (test, "test")):
        if arrays is not None:
            x, y = arrays(dataset)
            x = collator.normalise_(x)
        else:
            x, y = _read_all(dataset, split, first, collator, workers)
        check_labels(collator.name, split, y, num_classes, collator.class_labels)
        splits += [x, y]
    held = {k: v for k, v in spec.items() if k != "workers"}
    return TensorDataset(held, num_classes, *splits, augment=augment, pad=pad,
                         class_labels=collator.class_labels).to(device)
