"""Datasets as a uniform source of (input, label) batches on the training device.

Small datasets (MNIST-1D, CIFAR-10/100) live whole as tensors on the device; shuffling and the
standard CIFAR augmentation (4-pixel zero-pad random crop, horizontal flip; He et al. 2016) are
batched tensor operations, with no per-sample Python in the hot loop. Large ImageFolder datasets
(Tiny-ImageNet, ImageNet) stream through a torchvision DataLoader (see :mod:`training.imagefolder`).

Randomness (order and augmentation) comes only from the ``torch.Generator`` a caller passes, drawn on
the CPU so that a seed gives the same batches on every device.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from training.errors import UserError

Batch = tuple[Tensor, Tensor]

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


class Dataset(Protocol):
    """What training and the landscape tools need from a dataset."""

    spec: dict[str, Any]
    num_classes: int

    def size(self, split: str) -> int: ...

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]: ...

    def eval_batches(self, split: str, batch_size: int, indices: Tensor | None = None) -> Iterator[Batch]: ...


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Batched pad-and-crop plus horizontal flip of images ``x`` (B, C, H, W), one draw per image."""
    b, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(x.device)
    flips = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W), a view
    out = windows[torch.arange(b, device=x.device), :, offsets[0], offsets[1]]
    return torch.where(flips[:, None, None, None], out.flip(3), out)


@dataclass
class TensorDataset:
    """A dataset held as tensors on one device; ``augment`` is ``"none"`` or ``"crop_flip"``."""

    spec: dict[str, Any]
    num_classes: int
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    augment: str = "none"

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
        order = torch.randperm(n, generator=generator).to(self.x_train.device)
        last_start = max(n - batch_size, 0)
        for start in range(0, last_start + 1, batch_size):
            idx = order[start:start + batch_size]
            x = self.x_train[idx]
            if self.augment == "crop_flip":
                x = random_crop_flip(x, generator)
            yield x, self.y_train[idx]

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
                             self.x_test.to(device), self.y_test.to(device), self.augment)


def subsample_indices(size: int, n: int, generator: torch.Generator) -> Tensor | None:
    """``n`` distinct indices of ``range(size)`` drawn with ``generator``; None (all) if n is 0 or >= size."""
    if n <= 0 or n >= size:
        return None
    return torch.randperm(size, generator=generator)[:n]


MNIST1D_CLASSES = 10
MNIST1D_LENGTH = 40  # the mnist1d package's default final_seq_length


def mnist1d_spec(data_dir: str, num_samples: int = 5000, seed: int = 42) -> dict[str, Any]:
    """MNIST-1D (Greydanus 2020) with the package's default generator arguments.

    Training always writes these defaults; a checkpoint may ask for 10 to 100,000 samples
    (:mod:`training.checkpoint_schema`), which bounds the time a generation takes (about 20 s at the cap).
    """
    return {"name": "mnist1d", "data_dir": data_dir, "num_samples": num_samples, "seed": seed}


def _generate_mnist1d(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:  # make_dataset reseeds the global generators; keep the caller's streams untouched
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.ascontiguousarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def load_mnist1d(spec: dict[str, Any]) -> TensorDataset:
    """Generate MNIST-1D offline (cached as safetensors under ``data_dir/mnist1d``)."""
    from safetensors.numpy import load_file, save

    from training.atomic import atomic_write_bytes

    key = hashlib.sha1(json.dumps([spec["num_samples"], spec["seed"]]).encode()).hexdigest()[:12]
    cache = Path(spec["data_dir"]) / "mnist1d" / f"mnist1d-{key}.safetensors"
    try:
        arrays = load_file(str(cache))
    except Exception:  # absent or unreadable cache: regenerate (deterministic)
        arrays = _generate_mnist1d(spec["num_samples"], spec["seed"])
        try:
            atomic_write_bytes(cache, save(arrays))
        except OSError:
            pass  # a read-only data dir only costs a regeneration next time
    f32 = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
    i64 = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return TensorDataset(spec, MNIST1D_CLASSES, f32(arrays["x"]), i64(arrays["y"]), f32(arrays["x_test"]),
                         i64(arrays["y_test"]))


def dataset_spec(cfg: Any) -> dict[str, Any]:
    """The JSON-able description of ``cfg``'s dataset, stored in every checkpoint."""
    if cfg.dataset == "mnist1d":
        return mnist1d_spec(cfg.data_dir)
    spec: dict[str, Any] = {"name": cfg.dataset, "data_dir": cfg.data_dir}
    if cfg.dataset == "imagefolder":
        spec["workers"] = cfg.workers
    return spec


def load_dataset(spec: dict[str, Any], device: torch.device | str = "cpu", download: bool = False) -> Dataset:
    """Build the dataset a spec describes, on ``device``; raises :class:`UserError` if absent."""
    name = spec.get("name")
    if name == "mnist1d":
        return load_mnist1d(spec).to(torch.device(device))
    if name in ("cifar10", "cifar100"):
        from training.cifar import load_cifar

        return load_cifar(spec, download).to(torch.device(device))
    if name == "imagefolder":
        from training.imagefolder import ImageFolderDataset

        return ImageFolderDataset(spec, torch.device(device))
    raise UserError(f"unknown dataset {name!r}; expected mnist1d, cifar10, cifar100 or imagefolder")
