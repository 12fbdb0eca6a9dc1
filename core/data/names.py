"""Which ``--dataset`` names exist: checked before anything is loaded (no torch or torchvision import).

A dataset is one of the toolkit's own (:data:`BUILTIN`), a supported torchvision dataset
``torchvision:NAME`` (:data:`core.data.catalog.TORCHVISION`), a user factory ``PACKAGE.MODULE:CALLABLE``
(:mod:`core.data.factory`), or ``python:NAME``, the name the Python API records for datasets it was
handed as objects (:func:`core.data.from_datasets`), which no file or flag can load again.

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

from core.data.catalog import PREFIX, TORCHVISION, VisionEntry
from core.errors import UserError
from core.imports import is_import_path

BUILTIN = ("mnist1d", "cifar10", "cifar100", "imagefolder")
IN_MEMORY_PREFIX = "python:"


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
