"""Datasets through their real code paths, on tiny files written in the real on-disk formats."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import DATA_DIR

from core.data import load_dataset, mnist1d_spec, random_crop_flip
from core.errors import UserError


def write_cifar10(root, n_per_batch=20, seed=0, learnable=False):
    """A miniature ``cifar-10-batches-py`` directory in the official pickle format. Random pixels; with
    ``learnable`` each image also has a bright band of 3 rows at rows 3 * label, so a network can learn it."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n_per_batch)
        pixels = rng.integers(0, 256, (n_per_batch, 3, 32, 32), dtype=np.uint8)
        if learnable:
            pixels //= 2
            for image, label in zip(pixels, labels, strict=True):
                image[:, 3 * label:3 * label + 3] = 255
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": pixels.reshape(n_per_batch, -1),
                 b"filenames": [f"{i}.png".encode() for i in range(n_per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def write_cifar100(root, n=30, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        batch = {b"fine_labels": rng.integers(0, 100, n).tolist(), b"coarse_labels": [0] * n,
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))


def test_cifar10_fixture_loads_through_the_real_reader(tmp_path):
    write_cifar10(tmp_path)
    data = load_dataset({"name": "cifar10", "data_dir": str(tmp_path)})
    assert data.num_classes == 10 and data.size("train") == 100 and data.size("test") == 20
    assert data.x_train.shape == (100, 3, 32, 32) and data.x_train.dtype == torch.float32
    gen = torch.Generator().manual_seed(0)
    x, y = next(data.train_batches(16, gen))
    assert x.shape == (16, 3, 32, 32) and y.dtype == torch.int64
    assert abs(float(data.x_train.mean())) < 1.0  # normalised


def test_cifar100_fixture_loads(tmp_path):
    write_cifar100(tmp_path)
    data = load_dataset({"name": "cifar100", "data_dir": str(tmp_path)})
    assert data.num_classes == 100 and data.size("train") == 30


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError, match="--download"):
        load_dataset({"name": "cifar10", "data_dir": str(tmp_path)})


class _Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_malicious_cifar_pickle_is_refused_without_running(tmp_path, monkeypatch):
    folder = write_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Payload(), b"labels": [0]}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="refusing to load global"):
        load_dataset({"name": "cifar10", "data_dir": str(tmp_path)})
    assert not (tmp_path / "PWNED").exists()


def test_imagefolder_fixture_loads(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for cls in ("n01", "n02"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / f"img{i}.JPEG", format="JPEG")
    data = load_dataset({"name": "imagefolder", "data_dir": str(tmp_path), "image_size": 32, "workers": 0})
    assert data.num_classes == 2 and data.size("train") == 8 and data.size("test") == 4
    x, y = next(data.train_batches(4, torch.Generator().manual_seed(0)))
    assert x.shape == (4, 3, 32, 32)
    assert sum(len(y) for _, y in data.eval_batches("test", 3)) == 4


def test_mnist1d_is_generated_offline_and_cached(tmp_path):
    spec = mnist1d_spec(str(tmp_path))
    data = load_dataset(spec)
    assert (data.size("train"), data.size("test"), data.num_classes) == (4000, 1000, 10)
    assert list((tmp_path / "mnist1d").glob("*.safetensors"))
    again = load_dataset(spec)
    assert torch.equal(again.x_train, data.x_train)
    assert torch.equal(load_dataset(mnist1d_spec(str(DATA_DIR))).y_test, data.y_test)


def test_particle_order_depends_only_on_its_generator():
    data = load_dataset(mnist1d_spec(str(DATA_DIR)))
    first = [y for _, y in data.train_batches(128, torch.Generator().manual_seed(5))]
    second = [y for _, y in data.train_batches(128, torch.Generator().manual_seed(5))]
    other = [y for _, y in data.train_batches(128, torch.Generator().manual_seed(6))]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], other[0])
    assert len(first) == 4000 // 128


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
