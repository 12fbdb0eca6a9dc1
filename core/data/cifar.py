"""CIFAR-10/100 from the official ``cifar-10-batches-py`` / ``cifar-100-python`` directories.

The official files are Python pickles. They are read with :class:`RestrictedUnpickler`, which can
build only dicts, lists, strings, bytes, numbers and NumPy arrays: a crafted file cannot run code. Downloading
is opt-in (``--download``) and uses torchvision's download-and-verify helper (MD5 of the archive).
"""

from __future__ import annotations

import io
import pickle  # restricted below: only NumPy array reconstruction is allowed
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data.names import BUILTIN
from core.data.tensors import TensorDataset
from core.errors import UserError

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}

# name -> (directory, training files, test files, label key); the class counts are the registry's
LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2; builds bytes from str
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except NumPy's array reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def read_batch(path: Path) -> dict[bytes, Any]:
    """One CIFAR batch file as a dict with bytes keys, without executing anything."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is not a valid CIFAR batch file ({err})") from None
    if not isinstance(obj, dict) or b"data" not in obj:
        raise UserError(f"{path} is not a valid CIFAR batch file (no data entry)")
    return obj


def _download(name: str, root: Path) -> None:
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as err:  # network errors come in many types
        raise UserError(f"could not download {name} into {root}: {err}") from None


def _read_split(folder: Path, files: list[str], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for fname in files:
        batch = read_batch(folder / fname)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or label_key not in batch:
            raise UserError(f"{folder / fname} is not a valid CIFAR batch file (bad shape or labels)")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar(spec: dict[str, Any], device: torch.device | str = "cpu", download: bool = False) -> TensorDataset:
    """CIFAR-10/100 as normalised float tensors with crop-and-flip training augmentation, on ``device``."""
    name = spec["name"]
    subdir, train_files, test_files, label_key = LAYOUT[name]
    num_classes = BUILTIN[name].classes
    root = Path(spec["data_dir"])
    folder = root / subdir
    missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if missing and download:
        _download(name, root)
        missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if missing:
        raise UserError(f"{name} not found: {folder / missing[0]} is missing; pass --download (needs "
                        f"internet) or extract the official python-version archive into {root}")
    mean = torch.tensor(CIFAR_MEAN[name]).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD[name]).view(1, 3, 1, 1)

    def tensors(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _read_split(folder, files, label_key)
        return (torch.from_numpy(x).float() / 255.0 - mean) / std, torch.from_numpy(y)

    x_train, y_train = tensors(train_files)
    x_test, y_test = tensors(test_files)
    return TensorDataset(spec, num_classes, x_train, y_train, x_test, y_test, augment="crop_flip").to(
        torch.device(device))
