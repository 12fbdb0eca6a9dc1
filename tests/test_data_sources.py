"""Datasets from anywhere: torchvision datasets on disk, FakeData, user factories and in-memory datasets.

Everything runs offline on tiny data: MNIST is a fixture in torchvision's on-disk format (IDX files under
``DIR/MNIST/raw/``), FakeData is generated, user factories live in temporary modules.
"""

from __future__ import annotations

import json
import struct
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import one_line

import core.data.loader as loader
from core.artifacts.checkpoint import build_model as build_model_of
from core.artifacts.checkpoint import load_checkpoint, save_checkpoint
from core.artifacts.schema import parse_metadata
from core.artifacts.structure import input_shape
from core.data import dataset_spec, from_datasets, load_dataset
from core.data.loader import SampleCollator, map_style_dataset
from core.data.names import check_dataset_name
from core.models import build_model, model_spec


def write_mnist(root, n_train=40, n_test=12, seed=0):
    """A miniature MNIST in torchvision's format: big-endian IDX files (magic 0x803 images, 0x801 labels)."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
        arrays[prefix] = (images, labels)
    return arrays


def fakedata(**kwargs) -> dict:
    return {"name": "torchvision:FakeData", "data_dir": "unused", "workers": 0,
            "kwargs": {"size": 24, "image_size": [3, 8, 8], "num_classes": 4, **kwargs}}


def batches(data, gen_seed=0, batch_size=8):
    return list(data.train_batches(batch_size, torch.Generator().manual_seed(gen_seed)))


def same(a, b) -> bool:
    pairs = zip(a, b, strict=True) if len(a) == len(b) else None
    return pairs is not None and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in pairs)


def test_torchvision_mnist_reads_the_real_on_disk_format(tmp_path):
    arrays = write_mnist(tmp_path)
    data = load_dataset({"name": "torchvision:MNIST", "data_dir": str(tmp_path), "kwargs": {}, "workers": 2})
    assert (data.num_classes, data.size("train"), data.size("test")) == (10, 40, 12)
    assert data.x_train.shape == (40, 1, 28, 28)
    pixels = torch.from_numpy(arrays["train"][0]).float() / 255
    assert torch.allclose(data.x_train[:, 0] * 0.3081 + 0.1307, pixels, atol=1e-6)  # MNIST's mean and std
    assert torch.equal(data.y_test, torch.from_numpy(arrays["t10k"][1]).long())
    assert "workers" not in data.spec  # held on the device: the checkpoint does not depend on --workers


def test_missing_torchvision_data_says_where_and_how_to_fetch_it(tmp_path):
    message = one_line(load_dataset, {"name": "torchvision:FashionMNIST", "data_dir": str(tmp_path), "kwargs": {}})
    assert str(tmp_path / "FashionMNIST" / "raw") in message and "--download" in message
    assert not any(tmp_path.iterdir())  # nothing fetched or created without --download


def test_unknown_torchvision_names_list_the_close_matches():
    for call in (check_dataset_name, lambda n: load_dataset({"name": n, "data_dir": "d"})):
        message = one_line(call, "torchvision:FashionMnist")
        assert "did you mean torchvision:FashionMNIST" in message
    assert "torchvision:CIFAR10" in one_line(check_dataset_name, "cifar-10")


def test_fakedata_is_offline_deterministic_and_its_test_split_differs():
    data = load_dataset(fakedata())
    again = load_dataset(fakedata())
    assert (data.num_classes, data.size("train"), data.size("test")) == (4, 24, 4)  # test_size: size // 5
    assert torch.equal(data.x_train, again.x_train) and torch.equal(data.y_train, again.y_train)
    assert not any(torch.equal(data.x_test[0], x) for x in data.x_train)
    assert set(data.y_train.tolist()) <= {0, 1, 2, 3}
    grey = load_dataset(fakedata(image_size=[6, 5], num_classes=3, test_size=2))
    assert grey.x_train.shape == (24, 1, 6, 5) and grey.size("test") == 2 and grey.num_classes == 3


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"size": 0}, "size must be an integer from 1"),
    ({"image_size": [3, 8]}, None),  # [H, W] is valid: no error
    ({"image_size": [9, 8, 8]}, "image_size must be [H, W] or [C, H, W]"),
    ({"colour": True}, "colour is not an argument of FakeData"),
])
def test_bad_fakedata_kwargs_are_one_line_naming_the_flag(kwargs, says):
    if says is None:
        assert load_dataset(fakedata(**kwargs)).num_classes == 4
        return
    message = one_line(load_dataset, fakedata(**kwargs))
    assert message.startswith("--dataset-kwargs") and says in message


def test_dataset_spec_records_kwargs_and_refuses_them_for_the_toolkits_own():
    cfg = SimpleNamespace(dataset="torchvision:FakeData", data_dir="d", workers=3, dataset_kwargs_dict={"size": 8})
    assert dataset_spec(cfg) == {"name": "torchvision:FakeData", "data_dir": "d", "kwargs": {"size": 8}, "workers": 3}
    cfg = SimpleNamespace(dataset="cifar10", data_dir="d", workers=3, dataset_kwargs_dict={"size": 8})
    assert "--dataset-kwargs" in one_line(dataset_spec, cfg)


def _crop_flip_pair(n=37, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 6, 6, generator=gen), torch.randint(0, 5, (n,), generator=gen)
    return torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x[:9], y[:9])


def test_held_and_streamed_datasets_give_the_same_batches(monkeypatch):
    train, test = _crop_flip_pair()
    build = lambda workers: map_style_dataset(  # noqa: E731
        {"name": "toy"}, train, test, num_classes=5, device=torch.device("cpu"), workers=workers,
        collator=SampleCollator("toy", (0.5, 0.4, 0.3), (2.0, 1.0, 0.5)), augment="crop_flip", pad=2)
    held = build(0)
    monkeypatch.setattr(loader, "MATERIALISE_LIMIT", 0)
    streamed, with_workers = build(0), build(2)
    assert isinstance(held, loader.TensorDataset) and isinstance(streamed, loader.StreamingDataset)
    assert streamed.spec == {"name": "toy", "workers": 0}
    for seed in (0, 1):
        expected = batches(held, seed)
        assert len(expected) == 37 // 8 and same(expected, batches(streamed, seed))
    assert same(batches(held, 2), batches(with_workers, 2))
    indices = torch.tensor([5, 1, 30])
    for split, idx in (("test", None), ("train", indices)):
        assert same(list(held.eval_batches(split, 4, idx)), list(streamed.eval_batches(split, 4, idx)))


def test_fakedata_streams_with_the_same_batches_as_held(monkeypatch):
    held = load_dataset(fakedata())
    monkeypatch.setattr(loader, "MATERIALISE_LIMIT", 0)
    streamed = load_dataset(fakedata())
    assert streamed.spec["workers"] == 0 and same(batches(held, 4), batches(streamed, 4))


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write ``tmp_path/<name>.py`` and make the working directory tmp_path (import paths resolve from it)."""
    monkeypatch.chdir(tmp_path)

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name
    return write


FACTORIES = """
    import torch

    class Digits(torch.utils.data.Dataset):
        classes = ["a", "b", "c"]

        def __init__(self, n, label=None):
            self.n, self.label = n, label

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            label = i % 3 if self.label is None else self.label
            return torch.full((2, 4), float(i)), torch.tensor(label)

    def make(size=12, data_dir=None):
        assert data_dir is not None
        return Digits(size), Digits(4)

    def single():
        return Digits(5)

    def not_pairs():
        class Bad(Digits):
            def __getitem__(self, i):
                return f"sample {i}"  # neither a pair nor a mapping of tensors
        return Bad(5), Bad(5)

    def out_of_range():
        return Digits(5), Digits(5, label=7)

    def no_classes():
        return torch.utils.data.TensorDataset(torch.zeros(4, 2)), torch.utils.data.TensorDataset(torch.zeros(4, 2))

    def broken():
        raise ValueError("no such file: labels.csv")
"""


def test_a_user_factory_loads_only_with_trust(user_module, tmp_path):
    module = user_module("my_factories", FACTORIES)
    spec = {"name": f"{module}:make", "data_dir": str(tmp_path), "kwargs": {"size": 9}, "workers": 0}
    refusal = one_line(load_dataset, spec)
    assert "--trust-code" in refusal and "user code" in refusal
    data = load_dataset(spec, trust_code=True)
    assert (data.num_classes, data.size("train"), data.size("test")) == (3, 9, 4)  # from len(classes)
    x, y = next(data.eval_batches("train", 9))
    assert torch.equal(x[4], torch.full((2, 4), 4.0)) and y.tolist() == [i % 3 for i in range(9)]


@pytest.mark.parametrize(("factory", "says"), [
    ("single", "not a pair (train_dataset, test_dataset)"),
    ("not_pairs", "must be (input, label)"),
    ("out_of_range", "test label 7 is outside [0, 3)"),
    ("no_classes", "neither a num_classes nor a classes attribute; set one of them"),
    ("broken", "ValueError: no such file: labels.csv"),
    ("missing", "has no attribute missing"),
])
def test_bad_user_datasets_are_one_line_each(user_module, tmp_path, factory, says):
    module = user_module(f"bad_{factory}", FACTORIES)
    spec = {"name": f"{module}:{factory}", "data_dir": str(tmp_path), "kwargs": {}}
    assert says in one_line(load_dataset, spec, trust_code=True)


class _BadSeventh(torch.utils.data.Dataset):
    num_classes = 2

    def __len__(self):
        return 40

    def __getitem__(self, i):
        return ("not an input" if i == 7 else torch.zeros(3)), 0


def test_a_bad_sample_deep_in_a_streamed_dataset_is_one_line_from_a_worker(monkeypatch):
    monkeypatch.setattr(loader, "MATERIALISE_LIMIT", 0)
    data = from_datasets(_BadSeventh(), _BadSeventh(), name="bad", device="cpu", workers=1)
    message = one_line(lambda: list(data.train_batches(8, torch.Generator().manual_seed(0))))
    assert message.startswith("dataset python:bad: a train sample must be (input, label)") and "(str, int)" in message


def test_in_memory_datasets_are_wrapped_checked_and_never_reloaded():
    x, y = torch.randn(20, 5), torch.arange(20) % 4
    train, test = torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x[:6], y[:6])
    data = from_datasets(train, test, name="toy", device="cpu", num_classes=4)
    assert data.spec == {"name": "python:toy"} and data.num_classes == 4 and torch.equal(data.x_train, x)
    assert "outside [0, 3)" in one_line(from_datasets, train, test, name="toy", device="cpu", num_classes=3)
    assert "num_classes" in one_line(from_datasets, train, test, name="toy", device="cpu")
    assert "handed to training.run_swamp" in one_line(load_dataset, data.spec)


def _metadata(dataset: dict, num_classes: int = 10) -> dict[str, str]:
    return {"kind": "average", "cycle": "0", "model": json.dumps(model_spec("resnet20", num_classes)),
            "dataset": json.dumps(dataset), "config": "{}"}


@pytest.mark.parametrize(("dataset", "says"), [
    ({"name": "torchvision:FakeData", "kwargs": {"size": 10**12}}, "dataset.kwargs.size must be an integer"),
    ({"name": "torchvision:FakeData", "kwargs": {"size": 10**6, "image_size": [3, 1024, 1024]}},
     "dataset.kwargs.size must be such that (size + test_size) x image elements"),
    ({"name": "torchvision:FakeData", "kwargs": {"image_size": [3, 8, 8, 8]}}, "dataset.kwargs.image_size"),
    ({"name": "torchvision:FakeData", "kwargs": {"transform": "evil"}}, "dataset.kwargs.transform is not an arg"),
    ({"name": "torchvision:FakeData", "kwargs": [1]}, "dataset.kwargs must be a JSON object"),
    ({"name": "torchvision:ImageNet", "kwargs": {}}, "dataset.name must be torchvision:NAME with NAME one of"),
    ({"name": "torchvision:MNIST", "kwargs": {"root": "/etc"}}, "dataset.kwargs.root is not an argument"),
    ({"name": "torchvision:EMNIST", "kwargs": {"split": "all"}}, "dataset.kwargs.split must be one of"),
    ({"name": "torchvision:MNIST", "workers": 10**6}, "dataset.workers"),
    ({"name": "torchvision:MNIST", "download": True}, "unknown field 'download'"),
    ({"name": "torchvision:CIFAR100"}, "model.kwargs.num_classes must be 100"),
    ({"name": "mypkg.data:make", "kwargs": {"opts": {"nested": 1}}}, "dataset.kwargs.opts must be a JSON scalar"),
    ({"name": "python:toy", "kwargs": {}}, "unknown field 'kwargs'"),
    ({"name": "not a name", "kwargs": {}}, "metadata dataset.name must be one of"),
])
def test_hostile_dataset_specs_are_refused_by_the_schema(dataset, says):
    message = one_line(parse_metadata, "evil.safetensors", _metadata(dataset), ("average",))
    assert message.startswith("evil.safetensors: ") and says in message, message


def test_new_dataset_specs_pass_the_schema_with_their_class_counts_and_shapes():
    ok = [({"name": "torchvision:EMNIST", "kwargs": {"split": "letters"}}, 27),
          ({"name": "torchvision:FakeData", "kwargs": {"num_classes": 7, "image_size": [3, 16, 16]}}, 7),
          ({"name": "mypkg.data:make", "data_dir": "d", "kwargs": {"size": 9, "sides": [1, 2]}, "workers": 4}, 5),
          ({"name": "python:toy"}, 6)]
    for dataset, classes in ok:
        assert parse_metadata("f", _metadata(dataset, classes), ("average",))["dataset"] == dataset
    assert input_shape(ok[1][0]) == (3, 16, 16) and input_shape({"name": "torchvision:STL10"}) == (3, 96, 96)
    assert input_shape(ok[2][0]) is None


def test_a_fakedata_checkpoint_is_probed_with_fakedata_inputs(tmp_path):
    spec = model_spec("resnet20", 10)
    state = build_model(spec).state_dict()
    for image, loads in (([3, 32, 32], True), ([1, 32, 32], False)):
        path = tmp_path / f"c{image[0]}.safetensors"
        save_checkpoint(path, state, {}, kind="average", model=spec, cycle=0, config={},
                        dataset={"name": "torchvision:FakeData", "kwargs": {"image_size": image}})
        ckpt = load_checkpoint(path)  # the tensors fit either way; the forward probe runs when the model is built
        if loads:
            assert ckpt.dataset["kwargs"]["image_size"] == image and build_model_of(ckpt).training is False
        else:
            assert "cannot read torchvision:FakeData inputs of shape (1, 32, 32)" in one_line(build_model_of, ckpt)
