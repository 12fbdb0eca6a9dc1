"""What a checkpoint may say: the schema that keeps a hostile file from allocating, hanging or crashing.

A checkpoint is untrusted input. Its metadata is checked field by field before anything is built from
it, and every refusal is one :class:`UserError` line naming the field or tensor:

- ``kind`` one of :data:`core.artifacts.checkpoint.KINDS`; ``cycle`` and ``particle`` non-negative integers
  (at most :data:`MAX_INDEX`); ``density``, if present, a number in [0, 1] (the density used is
  recomputed from the masks).
- ``model``: ``{"name": a core.models.REGISTRY name, "kwargs": {...}}``; every argument must be one
  the model's constructor takes, a JSON scalar or a list of scalars, and of the type of its default;
  integers are at least 1 and at most :data:`MAX_MODEL_INT` (``depth`` at most :data:`MAX_DEPTH`, so
  that building a model cannot loop for long), ``num_classes`` at most :data:`MAX_NUM_CLASSES` and
  equal to the data set's class count where that is fixed. ``name`` may also be ``torchvision:NAME``
  (a torchvision classification model), ``timm:NAME`` or ``PACKAGE.MODULE:CALLABLE`` (user code, never
  imported here); their arguments follow :func:`model_kwargs_problem`, and those that would load
  pretrained weights or read a file are refused.
- ``dataset``: a name of the registry :data:`core.data.names.BUILTIN` and only the fields its entry
  has, each an integer within the entry's bounds (MNIST-1D ``num_samples`` from 10, one sample per
  class, to 100,000, ``seed`` a NumPy seed; imagefolder ``image_size`` at most 1024), and ``workers``
  at most :data:`MAX_WORKERS` for a streamed one. ``torchvision:NAME`` for a NAME of
  :data:`core.data.catalog.TORCHVISION`, with ``kwargs`` as :func:`core.data.catalog.kwargs_problem`
  allows (FakeData's sizes capped so that no file makes a tool generate more than
  :data:`core.data.catalog.FAKEDATA_MAX_ELEMENTS` numbers) and ``workers``; ``PACKAGE.MODULE:CALLABLE``
  (user code, never imported here) with ``kwargs`` of JSON scalars or lists of at most
  :data:`MAX_LIST_LENGTH` scalars and ``workers``; ``python:NAME``, data handed over in Python, which
  nothing can load again. ``data_dir`` is kept only as a record: the tools read data where the user says.
- ``config``: a JSON object; of the fields the tools read, ``eval_batch_size`` is a positive integer
  at most :data:`MAX_EVAL_BATCH_SIZE`.

Tensors: :mod:`core.artifacts.structure` (shapes against the model, the forward probe, values).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from core.artifacts.jsonfile import BadJSON, brief_repr, parse_json
from core.data.catalog import PREFIX as TORCHVISION_PREFIX
from core.data.catalog import TORCHVISION
from core.data.catalog import dataset_classes as vision_classes
from core.data.catalog import kwargs_problem as vision_kwargs_problem
from core.data.names import BUILTIN as DATASETS
from core.data.names import IN_MEMORY_PREFIX, MAX_WORKERS, is_builtin
from core.errors import UserError
from core.imports import is_import_path
from core.models.kwargs import (
    MAX_DEPTH,
    MAX_LIST_LENGTH,
    MAX_MODEL_INT,
    MAX_NAME_LENGTH,
    MAX_NUM_CLASSES,
    _scalar_or_list,
    model_kwargs_problem,
)

MAX_EVAL_BATCH_SIZE = 2**16
MAX_INDEX = 10**6
_INT_TEXT = re.compile(r"[0-9]{1,7}")
# What a model's constructor or forward pass raises for arguments or inputs it cannot take (torchvision and
# timm check theirs with assertions); NotImplementedError is a RuntimeError.
MODEL_ERRORS = (RuntimeError, ValueError, TypeError, ArithmeticError, IndexError, KeyError, AttributeError,
                AssertionError)


def printable(name: str) -> str:
    """A name from a file as it may appear in a one-line message: as it is, or its repr if it has
    line breaks or other unprintable characters."""
    return name if name.isprintable() else repr(name)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _refuse(where: str, name: str, rule: str, value: Any) -> NoReturn:
    raise UserError(f"{where}: metadata {name} must be {rule}, not {brief_repr(value)}")


def _integer(where: str, name: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        _refuse(where, name, f"an integer from {low:,} to {high:,}", value)
    return value


def _json_object(where: str, name: str, text: str | None, default: str | None = None) -> dict[str, Any]:
    if text is None and default is None:
        raise UserError(f"{where}: metadata {name} is missing; this is not a complete SWAMP checkpoint")
    try:
        value = parse_json(text if text is not None else default)
    except BadJSON as err:
        raise UserError(f"{where}: metadata {name} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        _refuse(where, name, "a JSON object", value)
    return value


def _only(where: str, name: str, value: Mapping[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise UserError(f"{where}: metadata {name} has an unknown field {brief_repr(unknown[0])} "
                        f"(allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(value))
    if missing:
        raise UserError(f"{where}: metadata {name}.{missing[0]} is missing")


def check_model_spec(where: str, spec: Any) -> dict[str, Any]:
    """The ``{"name", "kwargs"}`` model description, checked (see the module docstring). Nothing is imported:
    a ``PACKAGE.MODULE:CALLABLE`` name is checked for its form only."""
    from core.models import REGISTRY
    from core.models.external import TIMM_INSTALL, forbidden_argument, is_library_name, unknown_library_model

    if not isinstance(spec, dict):
        _refuse(where, "model", 'a JSON object {"name": ..., "kwargs": {...}}', spec)
    _only(where, "model", spec, {"name", "kwargs"}, {"name", "kwargs"})
    name, kwargs = spec["name"], spec["kwargs"]
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not (
            name in REGISTRY or is_library_name(name) or is_import_path(name)):
        _refuse(where, "model.name", f"one of {', '.join(REGISTRY)}, torchvision:NAME, timm:NAME or "
                f"PACKAGE.MODULE:CALLABLE (at most {MAX_NAME_LENGTH} characters)", name)
    try:
        hint = unknown_library_model(name) if is_library_name(name) else None
    except UserError:  # timm is not installed
        raise UserError(f"{where}: metadata model.name {name} needs timm: {TIMM_INSTALL}") from None
    if hint is not None:
        _refuse(where, "model.name", f"a model of {name.split(':', 1)[0]} ({hint})", name)
    if not isinstance(kwargs, dict):
        _refuse(where, "model.kwargs", "a JSON object", kwargs)
    if "num_classes" not in kwargs:
        raise UserError(f"{where}: metadata model.kwargs.num_classes is missing")
    if name not in REGISTRY:
        forbidden = forbidden_argument(name, kwargs) if is_library_name(name) else None
        if forbidden is not None:
            raise UserError(f"{where}: metadata model.kwargs.{printable(forbidden)} is not allowed: library models "
                            "are built without pretrained weights, and nothing is read from a path a file names")
        problem = model_kwargs_problem(kwargs)
        if problem is not None:
            _refuse(where, f"model.kwargs.{printable(problem[0])}", problem[1], problem[2])
        return spec
    problem = zoo_kwargs_problem(name, kwargs)
    if problem is not None:
        _refuse(where, f"model.kwargs.{printable(problem[0])}", problem[1], problem[2])
    return spec


def zoo_kwargs_problem(name: str, kwargs: Mapping[str, Any]) -> tuple[str, str, Any] | None:
    """The first argument of the zoo model ``name`` (:data:`core.models.REGISTRY`) that a checkpoint or
    ``--model-kwargs`` may not give, as ``(key, rule, value)``; None if all may be.

    Every argument must be one the constructor takes, of the type of its default; integers from 1 to
    :data:`MAX_MODEL_INT` (``depth`` at most :data:`MAX_DEPTH`, ``num_classes`` :data:`MAX_NUM_CLASSES`).

    Example:
        >>> zoo_kwargs_problem("mlp", {"hidden": 0, "num_classes": 10})
        ('hidden', 'an integer from 1 to 16,777,216', 0)
    """
    from core.models import REGISTRY

    params = inspect.signature(REGISTRY[name]).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in kwargs.items():
        if key not in params and not open_ended:
            return key, f"an argument of model {name} (it takes {', '.join(params)})", value
        default = params[key].default if key in params else inspect.Parameter.empty
        high = MAX_NUM_CLASSES if key == "num_classes" else MAX_DEPTH if key == "depth" else MAX_MODEL_INT
        if (key in ("num_classes", "depth") or type(default) is int) and (type(value) is not int
                                                                          or not 1 <= value <= high):
            return key, f"an integer from 1 to {high:,}", value
        if type(default) in (bool, str) and type(value) is not type(default):
            return key, f"a {type(default).__name__}", value
        if type(default) is float and (type(value) not in (int, float) or not math.isfinite(value)):
            return key, "a finite number", value
        if not _scalar_or_list(value):
            return key, "a JSON scalar or a list of scalars", value
    return None


def _dataset_fields(where: str, name: Any) -> set[str]:
    """The fields besides ``name`` and ``data_dir`` that the data set ``name`` may have; refuses other names."""
    if isinstance(name, str) and name.startswith(TORCHVISION_PREFIX):
        if name.removeprefix(TORCHVISION_PREFIX) not in TORCHVISION:
            _refuse(where, "dataset.name", f"torchvision:NAME with NAME one of {', '.join(TORCHVISION)}", name)
        return {"kwargs", "workers"}
    if isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and name.isprintable():
        if name.startswith(IN_MEMORY_PREFIX):
            return {"workers"}
        if is_import_path(name):
            return {"kwargs", "workers"}
    if not is_builtin(name):
        _refuse(where, "dataset.name", f"one of {', '.join(DATASETS)}, torchvision:NAME, PACKAGE.MODULE:CALLABLE "
                f"or python:NAME (at most {MAX_NAME_LENGTH} printable characters)", name)
    return DATASETS[name].allowed()


def check_dataset_spec(where: str, spec: Any) -> dict[str, Any]:
    """The data set description, checked (see the module docstring); ``data_dir`` is only a record."""
    if not isinstance(spec, dict):
        _refuse(where, "dataset", 'a JSON object {"name": ..., ...}', spec)
    name = spec.get("name")
    fields = _dataset_fields(where, name)
    bounds = DATASETS[name].fields if is_builtin(name) else {}
    _only(where, "dataset", spec, {"name", "data_dir"} | fields, {k for k, bound in bounds.items() if bound.written})
    if "data_dir" in spec and not isinstance(spec["data_dir"], str):
        _refuse(where, "dataset.data_dir", "a string", spec["data_dir"])
    if "workers" in spec:
        _integer(where, "dataset.workers", spec["workers"], 0, MAX_WORKERS)
    for key, bound in bounds.items():
        if key in spec:
            _integer(where, f"dataset.{key}", spec[key], bound.low, bound.high)
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        _refuse(where, "dataset.kwargs", "a JSON object", kwargs)
    problem = vision_kwargs_problem(name.removeprefix(TORCHVISION_PREFIX), kwargs) \
        if name.startswith(TORCHVISION_PREFIX) else None
    if problem:
        raise UserError(f"{where}: metadata dataset.kwargs.{printable(problem[0])} {problem[1]}")
    for key, value in kwargs.items():  # a user factory's: JSON values only (nothing is called from here)
        if not _scalar_or_list(value) or (isinstance(value, list) and len(value) > MAX_LIST_LENGTH):
            _refuse(where, f"dataset.kwargs.{printable(key)}",
                    f"a JSON scalar or a list of at most {MAX_LIST_LENGTH} scalars", value)
    return spec


def dataset_classes(dataset: Mapping[str, Any]) -> int | None:
    """The class count of a (checked) data set description where the data set fixes it: the registry's
    (:data:`core.data.names.BUILTIN`: MNIST-1D, CIFAR) and ``torchvision:`` datasets; None for imagefolder and
    the user's datasets (known only once read)."""
    name = dataset.get("name")
    if is_builtin(name):
        return DATASETS[name].classes
    if isinstance(name, str) and name.startswith(TORCHVISION_PREFIX):
        return vision_classes(name.removeprefix(TORCHVISION_PREFIX), dataset.get("kwargs", {}))
    return None


def check_config(where: str, config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The run's hyperparameters: a JSON object; the fields the tools read are type-checked."""
    if "eval_batch_size" in config:
        _integer(where, "config.eval_batch_size", config["eval_batch_size"], 1, MAX_EVAL_BATCH_SIZE)
    return config


def parse_metadata(where: str, meta: Mapping[str, str], kinds: tuple[str, ...]) -> dict[str, Any]:
    """``kind``, ``model``, ``dataset``, ``config``, ``cycle``, ``particle`` of a file's metadata, checked."""
    if meta.get("kind") not in kinds:
        _refuse(where, "kind", f"one of {', '.join(kinds)}", meta.get("kind"))
    fields: dict[str, Any] = {"kind": meta["kind"]}
    for name in ("cycle", "particle"):
        text = meta.get(name)
        if text is not None and (not _INT_TEXT.fullmatch(text) or int(text) > MAX_INDEX):
            _refuse(where, name, f"an integer from 0 to {MAX_INDEX:,}", text)
        fields[name] = None if text is None else int(text)
    if "density" in meta:
        try:
            value = float(meta["density"])
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:
            _refuse(where, "density", "a number from 0 to 1", meta["density"])
    fields["model"] = check_model_spec(where, _json_object(where, "model", meta.get("model")))
    fields["dataset"] = check_dataset_spec(where, _json_object(where, "dataset", meta.get("dataset")))
    fields["config"] = check_config(where, _json_object(where, "config", meta.get("config"), "{}"))
    classes = dataset_classes(fields["dataset"])
    if classes is not None and fields["model"]["kwargs"]["num_classes"] != classes:
        _refuse(where, "model.kwargs.num_classes", f"{classes}, the class count of {fields['dataset']['name']}",
                fields["model"]["kwargs"]["num_classes"])
    return fields
