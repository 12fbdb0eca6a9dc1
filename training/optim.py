"""The optimizer and the loss of a run: ``--optimizer``, ``--optimizer-kwargs``, ``--loss``, ``--label-smoothing``
(and the Python API's ``optimizer_fn`` / ``loss_fn``).

* Optimizers: ``sgd`` (``torch.optim.SGD`` with ``--momentum`` and ``--weight-decay``, the default: the
  runner's behaviour, bit for bit), ``adam`` (Kingma & Ba 2015) and ``adamw`` (decoupled weight decay,
  Loshchilov & Hutter 2019), both with ``--weight-decay``; ``--optimizer-kwargs`` sets the other
  hyperparameters torch gives each (:data:`OPTIMIZER_KWARGS`). ``PACKAGE.MODULE:CALLABLE`` names a user's
  ``optimizer_fn(params, lr) -> torch.optim.Optimizer``. The learning rate of every step is the run's
  schedule (:class:`training.train.Schedule`), written into every parameter group before the step.
* Losses: ``cross-entropy`` on class labels (``--label-smoothing`` eps: the target is (1 - eps) on the label
  plus eps / C on every class, Szegedy et al. 2016), and ``mse``, the mean squared error between the outputs
  and real-valued targets of their shape; it is refused on class labels (a number there would measure
  nothing the run reports). ``model``: the model's own loss (the Hugging Face convention,
  :func:`model_loss`): the batch's ``"labels"`` go into the model with its other inputs and the loss is the
  outputs' ``loss``. ``PACKAGE.MODULE:CALLABLE`` names a user's ``loss_fn(outputs, targets) -> scalar``.

Every loss sees batches of any structure of :mod:`core.batch` (:func:`batch_loss`): ``loss(model(inputs),
targets)``, inputs that are a mapping as keyword arguments.

Under every optimizer pruned weights stay exactly 0 (:func:`training.masked.mask_optimizer`).

Example:
    >>> from torch import nn
    >>> make = optimizer_fn("adamw", '{"betas": [0.9, 0.95]}', momentum=0.9, weight_decay=0.01)
    >>> opt = make(nn.Linear(2, 1).parameters(), 0.001)
    >>> type(opt).__name__, opt.param_groups[0]["betas"], opt.param_groups[0]["weight_decay"]
    ('AdamW', (0.9, 0.95), 0.01)
    >>> optimizer_fn("sgd", "{}", momentum=0.9, weight_decay=0.0) is None  # the runner's own SGD
    True
    >>> loss_fn("cross-entropy", 0.0) is None  # the runner's own cross-entropy
    True
    >>> round(float(loss_fn("cross-entropy", 0.1)(torch.tensor([[4.0, 0.0]]), torch.tensor([0]))), 3)
    0.218
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from core.artifacts.jsonfile import json_object_flag
from core.batch import apply_model, batch_parts, logits_of
from core.errors import UserError
from core.imports import import_callable, is_import_path

OptimizerFn = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]
"""``optimizer_fn(params, lr) -> torch.optim.Optimizer``; the schedule sets every group's ``lr`` before each step."""
LossFn = Callable[[Any, Tensor], Tensor]
"""``loss_fn(outputs, targets) -> scalar tensor``: the mean loss of a batch."""

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
LOSSES = ("cross-entropy", "mse", "model")
DEFAULT_OPTIMIZER, DEFAULT_LOSS = "sgd", "cross-entropy"

_FRACTION = "a number in [0, 1)"
# The keywords --optimizer-kwargs may set, per optimizer, and what each must be. The learning rate, SGD's
# momentum and the weight decay have their own flags; torch's implementation switches (foreach, fused,
# capturable, differentiable) are not hyperparameters.
OPTIMIZER_KWARGS: dict[str, dict[str, str]] = {
    "sgd": {"dampening": _FRACTION, "nesterov": "true or false", "maximize": "true or false"},
    "adam": {"betas": "a list of two numbers in [0, 1)", "eps": "a positive number", "amsgrad": "true or false",
             "maximize": "true or false"},
}
OPTIMIZER_KWARGS["adamw"] = OPTIMIZER_KWARGS["adam"]
OWN_FLAGS = {"lr": "--lr", "momentum": "--momentum", "weight_decay": "--weight-decay"}


def _fraction(v: Any) -> bool:
    return _number(v) and 0.0 <= v < 1.0


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


_FITS: dict[str, Callable[[Any], bool]] = {
    _FRACTION: _fraction,
    "true or false": lambda v: isinstance(v, bool),
    "a list of two numbers in [0, 1)": lambda v: isinstance(v, list) and len(v) == 2 and all(map(_fraction, v)),
    "a positive number": lambda v: _number(v) and v > 0,
}


def check_optimizer(name: str, kwargs_text: str) -> dict[str, Any]:
    """The keyword arguments ``--optimizer-kwargs`` gives the optimizer ``name``, checked; else one
    :class:`UserError` line naming the flag."""
    if name not in OPTIMIZERS and not is_import_path(name):
        raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)} or PACKAGE.MODULE:CALLABLE, not {name!r}")
    kwargs = json_object_flag(kwargs_text, "--optimizer-kwargs", '{"betas": [0.9, 0.999]}')
    if name not in OPTIMIZERS:
        if kwargs:
            raise UserError(f"--optimizer-kwargs sets sgd, adam or adamw; --optimizer {name} takes its settings in "
                            "its own code")
        return kwargs
    known = OPTIMIZER_KWARGS[name]
    for key, value in kwargs.items():
        if key in OWN_FLAGS:
            raise UserError(f"--optimizer-kwargs: give {key} with {OWN_FLAGS[key]}")
        if key not in known:
            raise UserError(f"--optimizer-kwargs: --optimizer {name} takes {', '.join(known)}, not {key!r}")
        if not _FITS[known[key]](value):
            raise UserError(f"--optimizer-kwargs: {key} must be {known[key]}, not {value!r}")
    return kwargs


def optimizer_fn(name: str, kwargs_text: str, *, momentum: float, weight_decay: float,
                 trust_code: bool = True) -> OptimizerFn | None:
    """The ``optimizer_fn`` of ``--optimizer name --optimizer-kwargs kwargs_text``; None for plain ``sgd``
    (the runner's own SGD with ``momentum`` and ``weight_decay``, :class:`training.train.Hyper`)."""
    kwargs = check_optimizer(name, kwargs_text)
    if name not in OPTIMIZERS:
        return import_callable(name, "optimizer", trust_code=trust_code, source=f"--optimizer {name}")
    if name == "sgd" and not kwargs:
        return None
    if name == "sgd":
        kwargs = {"momentum": momentum, **kwargs}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    make = functools.partial(_build, OPTIMIZERS[name], {"weight_decay": weight_decay, **kwargs})
    try:  # torch's own checks of the combination (nesterov needs momentum and no dampening)
        make([torch.zeros(1, requires_grad=True)], 0.0)
    except ValueError as err:
        raise UserError(f"--optimizer-kwargs: --optimizer {name} refuses these settings ({err})") from None
    return make


def _build(cls: type[torch.optim.Optimizer], kwargs: dict[str, Any], params: Iterable[nn.Parameter],
           lr: float) -> torch.optim.Optimizer:
    return cls(params, lr=lr, **kwargs)


def check_loss(name: str, label_smoothing: float) -> None:
    """Refuse a ``--loss`` / ``--label-smoothing`` pair in one :class:`UserError` line naming the flag."""
    if name not in LOSSES and not is_import_path(name):
        raise UserError(f"--loss must be one of {', '.join(LOSSES)} or PACKAGE.MODULE:CALLABLE, not {name!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise UserError(f"--label-smoothing must lie in [0, 1), not {label_smoothing!r}")
    if label_smoothing and name != "cross-entropy":
        raise UserError(f"--label-smoothing applies to --loss cross-entropy, not --loss {name}")


def loss_fn(name: str, label_smoothing: float, *, trust_code: bool = True) -> LossFn | None:
    """The ``loss_fn`` of ``--loss name --label-smoothing label_smoothing``; None for plain cross-entropy (the
    runner's own ``nn.functional.cross_entropy``)."""
    check_loss(name, label_smoothing)
    if name == "cross-entropy":
        return functools.partial(nn.functional.cross_entropy, label_smoothing=label_smoothing) \
            if label_smoothing else None
    if name == "mse":
        return mse_loss
    if name == "model":
        return model_loss
    return import_callable(name, "loss", trust_code=trust_code, source=f"--loss {name}")


def mse_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error between ``outputs`` and real-valued ``targets`` of their shape; class labels refused."""
    if not targets.is_floating_point() or targets.shape != outputs.shape:
        raise UserError(f"--loss mse needs real-valued targets of the model's output shape {tuple(outputs.shape)}; "
                        f"the data set's are {targets.dtype} {tuple(targets.shape)} (class labels: use --loss "
                        "cross-entropy)")
    return nn.functional.mse_loss(outputs, targets)


def model_loss(outputs: Any, targets: Any = None) -> Tensor:
    """The loss a model computed itself: ``outputs.loss`` (or ``outputs["loss"]``), the Hugging Face convention.

    :func:`batch_loss` passes a mapping batch whole, ``"labels"`` included, to the model under this loss, so
    that a ``transformers`` model computes its own loss (a causal language model: the mean cross-entropy of
    each next token, shifting the labels itself). ``targets`` is not used.

    Example:
        >>> model_loss({"loss": torch.tensor(0.5), "logits": torch.zeros(2, 3)})
        tensor(0.5000)
    """
    value = outputs.get("loss") if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
    if not isinstance(value, Tensor):
        raise UserError(f"--loss model needs a model that returns its own loss (outputs.loss, as Hugging Face models "
                        f"do given labels), but it returned {type(outputs).__name__} without one; use another --loss")
    return value


def batch_loss(model: nn.Module, batch: Any, loss: LossFn | None) -> Tensor:
    """``loss(model(inputs), targets)`` of one batch of any structure of :mod:`core.batch` (None: the runner's
    cross-entropy of the outputs' class logits, :func:`core.batch.logits_of`). Under :func:`model_loss` a
    mapping batch goes to the model whole, labels included.

    Example:
        >>> net = nn.Linear(2, 3)
        >>> x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
        >>> bool(batch_loss(net, (x, y), None) == nn.functional.cross_entropy(net(x), y))
        True
    """
    inputs, targets = batch_parts(batch)
    if loss is model_loss:
        return model_loss(apply_model(model, batch if isinstance(batch, Mapping) else inputs))
    outputs = apply_model(model, inputs)
    return nn.functional.cross_entropy(logits_of(outputs), targets) if loss is None else loss(outputs, targets)
