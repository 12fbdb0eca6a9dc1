"""The torchvision datasets ``--dataset torchvision:NAME`` supports: a table that needs no torch or torchvision.

Each entry says what one input looks like, how many classes there are, how inputs are normalised and
augmented, and which ``--dataset-kwargs`` the dataset takes. The command line, the loader
(:mod:`core.data.vision`) and the checkpoint schema (:mod:`core.artifacts.schema`) all read
this one table, so that all three accept the same names and arguments.

Normalisation is ``(x - mean) / std`` per channel on pixels scaled to [0, 1]; the numbers and their
sources are in each entry (``source``) and in docs/datasets.md. Augmentation is a batched tensor
operation (:func:`core.data.tensors.augment_batch`): ``crop_flip`` is the zero-padded random crop plus
horizontal flip of He et al. 2016, ``crop`` the crop alone (digits must not be mirrored), ``none`` nothing.

Example:
    >>> dataset_classes("EMNIST", {"split": "letters"}), input_shape("FakeData", {"image_size": [1, 8, 8]})
    (27, (1, 8, 8))
    >>> kwargs_problem("FakeData", {"size": 10**9})
    ('size', 'must be an integer from 1 to 1,000,000, not 1000000000')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "torchvision:"
FAKEDATA_MAX_SIZE = 1_000_000
FAKEDATA_MAX_SIDE = 1024
FAKEDATA_MAX_CLASSES = 100_000
FAKEDATA_MAX_OFFSET = 2**32
# (size + test_size) x elements of one image: about 4 GiB of float32 and some tens of seconds to generate
FAKEDATA_MAX_ELEMENTS = 2**30
FAKEDATA_DEFAULTS = {"size": 1000, "image_size": [3, 224, 224], "num_classes": 10, "random_offset": 0}
EMNIST_CLASSES = {"balanced": 47, "byclass": 62, "bymerge": 47, "digits": 10, "letters": 27, "mnist": 10}


@dataclass(frozen=True)
class VisionEntry:
    """One supported torchvision dataset.

    ``layout`` is how the torchvision object holds all its images as one uint8 array (``.data``: ``NHW``
    or ``NCHW``), with labels in the attribute ``labels`` (a 2-D label array: its first column), so
    that small datasets are read without a per-sample loop; None: read sample by sample. ``toolkit`` names
    the toolkit's own reader of the same files (CIFAR: its pickles are read without running code).
    ``keywords`` are the string ``--dataset-kwargs`` the dataset takes, each with its allowed values, the
    first being the default.
    """

    shape: tuple[int, ...]
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    augment: str = "none"
    pad: int = 4
    layout: str | None = None
    labels: str = "targets"
    where: str = ""
    toolkit: str | None = None
    keywords: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_MNIST = "training-set pixel statistics (PyTorch's examples/mnist)"
_QUOTED = "training-set pixel statistics, as commonly quoted (not re-measured here)"
TORCHVISION: dict[str, VisionEntry] = {
    "MNIST": VisionEntry((1, 28, 28), 10, (0.1307,), (0.3081,), _MNIST, layout="NHW", where="MNIST/raw"),
    "FashionMNIST": VisionEntry((1, 28, 28), 10, (0.2860,), (0.3530,), _QUOTED, layout="NHW",
                                where="FashionMNIST/raw"),
    "KMNIST": VisionEntry((1, 28, 28), 10, (0.1918,), (0.3483,), _QUOTED, layout="NHW", where="KMNIST/raw"),
    "EMNIST": VisionEntry((1, 28, 28), 0, (0.1751,), (0.3332,),
                          "Lightning Bolts' emnist_normalization, balanced split (the others differ by < 0.003)",
                          layout="NHW", where="EMNIST/raw", keywords={"split": tuple(EMNIST_CLASSES)}),
    "QMNIST": VisionEntry((1, 28, 28), 10, (0.1307,), (0.3081,), "MNIST's (QMNIST reconstructs MNIST)",
                          layout="NHW", where="QMNIST/raw"),
    "SVHN": VisionEntry((3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), _QUOTED,
                        augment="crop", layout="NCHW", labels="labels", where="",
                        keywords={"train_split": ("train", "extra")}),
    "CIFAR10": VisionEntry((3, 32, 32), 10, (), (), "core.data.cifar (as --dataset cifar10)",
                           augment="crop_flip", toolkit="cifar10"),
    "CIFAR100": VisionEntry((3, 32, 32), 100, (), (), "core.data.cifar (as --dataset cifar100)",
                            augment="crop_flip", toolkit="cifar100"),
    "STL10": VisionEntry((3, 96, 96), 10, (0.43, 0.42, 0.39), (0.27, 0.26, 0.27),
                         "Lightning Bolts' stl10_normalization", augment="crop_flip", pad=12, layout="NCHW",
                         labels="labels", where="stl10_binary"),
    "FakeData": VisionEntry((3, 224, 224), 10, (0.5,), (0.29,),
                            "measured: FakeData's bytes are close to uniform on 0..255 (mean 0.4995, std 0.2903 "
                            "over 1,000 images)"),
}


def _must(key: str, rule: str, value: Any) -> tuple[str, str]:
    text = repr(value)
    return key, f"must be {rule}, not {text if len(text) <= 60 else text[:57] + '...'}"


def _int_problem(kwargs: Mapping[str, Any], key: str, low: int, high: int) -> tuple[str, str] | None:
    value = kwargs.get(key, low)
    if type(value) is not int or not low <= value <= high:
        return _must(key, f"an integer from {low:,} to {high:,}", value)
    return None


def _fakedata_problem(kwargs: Mapping[str, Any]) -> tuple[str, str] | None:
    unknown = sorted(set(kwargs) - set(FAKEDATA_DEFAULTS) - {"test_size"})
    if unknown:
        return unknown[0], "is not an argument of FakeData (it takes size, test_size, image_size, num_classes, " \
            "random_offset)"
    for key, high in (("size", FAKEDATA_MAX_SIZE), ("test_size", FAKEDATA_MAX_SIZE),
                      ("num_classes", FAKEDATA_MAX_CLASSES)):
        problem = _int_problem(kwargs, key, 1, high)
        if problem:
            return problem
    problem = _int_problem(kwargs, "random_offset", 0, FAKEDATA_MAX_OFFSET)
    if problem:
        return problem
    image = kwargs.get("image_size", FAKEDATA_DEFAULTS["image_size"])
    sides_ok = isinstance(image, list) and len(image) in (2, 3) and all(
        type(v) is int and 1 <= v <= FAKEDATA_MAX_SIDE for v in image)
    if not sides_ok or (len(image) == 3 and image[0] > 4):
        return _must("image_size", f"[H, W] or [C, H, W] with C from 1 to 4 and sides from 1 to {FAKEDATA_MAX_SIDE}",
                     image)
    size, test_size = fakedata_sizes(kwargs)
    if (size + test_size) * math.prod(image) > FAKEDATA_MAX_ELEMENTS:
        return _must("size", f"such that (size + test_size) x image elements is at most {FAKEDATA_MAX_ELEMENTS:,} "
                     f"(image_size {image})", size)
    return None


def kwargs_problem(name: str, kwargs: Mapping[str, Any]) -> tuple[str, str] | None:
    """What is wrong with ``kwargs`` for ``torchvision:name`` (a supported name), or None: the argument and a
    phrase to follow its name (``("size", "must be an integer from 1 to 1,000,000, not 0")``).

    FakeData takes ``size`` (default 1000), ``test_size`` (default ``size // 5``, at least 1), ``image_size``
    (``[H, W]`` or ``[C, H, W]``, default ``[3, 224, 224]``), ``num_classes`` (default 10) and
    ``random_offset`` (default 0), capped so that no request generates more than
    :data:`FAKEDATA_MAX_ELEMENTS` numbers; the others take only their ``keywords``.
    """
    if name == "FakeData":
        return _fakedata_problem(kwargs)
    entry = TORCHVISION[name]
    for key, value in kwargs.items():
        if key not in entry.keywords:
            return key, f"is not an argument of torchvision:{name} (it takes {', '.join(entry.keywords) or 'none'})"
        if type(value) is not str or value not in entry.keywords[key]:
            return _must(key, f"one of {', '.join(entry.keywords[key])}", value)
    return None


def keyword(name: str, kwargs: Mapping[str, Any], key: str) -> str:
    """The value of the string keyword ``key`` of ``torchvision:name`` (its default if not given)."""
    return kwargs.get(key, TORCHVISION[name].keywords[key][0])


def fakedata_sizes(kwargs: Mapping[str, Any]) -> tuple[int, int]:
    """FakeData's (training, test) sizes."""
    size = kwargs.get("size", FAKEDATA_DEFAULTS["size"])
    return size, kwargs.get("test_size", max(1, size // 5))


def dataset_classes(name: str, kwargs: Mapping[str, Any]) -> int:
    """The number of classes of ``torchvision:name`` with (valid) ``kwargs``."""
    if name == "FakeData":
        return kwargs.get("num_classes", FAKEDATA_DEFAULTS["num_classes"])
    if name == "EMNIST":
        return EMNIST_CLASSES[keyword(name, kwargs, "split")]
    return TORCHVISION[name].classes


def input_shape(name: str, kwargs: Mapping[str, Any]) -> tuple[int, ...]:
    """The shape ``(C, H, W)`` of one input of ``torchvision:name`` with (valid) ``kwargs``."""
    if name == "FakeData":
        image = tuple(kwargs.get("image_size", FAKEDATA_DEFAULTS["image_size"]))
        return image if len(image) == 3 else (1, *image)
    return TORCHVISION[name].shape
