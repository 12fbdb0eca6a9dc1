"""What a checkpoint may say: the schema that keeps a hostile file from allocating, hanging or crashing.

A checkpoint is untrusted input. Its metadata is checked field by field before anything is built from
it, and every refusal is one :class:`UserError` line naming the field or tensor:

- ``kind`` one of :data:`training.checkpoint.KINDS`; ``cycle`` and ``particle`` non-negative integers
  (at most :data:`MAX_INDEX`); ``density``, if present, a number in [0, 1] (the density used is
  recomputed from the masks).
- ``model``: ``{"name": a training.models.REGISTRY name, "kwargs": {...}}``; every argument must be one
  the model's constructor takes, a JSON scalar or a list of scalars, and of the type of its default;
  integers are at least 1 and at most :data:`MAX_MODEL_INT` (``depth`` at most :data:`MAX_DEPTH`, so
  that building a model cannot loop for long), ``num_classes`` at most :data:`MAX_NUM_CLASSES` and
  equal to the data set's class count where that is fixed.
- ``dataset``: a name of :data:`training.config.DATASETS` and only the fields that data set has;
  MNIST-1D ``num_samples`` from :data:`MNIST1D_MIN_SAMPLES` (one sample per class) to
  :data:`MNIST1D_MAX_SAMPLES` (training writes 5000, :func:`training.data.mnist1d_spec`), ``seed``
  a NumPy seed; imagefolder ``workers`` at most :data:`MAX_WORKERS`, ``image_size`` at most
  :data:`MAX_IMAGE_SIZE`. ``data_dir`` is kept only as a record: the tools read data where the user says.
- ``config``: a JSON object; of the fields the tools read, ``eval_batch_size`` is a positive integer
  at most :data:`MAX_EVAL_BATCH_SIZE`.

Tensors: the model is built on the ``meta`` device (shapes, no memory) and every ``state_dict`` key,
shape and dtype must be what the file holds, so a model is never larger than the file; then a meta
forward pass on one batch of the data set's input shape must give ``(batch, num_classes)``. Floating
tensors must be finite, BatchNorm ``running_var`` non-negative, masks float tensors of 0 and 1 on a
parameter of the same shape.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

import torch
from torch import Tensor

from training.cifar import LAYOUT
from training.config import DATASETS
from training.data import MNIST1D_CLASSES, MNIST1D_LENGTH
from training.errors import UserError

MAX_NUM_CLASSES = 100_000
MAX_MODEL_INT = 2**24
MAX_DEPTH = 1000
MNIST1D_MIN_SAMPLES, MNIST1D_MAX_SAMPLES = 10, 100_000
MAX_SEED = 2**32 - 1
MAX_WORKERS = 64
MAX_IMAGE_SIZE = 1024
DEFAULT_IMAGE_SIZE = 224  # training.imagefolder's default
MAX_EVAL_BATCH_SIZE = 2**16
MAX_INDEX = 10**6
CIFAR_CLASSES = {name: layout[4] for name, layout in LAYOUT.items()}
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_INT_TEXT = re.compile(r"[0-9]{1,7}")
_PROBE_BATCH = 2


def brief_repr(value: Any) -> str:
    """``repr(value)``, cut to 60 characters (a file's values can be long)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
        value = json.loads(text if text is not None else default)
    except (ValueError, RecursionError) as err:
        raise UserError(f"{where}: metadata {name} is not valid JSON ({first_line(err)})") from None
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
    """The ``{"name", "kwargs"}`` model description, checked (see the module docstring)."""
    from training.models import REGISTRY

    if not isinstance(spec, dict):
        _refuse(where, "model", 'a JSON object {"name": ..., "kwargs": {...}}', spec)
    _only(where, "model", spec, {"name", "kwargs"}, {"name", "kwargs"})
    name, kwargs = spec["name"], spec["kwargs"]
    if not isinstance(name, str) or name not in REGISTRY:
        _refuse(where, "model.name", f"one of {', '.join(REGISTRY)}", name)
    if not isinstance(kwargs, dict):
        _refuse(where, "model.kwargs", "a JSON object", kwargs)
    params = inspect.signature(REGISTRY[name]).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "num_classes" not in kwargs:
        raise UserError(f"{where}: metadata model.kwargs.num_classes is missing")
    for key, value in kwargs.items():
        field = f"model.kwargs.{printable(key)}"
        if key not in params and not open_ended:
            raise UserError(f"{where}: metadata {field} is not an argument of model {name} "
                            f"(it takes {', '.join(params)})")
        default = params[key].default if key in params else inspect.Parameter.empty
        if key == "num_classes":
            _integer(where, field, value, 1, MAX_NUM_CLASSES)
        elif key == "depth":
            _integer(where, field, value, 1, MAX_DEPTH)
        elif type(default) is int:
            _integer(where, field, value, 1, MAX_MODEL_INT)
        elif type(default) in (bool, str) and type(value) is not type(default):
            _refuse(where, field, f"a {type(default).__name__}", value)
        elif type(default) is float and (type(value) not in (int, float) or not math.isfinite(value)):
            _refuse(where, field, "a finite number", value)
        elif not _scalar_or_list(value):
            _refuse(where, field, "a JSON scalar or a list of scalars", value)
    return spec


def _scalar_or_list(value: Any) -> bool:
    scalar = lambda v: v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))  # noqa: E731
    return scalar(value) or (isinstance(value, list) and all(scalar(v) for v in value))


def check_dataset_spec(where: str, spec: Any) -> dict[str, Any]:
    """The data set description, checked (see the module docstring); ``data_dir`` is only a record."""
    if not isinstance(spec, dict):
        _refuse(where, "dataset", 'a JSON object {"name": ..., ...}', spec)
    name = spec.get("name")
    if not isinstance(name, str) or name not in DATASETS:
        _refuse(where, "dataset.name", f"one of {', '.join(DATASETS)}", name)
    fields = {"mnist1d": {"num_samples", "seed"}, "imagefolder": {"workers", "image_size"}}.get(name, set())
    _only(where, "dataset", spec, {"name", "data_dir"} | fields, {"num_samples", "seed"} & fields)
    if "data_dir" in spec and not isinstance(spec["data_dir"], str):
        _refuse(where, "dataset.data_dir", "a string", spec["data_dir"])
    if name == "mnist1d":
        _integer(where, "dataset.num_samples", spec["num_samples"], MNIST1D_MIN_SAMPLES, MNIST1D_MAX_SAMPLES)
        _integer(where, "dataset.seed", spec["seed"], 0, MAX_SEED)
    if "workers" in spec:
        _integer(where, "dataset.workers", spec["workers"], 0, MAX_WORKERS)
    if "image_size" in spec:
        _integer(where, "dataset.image_size", spec["image_size"], 1, MAX_IMAGE_SIZE)
    return spec


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
    classes = CIFAR_CLASSES.get(fields["dataset"]["name"], MNIST1D_CLASSES)
    if fields["dataset"]["name"] != "imagefolder" and fields["model"]["kwargs"]["num_classes"] != classes:
        _refuse(where, "model.kwargs.num_classes", f"{classes}, the class count of {fields['dataset']['name']}",
                fields["model"]["kwargs"]["num_classes"])
    return fields


def input_shape(dataset: Mapping[str, Any]) -> tuple[int, ...] | None:
    """Shape of one input of the data set ``dataset`` describes; None if unknown."""
    name = dataset.get("name")
    if name == "mnist1d":
        return (MNIST1D_LENGTH,)
    if name in CIFAR_CLASSES:
        return (3, 32, 32)
    if name == "imagefolder":
        size = dataset.get("image_size", DEFAULT_IMAGE_SIZE)
        return (3, size, size) if type(size) is int and 1 <= size <= MAX_IMAGE_SIZE else None
    return None


def check_structure(where: str, model: Mapping[str, Any], dataset: Mapping[str, Any], state: Mapping[str, Tensor],
                    masks: Mapping[str, Tensor]) -> None:
    """Refuse tensors that are not exactly the ``state_dict`` of ``model`` (built on the meta device, so
    nothing is allocated), masks on anything but a parameter, and a model that does not map one batch of
    the data set's inputs to ``(batch, num_classes)`` (a meta forward pass)."""
    from training.models import REGISTRY

    name = model.get("name")
    try:
        with torch.device("meta"):
            net = REGISTRY[name](**model["kwargs"])
    except (RuntimeError, ValueError, TypeError, OverflowError) as err:
        raise UserError(f"{where}: bad arguments for model {name!r}: {first_line(err)}") from None
    expected = net.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing:
        raise UserError(f"{where}: model {name} needs tensor {missing[0]}, which the file does not hold")
    if extra:
        raise UserError(f"{where}: tensor {printable(extra[0])} is not part of model {name}")
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape:
            raise UserError(f"{where}: tensor {key} has shape {tuple(got.shape)}, but model {name} with "
                            f"{json.dumps(model.get('kwargs'))} needs shape {tuple(want.shape)}")
        if got.dtype != want.dtype:
            raise UserError(f"{where}: tensor {key} has dtype {got.dtype}, but model {name} needs {want.dtype}")
    params = dict(net.named_parameters())
    for key, mask in masks.items():
        if key not in params or params[key].shape != mask.shape:
            raise UserError(f"{where}: {printable(f'mask.{key}')} has no parameter of the same shape")
    shape = input_shape(dataset)
    if shape is None:
        return
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.empty((_PROBE_BATCH, *shape), device="meta"))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise UserError(f"{where}: model {name} cannot read {dataset.get('name')} inputs of shape {shape} "
                        f"({first_line(err)})") from None
    classes = model.get("kwargs", {}).get("num_classes")
    if not isinstance(out, Tensor) or tuple(out.shape) != (_PROBE_BATCH, classes):
        raise UserError(f"{where}: model {name} does not give {classes} class scores per "
                        f"{dataset.get('name')} input")


def check_tensor_values(where: str, state: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """Refuse tensors of other dtypes than float, integer and bool, non-finite floating tensors, negative
    BatchNorm running variances, masks that are not float tensors of 0 and 1, and weights that are
    non-zero where their mask is 0."""
    for key, t in state.items():
        if t.dtype not in FLOAT_DTYPES + INTEGER_DTYPES:
            raise UserError(f"{where}: tensor {printable(key)} has unsupported dtype {t.dtype}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UserError(f"{where}: tensor {printable(key)} holds NaN or infinite values")
        if key.rsplit(".", 1)[-1] == "running_var" and bool((t < 0).any()):
            raise UserError(f"{where}: tensor {printable(key)} (a BatchNorm running variance) holds negative values")
    for key, mask in masks.items():
        label = printable(f"mask.{key}")
        if mask.dtype not in FLOAT_DTYPES:
            raise UserError(f"{where}: {label} must be a float tensor of 0s and 1s, not {mask.dtype}")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise UserError(f"{where}: {label} must be a float tensor of 0s and 1s; it holds other values")
        if key not in state or state[key].shape != mask.shape:
            raise UserError(f"{where}: {label} has no weight of the same shape")
        if bool((state[key][mask == 0] != 0).any()):
            raise UserError(f"{where}: weight {printable(key)} is non-zero where its mask is 0")
