"""Model registry: a model is rebuilt from ``{"name": ..., "kwargs": {...}}`` alone.

Names: ``mlp`` and ``cnn1d`` (MNIST-1D), ``wrn`` / ``wrnD xW`` (e.g. ``wrn28x2``), ``vgg11/13/16/19``
(with BatchNorm), ``resnet20`` and ``resnet18`` (CIFAR variants), ``resnet50`` (torchvision, ImageNet).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torch import nn

from training.errors import UserError
from training.models.cifar import resnet18, resnet20, vgg, wrn
from training.models.small import cnn1d, mlp


def _resnet50(num_classes: int = 1000) -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(weights=None, num_classes=num_classes)


REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn1d": cnn1d,
    "wrn": wrn,
    "vgg": vgg,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "resnet50": _resnet50,
}
_ALIASES = [
    (re.compile(r"wrn(\d+)x(\d+)"), lambda m: ("wrn", {"depth": int(m[1]), "width": int(m[2])})),
    (re.compile(r"vgg(\d+)"), lambda m: ("vgg", {"depth": int(m[1])})),
]


def model_spec(name: str, num_classes: int, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Canonical ``{"name", "kwargs"}`` for a registry name or alias such as ``wrn28x2``."""
    kwargs = dict(kwargs or {})
    for pattern, expand in _ALIASES:
        match = pattern.fullmatch(name)
        if match:
            name, implied = expand(match)
            kwargs = {**implied, **kwargs}
    if name not in REGISTRY:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(REGISTRY)}, wrnDxW or vggD")
    return {"name": name, "kwargs": {**kwargs, "num_classes": num_classes}}


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Instantiate the model a spec describes (weights freshly initialised from torch's RNG)."""
    try:
        return REGISTRY[spec["name"]](**spec["kwargs"])
    except KeyError:
        raise UserError(f"unknown model {spec.get('name')!r}") from None
    except (TypeError, ValueError) as err:
        raise UserError(f"bad arguments for model {spec['name']!r}: {err}") from None
