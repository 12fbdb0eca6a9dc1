"""torchvision's image-classification datasets (``--dataset torchvision:NAME``), read from ``--data-dir``.

Which datasets, their normalisation and augmentation: :data:`core.data.catalog.TORCHVISION`. Files
are read where torchvision's class reads them (``DIR/MNIST/raw/train-images-idx3-ubyte``, ...) and
fetched only with ``--download``. CIFAR-10/100 go through the toolkit's own reader
(:mod:`core.data.cifar`; the same files), which unpickles them without running code. FakeData is
generated: deterministic (each image is seeded by its index plus ``random_offset``) and offline; its test
split continues the seeds after the training split's (``random_offset + size``), so it holds other images.

Example:
    >>> data = load_torchvision({"name": "torchvision:FakeData", "data_dir": "data",
    ...                          "kwargs": {"size": 20, "image_size": [3, 8, 8], "num_classes": 4}})
    >>> data.num_classes, data.size("train"), data.size("test"), tuple(data.x_train.shape)
    (4, 20, 4, (20, 3, 8, 8))
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.data.catalog import (
    FAKEDATA_DEFAULTS,
    PREFIX,
    VisionEntry,
    dataset_classes,
    fakedata_sizes,
    keyword,
    kwargs_problem,
)
from core.data.loader import SampleCollator, StreamingDataset, map_style_dataset
from core.data.names import torchvision_entry
from core.data.tensors import TensorDataset
from core.errors import UserError


def _arrays(entry: VisionEntry, dataset: Any) -> tuple[Tensor, Tensor]:
    """A whole split from the arrays the torchvision object holds (see :class:`VisionEntry`), scaled to [0, 1]."""
    data = torch.as_tensor(np.asarray(dataset.data))
    data = data.unsqueeze(1) if entry.layout == "NHW" else data
    labels = torch.as_tensor(np.asarray(getattr(dataset, entry.labels)), dtype=torch.int64)
    return data.float().div_(255), labels[:, 0] if labels.ndim == 2 else labels


def _open(short: str, kwargs: dict[str, Any], root: Path, download: bool) -> tuple[Any, Any]:
    from torchvision import datasets

    cls = getattr(datasets, short)
    if short == "FakeData":
        size, test_size = fakedata_sizes(kwargs)
        args = {**FAKEDATA_DEFAULTS, **{k: v for k, v in kwargs.items() if k != "test_size"}}
        args["image_size"] = tuple(args["image_size"])
        return cls(**args), cls(**{**args, "size": test_size, "random_offset": args["random_offset"] + size})
    if short == "SVHN":
        return (cls(str(root), split=keyword(short, kwargs, "train_split"), download=download),
                cls(str(root), split="test", download=download))
    if short == "STL10":
        return cls(str(root), split="train", download=download), cls(str(root), split="test", download=download)
    extra = {"split": keyword(short, kwargs, "split")} if short == "EMNIST" else {}
    return (cls(str(root), train=True, download=download, **extra),
            cls(str(root), train=False, download=download, **extra))


def load_torchvision(spec: dict[str, Any], device: torch.device | str = "cpu",
                     download: bool = False) -> TensorDataset | StreamingDataset:
    """The dataset ``spec`` (``{"name": "torchvision:NAME", "data_dir", "kwargs", "workers"}``) describes.

    Args:
        spec: the description; ``kwargs`` are checked against the table, ``workers`` (default 0) is used if
            the data streams (:mod:`core.data.loader`).
        device: where batches are delivered (and small datasets held).
        download: let torchvision fetch missing files into ``data_dir`` (needs internet).

    Returns:
        A :class:`TensorDataset` or, past :data:`core.data.loader.MATERIALISE_LIMIT`, a streaming dataset.

    Raises:
        UserError: an unsupported name, bad ``kwargs``, files missing (saying where they were looked for and
            that ``--download`` fetches them), unreadable or not downloadable (one line each).
    """
    name = spec["name"]
    entry = torchvision_entry(name)
    short = name.removeprefix(PREFIX)
    kwargs = spec.get("kwargs", {})
    problem = kwargs_problem(short, kwargs)
    if problem:
        raise UserError(f"--dataset-kwargs: {problem[0]} {problem[1]} (for --dataset {name})")
    if entry.toolkit:
        from core.data.cifar import load_cifar

        data = load_cifar({"name": entry.toolkit, "data_dir": spec["data_dir"]}, download=download)
        held = {k: v for k, v in spec.items() if k != "workers"}
        return dataclasses.replace(data, spec=held).to(torch.device(device))
    root = Path(spec["data_dir"])
    try:
        train, test = _open(short, kwargs, root, download)
    except Exception as err:  # torchvision reports missing, corrupt and undownloadable files in many types
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if download:
            raise UserError(f"could not download {name} into {root}: {reason}") from None
        if "not found" in reason.lower():
            raise UserError(f"{name} not found in {root / entry.where}; pass --download (needs internet) to fetch "
                            f"it there, or give the --data-dir that holds it") from None
        raise UserError(f"cannot read {name} from {root / entry.where}: {reason}") from None
    return map_style_dataset(spec, train, test, num_classes=dataset_classes(short, kwargs), device=torch.device(device),
                             workers=spec.get("workers", 0), collator=SampleCollator(name, entry.mean, entry.std),
                             augment=entry.augment, pad=entry.pad,
                             arrays=functools.partial(_arrays, entry) if entry.layout else None)
