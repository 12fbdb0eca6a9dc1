"""What a checkpoint's tensors may be: the part of the hostile-checkpoint schema (:mod:`core.artifacts.schema`,
the metadata) that compares them with the model they claim to be.

The model is built on the ``meta`` device (shapes, no memory) and every ``state_dict`` key,
shape and dtype must be what the file holds, so a model is never larger than the file
(:func:`check_structure`); once the model is built for real with the file's weights, a forward pass on a
batch of two zero inputs of the data set's input shape must give ``(2, num_classes)``
(:func:`check_forward`: on the CPU, so it costs what two samples of the later evaluation cost; a meta
forward pass would import ``torch._dynamo`` for BatchNorm's decomposition, about a second of start-up).
For a user-code model this needs its module imported, so it runs only with ``trust_code``.
Floating tensors must be finite, BatchNorm ``running_var`` non-negative,
masks float tensors of 0 and 1 on a parameter of the same shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from core.artifacts.schema import MODEL_ERRORS, first_line, printable
from core.data.catalog import PREFIX as TORCHVISION_PREFIX
from core.data.catalog import TORCHVISION
from core.data.catalog import input_shape as vision_shape
from core.data.catalog import kwargs_problem as vision_kwargs_problem
from core.data.names import BUILTIN, is_builtin
from core.errors import UserError
from core.imports import is_import_path

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_PROBE_BATCH = 2


def input_shape(dataset: Mapping[str, Any]) -> tuple[int, ...] | None:
    """Shape of one input of the data set ``dataset`` describes; None if unknown."""
    name = dataset.get("name")
    if is_builtin(name):
        return BUILTIN[name].input_shape(dataset)
    if isinstance(name, str) and name.startswith(TORCHVISION_PREFIX):
        short, kwargs = name.removeprefix(TORCHVISION_PREFIX), dataset.get("kwargs", {})
        if short in TORCHVISION and isinstance(kwargs, dict) and not vision_kwargs_problem(short, kwargs):
            return vision_shape(short, kwargs)
    return None  # the user's datasets: known only once read


def check_structure(where: str, model: Mapping[str, Any], state: Mapping[str, Tensor],
                    masks: Mapping[str, Tensor], *, trust_code: bool = False) -> None:
    """Refuse tensors that are not exactly the ``state_dict`` of ``model`` (built on the meta device, so
    nothing is allocated) and masks on anything but a parameter.

    A ``PACKAGE.MODULE:CALLABLE`` model is user code: without ``trust_code`` nothing is checked here (the
    check is deferred to :func:`core.artifacts.checkpoint.build_model`, which refuses untrusted code)."""
    from core.models import meta_model

    name = model.get("name")
    if is_import_path(name) and not trust_code:
        return
    try:
        net = meta_model(dict(model), trust_code=trust_code, source=f"checkpoint {where}")
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    except MODEL_ERRORS as err:
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


def check_forward(where: str, net: torch.nn.Module, model: Mapping[str, Any], dataset: Mapping[str, Any]) -> None:
    """Refuse a model (``net``, built from ``model`` with the checkpoint's weights, on the CPU) that does not
    map a batch of two zero inputs of the shape ``dataset`` describes to ``(2, num_classes)``; nothing is
    checked where the shape is only known once the data is read (the user's data sets).

    The pass runs in eval mode without gradients, under a forked RNG so that it draws nothing from the
    caller's random streams; ``net`` keeps its mode."""
    shape = input_shape(dataset)
    if shape is None:
        return
    name, training = model.get("name"), net.training
    net.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = net(torch.zeros((_PROBE_BATCH, *shape)))
    except MODEL_ERRORS as err:
        raise UserError(f"{where}: model {name} cannot read {dataset.get('name')} inputs of shape {shape} "
                        f"({first_line(err)})") from None
    finally:
        net.train(training)
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
