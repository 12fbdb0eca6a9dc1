"""Datasets whose samples are mappings of named tensors (the Hugging Face convention), batched as mappings.

A sample is a mapping such as ``{"input_ids": ..., "attention_mask": ..., "labels": ...}`` of tensors,
NumPy arrays or Python numbers; a batch is the mapping of the samples' values stacked along a new first
dimension (what ``transformers.default_data_collator`` gives for samples padded to one length). By the rule
of :mod:`core.batch`, a batch's ``"labels"`` are its targets and every other key is a keyword input of the
model, ``model(**inputs)``. Values are converted as the inputs of ``(input, label)`` samples are
(:func:`core.data.loader.as_input`: floating-point as float32, integers as int64), booleans kept as
booleans. Every sample has the keys of the first, each key's values one shape and kind.

The targets are class labels (accuracy is defined) when every sample's ``"labels"`` is one integer; token
sequences, real values or no ``"labels"`` are other tasks (:attr:`RecordDataset.class_labels` False). Both
splits are held whole on the device; shuffling and batching follow :mod:`core.data.tensors` (one seed, the
same batches), with no augmentation.

Example:
    >>> samples = [{"input_ids": torch.arange(4) + i, "labels": torch.arange(4)} for i in range(6)]
    >>> data = RecordDataset({"name": "python:toy"}, 10, read_records(samples, "train", "toy"),
    ...                      read_records(samples[:2], "test", "toy"), class_labels=False)
    >>> batch = next(data.train_batches(4, torch.Generator().manual_seed(0)))
    >>> sorted(batch), batch["input_ids"].shape, data.size("test")
    (['input_ids', 'labels'], torch.Size([4, 4]), 2)
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.data.loader import LOAD_BATCH, _kind, _unwrapped, as_input
from core.data.tensors import batch_starts, epoch_order
from core.errors import UserError

Record = dict[str, Tensor]


def _value(value: Any, key: str, name: str, split: str) -> Tensor:
    if isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
        value = torch.as_tensor(value)
    if isinstance(value, Tensor) and value.dtype == torch.bool:
        return value
    out = as_input(value) if isinstance(value, Tensor | np.ndarray) else None
    if out is None:
        raise UserError(f"dataset {name}: {split} samples' {key!r} is {_kind(value)}; the values of a mapping sample "
                        "must be tensors, NumPy arrays or numbers")
    return out


def _check_same(name: str, split: str, first: Record, other: Record, what: str) -> None:
    """Refuse ``other`` unless it has ``first``'s keys, each of the same shape (past the first dimension) and
    dtype."""
    if set(other) != set(first):
        raise UserError(f"dataset {name}: {split} {what} have the keys {sorted(first)} and {sorted(other)}; every "
                        "sample must have the same keys")
    for key, value in first.items():
        if other[key].shape[1:] != value.shape[1:] or other[key].dtype != value.dtype:
            raise UserError(f"dataset {name}: {split} values of {key!r} are {value.dtype} {tuple(value.shape[1:])} "
                            f"and {other[key].dtype} {tuple(other[key].shape[1:])}; every sample's must have one "
                            "shape and kind (pad sequences to one length)")


def collate_records(samples: Sequence[Any], name: str, split: str = "train") -> Record:
    """The batch (a mapping of stacked tensors) of mapping ``samples``; a ``collate_fn``."""
    rows = []
    for sample in samples:
        if not isinstance(sample, Mapping) or not sample or not all(isinstance(k, str) for k in sample):
            raise UserError(f"dataset {name}: a {split} sample must be a mapping of named tensors, as the first is, "
                            f"not {_kind(sample)}")
        rows.append({k: _value(v, k, name, split)[None] for k, v in sample.items()})
    for row in rows[1:]:
        _check_same(name, split, rows[0], row, "samples")
    return {k: torch.cat([row[k] for row in rows]) for k in rows[0]}


def read_records(dataset: Any, split: str, name: str, workers: int = 0) -> Record:
    """Every sample of the map-style ``dataset`` (of mappings), batched into one mapping of CPU tensors."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=LOAD_BATCH,
                                         num_workers=min(workers, len(dataset) // LOAD_BATCH),
                                         collate_fn=functools.partial(collate_records, name=name, split=split),
                                         generator=torch.Generator().manual_seed(0))
    chunks = list(_unwrapped(loader, name, split))
    for chunk in chunks[1:]:
        _check_same(name, split, chunks[0], chunk, "samples")
    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}


def has_class_labels(record: Record) -> bool:
    """Whether ``record``'s ``"labels"`` are one integer class index per sample."""
    labels = record.get("labels")
    return labels is not None and labels.dim() == 1 and labels.dtype == torch.int64


@dataclass
class RecordDataset:
    """Mapping samples held as one mapping of tensors per split on one device (see the module docstring)."""

    spec: dict[str, Any]
    num_classes: int
    train: Record
    test: Record
    class_labels: bool = False

    def _split(self, split: str) -> Record:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}")
        return self.train if split == "train" else self.test

    def size(self, split: str) -> int:
        return len(next(iter(self._split(split).values())))

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Record]:
        """One shuffled epoch; the last incomplete batch is dropped."""
        n = self.size("train")
        order = epoch_order(n, generator).to(next(iter(self.train.values())).device)
        for start in batch_starts(n, batch_size):
            idx = order[start:start + batch_size]
            yield {k: v[idx] for k, v in self.train.items()}

    def eval_batches(self, split: str, batch_size: int, indices: Tensor | None = None) -> Iterator[Record]:
        """The split (or the given sample indices of it) in order."""
        record = self._split(split)
        if indices is not None:
            record = {k: v[indices.to(v.device)] for k, v in record.items()}
        n = len(next(iter(record.values())))
        for start in range(0, n, batch_size):
            yield {k: v[start:start + batch_size] for k, v in record.items()}

    def to(self, device: torch.device | str) -> RecordDataset:
        def moved(record: Record) -> Record:
            return {k: v.to(device) for k, v in record.items()}

        return RecordDataset(self.spec, self.num_classes, moved(self.train), moved(self.test), self.class_labels)
