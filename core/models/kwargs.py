"""The rules a model's constructor arguments follow wherever they come from (a checkpoint, ``--model-kwargs``):
bounded, JSON-shaped values, so that reading a file never lets it choose how much to build.

The checkpoint schema (:mod:`core.artifacts.schema`) and :func:`core.models.model_spec` both apply them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

MAX_NUM_CLASSES = 100_000
MAX_MODEL_INT = 2**24
# Any number a library or user-code model's arguments may hold (but num_classes): their constructors are not
# read, so a number may be a count of layers or a multiplier of one (timm's depth_multiplier, ReXNet's
# depth_mult), which a constructor expands into Python lists before it makes a module. At this bound such a
# list has a few hundred thousand entries; core.models.budget then stops the constructor.
MAX_MODEL_NUMBER = 2**20  # a vocabulary of a million tokens fits; the build budget bounds what is made of it
MAX_DEPTH = 1000
MAX_NAME_LENGTH = 200  # characters of a model name
MAX_LIST_LENGTH = 64  # a list argument of a library or user-code model (stage depths, widths, strides)
_LAYER_COUNT = re.compile(r"depth|layers|blocks")  # such an argument counts layers: capped at MAX_DEPTH


def _scalar_or_list(value: Any) -> bool:
    scalar = lambda v: v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))  # noqa: E731
    return scalar(value) or (isinstance(value, list) and all(scalar(v) for v in value))


def model_kwargs_problem(kwargs: Mapping[str, Any]) -> tuple[str, str, Any] | None:
    """The first argument of a ``torchvision:``, ``timm:`` or user-code model that a checkpoint may not
    record, as ``(key, rule, value)``; None if all may be.

    Their constructors' signatures are not read (they take ``**kwargs``, and user code is not imported), so
    every value must be a JSON scalar or a list of at most :data:`MAX_LIST_LENGTH` scalars; every number
    (in a list too) finite and at most :data:`MAX_MODEL_NUMBER` in magnitude, whatever its name (a count of
    layers and a multiplier of one look alike), integers not negative, ``num_classes`` from 1 to
    :data:`MAX_NUM_CLASSES`, and a count of layers (a key containing ``depth``, ``layers`` or ``blocks``) from
    1 to :data:`MAX_DEPTH`, in all (a list's sum; a float there, a multiplier of layers, at most that), so that
    building the model cannot loop for long (what a constructor still makes of them is bounded by
    :mod:`core.models.budget`).

    Example:
        >>> model_kwargs_problem({"num_classes": 10, "depths": [2, 2, 6, 2]}) is None
        True
        >>> model_kwargs_problem({"num_classes": 10, "width_per_group": 2**40})[:2]
        ('width_per_group', 'an integer from 0 to 1,048,576')
        >>> model_kwargs_problem({"num_classes": 10, "depth_multiplier": 1e9})[:2]
        ('depth_multiplier', 'at most 1,000 (a count of layers, or a multiplier of one)')
    """
    for key, value in kwargs.items():
        values = value if isinstance(value, list) else [value]
        if not _scalar_or_list(value) or len(values) > MAX_LIST_LENGTH:
            return key, f"a JSON scalar or a list of at most {MAX_LIST_LENGTH} scalars", value
        ints = [v for v in values if type(v) is int]
        if key == "num_classes" and (type(value) is not int or not 1 <= value <= MAX_NUM_CLASSES):
            return key, f"an integer from 1 to {MAX_NUM_CLASSES:,}", value
        if _LAYER_COUNT.search(key) and ints and (min(ints) < 1 or sum(ints) > MAX_DEPTH):
            return key, f"a count of layers from 1 to {MAX_DEPTH:,} (in all)", value
        if _LAYER_COUNT.search(key) and any(type(v) is float and v > MAX_DEPTH for v in values):
            return key, f"at most {MAX_DEPTH:,} (a count of layers, or a multiplier of one)", value
        if key != "num_classes" and any(not 0 <= v <= MAX_MODEL_NUMBER for v in ints):
            return key, f"an integer from 0 to {MAX_MODEL_NUMBER:,}", value
        if any(type(v) is float and abs(v) > MAX_MODEL_NUMBER for v in values):
            return key, f"a number from {-MAX_MODEL_NUMBER:,} to {MAX_MODEL_NUMBER:,}", value
    return None
