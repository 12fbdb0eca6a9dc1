"""MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package and cached as safetensors."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data.names import BUILTIN, builtin_spec
from core.data.tensors import TensorDataset

_ENTRY = BUILTIN["mnist1d"]
MNIST1D_CLASSES = _ENTRY.classes
MNIST1D_LENGTH = _ENTRY.shape[0]  # the mnist1d package's default final_seq_length


def mnist1d_spec(data_dir: str, num_samples: int = _ENTRY.fields["num_samples"].default,
                 seed: int = _ENTRY.fields["seed"].default) -> dict[str, Any]:
    """MNIST-1D (Greydanus 2020) with the package's default generator arguments.

    Training always writes these defaults; a checkpoint may ask for 10 to 100,000 samples
    (:data:`core.data.names.BUILTIN`), which bounds the time a generation takes (about 20 s at the cap).
    """
    return builtin_spec("mnist1d", data_dir, num_samples=num_samples, seed=seed)


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


def load_mnist1d(spec: dict[str, Any], device: torch.device | str = "cpu", download: bool = False) -> TensorDataset:
    """Generate MNIST-1D offline (cached as safetensors under ``data_dir/mnist1d``), on ``device``; nothing is
    downloaded (``download`` is the registry's signature)."""
    from safetensors.numpy import load_file, save

    from core.artifacts.atomic import atomic_write_bytes

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
                         i64(arrays["y_test"])).to(torch.device(device))
