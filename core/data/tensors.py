"""Datasets held whole as tensors on the training device, and the protocol every dataset follows.

Shuffling and the standard image augmentation (4-pixel zero-pad random crop, horizontal flip; He et al.
2016) are batched tensor operations, with no per-sample Python in the hot loop. Randomness (order and
augmentation) comes only from the ``torch.Generator`` a caller passes, drawn on the CPU so that a seed
gives the same batches on every device. :func:`epoch_order`, :func:`batch_starts` and :func:`augment_batch`
are shared with the streamed datasets (:mod:`core.data.loader`), so that a seed gives the same batches
whether a dataset is held on the device or streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

Batch = tuple[Tensor, Tensor]
AUGMENTATIONS = ("none", "crop", "crop_flip")


class Dataset(Protocol):
    """What training and the landscape tools need from a dataset.

    ``class_labels``: whether every target is one class index in ``[0, num_classes)`` (then accuracy is
    defined); False for other targets (regression values, token sequences), whose ``num_classes`` is only
    the output count handed to the model (:func:`core.data.factory.output_count`). Batches follow
    :mod:`core.batch`: ``(inputs, targets)`` tuples, or mappings with ``"labels"``
    (:class:`core.data.records.RecordDataset`).
    """

    spec: dict[str, Any]
    num_classes: int
    class_labels: bool

    def size(self, split: str) -> int: ...

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]: ...

    def eval_batches(self, split: str, batch_size: int, indices: Tensor | None = None) -> Iterator[Batch]: ...


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> Tensor:
    """Batched pad-and-crop (plus, with ``flip``, horizontal flip) of images ``x`` (B, C, H, W), one draw per
    image."""
    b, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(x.device)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W), a view
    out = windows[torch.arange(b, device=x.device), :, offsets[0], offsets[1]]
    if not flip:
        return out
    flips = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    return torch.where(flips[:, None, None, None], out.flip(3), out)


def augment_batch(x: Tensor, augment: str, generator: torch.Generator, pad: int = 4) -> Tensor:
    """A training batch augmented as ``augment`` (one of :data:`AUGMENTATIONS`) says, drawing from ``generator``."""
    if augment == "none":
        return x
    return random_crop_flip(x, generator, pad, flip=augment == "crop_flip")


def epoch_order(n: int, generator: torch.Generator) -> Tensor:
    """The shuffled sample order of one training epoch over ``n`` samples (on the CPU)."""
    return torch.randperm(n, generator=generator)


def batch_starts(n: int, batch_size: int) -> range:
    """Where the training batches of an epoch over ``n`` samples start: the last incomplete batch is dropped
    (one short batch if ``n < batch_size``)."""
    return range(0, max(n - batch_size, 0) + 1, batch_size)


@dataclass
class TensorDataset:
    """A dataset held as tensors on one device; ``augment`` is one of :data:`AUGMENTATIONS`, cropping with
    ``pad`` pixels of zero padding. ``y_*`` are class labels, or with ``class_labels`` False targets of any shape."""

    spec: dict[str, Any]
    num_classes: int
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    augment: str = "none"
    pad: int = 4
    class_labels: bool = True

    def _split(self, split: str) -> Batch:
        if split == "train":
            return self.x_train, self.y_train
        if split == "test":
            return self.x_test, self.y_test
        raise ValueError(f"unknown split {split!r}")

    def size(self, split: str) -> int:
        return len(self._split(split)[1])

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One shuffled, augmented epoch; the last incomplete batch is dropped."""
        n = len(self.y_train)
        order = epoch_order(n, generator).to(self.x_train.device)
        for start in batch_starts(n, batch_size):
            idx = order[start:start + batch_size]
            yield augment_batch(self.x_train[idx], self.augment, generator, self.pad), self.y_train[idx]

    def eval_batches(self, split: str, batch_size: int, indices: Tensor | None = None) -> Iterator[Batch]:
        """The split (or the given sample indices of it) in order, without augmentation."""
        x, y = self._split(split)
        if indices is not None:
            indices = indices.to(x.device)
            x, y = x[indices], y[indices]
        for start in range(0, len(y), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]

    def to(self, device: torch.device) -> TensorDataset:
        return TensorDataset(self.spec, self.num_classes, self.x_train.to(device), self.y_train.to(device),
                             self.x_test.to(device), self.y_test.to(device), self.augment, self.pad, self.class_labels)


def subsample_indices(size: int, n: int, generator: torch.Generator) -> Tensor | None:
    """``n`` distinct indices of ``range(size)`` drawn with ``generator``; None (all) if n is 0 or >= size."""
    if n <= 0 or n >= size:
        return None
    return torch.randperm(size, generator=generator)[:n]
