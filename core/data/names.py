"""Which ``--dataset`` names exist: checked before anything is loaded (no torch or torchvision import).

A dataset is one of the toolkit's own (:data:`BUILTIN`, the registry below), a supported torchvision dataset
``torchvision:NAME`` (:data:`core.data.catalog.TORCHVISION`), a user factory ``PACKAGE.MODULE:CALLABLE``
(:mod:`core.data.factory`), or ``python:NAME``, the name the Python API records for datasets it was
handed as objects (:func:`core.data.from_datasets`), which no file or flag can load again.

To add one of the toolkit's own datasets: write its loader ``load_NAME(spec, device="cpu",
download=False) -> Dataset`` (:class:`core.data.tensors.Dataset`; ``spec`` is the dict
:func:`builtin_spec` makes) in ``core/data/NAME.py`` and add one :class:`BuiltinDataset` entry to
:data:`BUILTIN`: its loader, class count, input shape and the spec's own fields with their bounds. That
is the one entry: ``--dataset NAME`` and its help, :func:`core.data.dataset_spec`,
:func:`core.data.load_dataset`, the checkpoint schema (:mod:`core.artifacts.schema`: the fields, their
bounds, the class count against ``num_classes``) and the structure check's input shape
(:func:`core.artifacts.structure.input_shape`) all read it. A default preset for it is optional
(:data:`training.presets.DEFAULT_PRESET`; without one, ``--model`` is needed).

Example:
    >>> check_dataset_name("torchvision:FakeData"), check_dataset_name("mypkg.data:make")
    (None, None)
    >>> torchvision_entry("torchvision:MNSIT")
    Traceback (most recent call last):
    ...
    core.errors.UserError: --dataset torchvision:MNSIT is not a torchvision dataset the toolkit supports (did \
you mean torchvision:MNIST, torchvision:QMNIST, torchvision:KMNIST?); it supports torchvision:NAME for NAME in MNIST, \
FashionMNIST, KMNIST, EMNIST, QMNIST, SVHN, CIFAR10, CIFAR100, STL10, FakeData
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from core.data.catalog import PREFIX, TORCHVISION, VisionEntry
from core.errors import UserError
from core.imports import is_import_path

IN_MEMORY_PREFIX = "python:"
MAX_WORKERS = 64  # a checkpoint's ``workers`` (streamed datasets)


class Bound(NamedTuple):
    """An integer field of a dataset's spec: from ``low`` to ``high``; ``default`` is written into every spec
    (so the field is required) when ``written``, else it is what an absent field means."""

    low: int
    high: int
    default: int
    written: bool = True


@dataclass(frozen=True)
class BuiltinDataset:
    """One of the toolkit's own datasets.

    ``loader`` is ``"MODULE:FUNCTION"``, imported when the data set is loaded:
    ``FUNCTION(spec, device, download) -> Dataset``. ``classes`` is the class count where the data fix it
    (checked against a checkpoint's ``num_classes``; None: known once read). ``shape`` is one input's shape,
    a ``str`` in it naming the integer field that gives that size (None: known once read). ``fields`` are
    the spec's own fields besides ``name`` and ``data_dir``; ``streams``: read from disk through loader
    worker processes, so the spec records ``workers``."""

    loader: str
    classes: int | None = None
    shape: tuple[int | str, ...] | None = None
    fields: Mapping[str, Bound] = field(default_factory=dict)
    streams: bool = False

    def load(self) -> Callable[..., Any]:
        """The loader function (its module imported now)."""
        module, function = self.loader.split(":")
        return getattr(importlib.import_module(module), function)

    def allowed(self) -> set[str]:
        """The fields besides ``name`` and ``data_dir`` a spec of this data set may have."""
        return set(self.fields) | ({"workers"} if self.streams else set())

    def input_shape(self, spec: Mapping[str, Any]) -> tuple[int, ...] | None:
        """One input's shape for ``spec`` (None where unknown, or a size field is out of its bounds)."""
        if self.shape is None:
            return None
        sizes = [spec.get(d, self.fields[d].default) if isinstance(d, str) else d for d in self.shape]
        fits = all(type(n) is int and (not isinstance(d, str) or self.fields[d].low <= n <= self.fields[d].high)
                   for n, d in zip(sizes, self.shape, strict=True))
        return tuple(sizes) if fits else None


# The toolkit's own datasets; ``--dataset`` lists them in this order.
BUILTIN: dict[str, BuiltinDataset] = {
    # Greydanus 2020, generated offline; a checkpoint may ask for 10 (one per class) to 100,000 samples, which
    # bounds the time a generation takes (about 20 s at the cap); training writes 5000 and seed 42
    "mnist1d": BuiltinDataset("core.data.mnist1d:load_mnist1d", 10, (40,),
                              {"num_samples": Bound(10, 100_000, 5000), "seed": Bound(0, 2**32 - 1, 42)}),
    "cifar10": BuiltinDataset("core.data.cifar:load_cifar", 10, (3, 32, 32)),
    "cifar100": BuiltinDataset("core.data.cifar:load_cifar", 100, (3, 32, 32)),
    # Tiny-ImageNet, ImageNet: square crops of image_size pixels (default 224)
    "imagefolder": BuiltinDataset("core.data.imagefolder:load_imagefolder", None, (3, "image_size", "image_size"),
                                  {"image_size": Bound(1, 1024, 224, written=False)}, streams=True),
}


def builtin_spec(name: str, data_dir: str, workers: int | None = None, **values: int) -> dict[str, Any]:
    """The spec of the toolkit's dataset ``name``: ``name``, ``data_dir``, its written fields (``values``, else
    their defaults) and, for a streamed one, ``workers`` where given.

    Example:
        >>> builtin_spec("mnist1d", "data")
        {'name': 'mnist1d', 'data_dir': 'data', 'num_samples': 5000, 'seed': 42}
    """
    entry = BUILTIN[name]
    spec: dict[str, Any] = {"name": name, "data_dir": data_dir}
    spec.update({k: values.get(k, bound.default) for k, bound in entry.fields.items() if bound.written})
    if entry.streams and workers is not None:
        spec["workers"] = workers
    return spec


def is_builtin(name: Any) -> bool:
    """Whether ``name`` (any value) names one of the toolkit's own datasets."""
    return isinstance(name, str) and name in BUILTIN


def dataset_help() -> str:
    """``--dataset``'s help text."""
    return (f"{', '.join(BUILTIN)}, torchvision:NAME (e.g. torchvision:FakeData, torchvision:MNIST) or "
            "PACKAGE.MODULE:CALLABLE returning (train_set, test_set)")


def close_matches(name: str, options: list[str], prefix: str = "") -> list[str]:
    """Up to three of ``options`` that look like ``name``, ignoring case (difflib's ratio, at least 0.6), each
    with ``prefix`` in front."""
    lowered = {option.lower(): option for option in options}
    return [prefix + lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=3)]


def _did_you_mean(matches: list[str]) -> str:
    return f" (did you mean {', '.join(matches)}?)" if matches else ""


def torchvision_entry(name: str) -> VisionEntry:
    """The table entry of ``torchvision:NAME``; a :class:`UserError` with the close matches if it is not supported."""
    short = name.removeprefix(PREFIX)
    if short in TORCHVISION:
        return TORCHVISION[short]
    matches = close_matches(short, list(TORCHVISION), PREFIX)
    raise UserError(f"--dataset {name} is not a torchvision dataset the toolkit supports{_did_you_mean(matches)}; "
                    f"it supports torchvision:NAME for NAME in {', '.join(TORCHVISION)}")


def check_dataset_name(name: str) -> None:
    """Refuse (:class:`UserError`, one line, with close matches) a ``--dataset`` that is none of the toolkit's
    own datasets, a supported ``torchvision:NAME``, a ``PACKAGE.MODULE:CALLABLE`` or a ``python:NAME``."""
    if name in BUILTIN or name.startswith(IN_MEMORY_PREFIX):
        return
    if name.startswith(PREFIX):
        torchvision_entry(name)
        return
    if is_import_path(name):
        return
    matches = close_matches(name, list(BUILTIN)) + close_matches(name, list(TORCHVISION), PREFIX)
    raise UserError(f"unknown dataset {name!r}{_did_you_mean(matches[:3])}; choose {', '.join(BUILTIN)}, "
                    "torchvision:NAME (e.g. torchvision:FakeData) or PACKAGE.MODULE:CALLABLE")
