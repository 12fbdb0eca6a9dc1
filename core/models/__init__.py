"""Models: one is rebuilt from ``{"name": ..., "kwargs": {...}}`` alone.

``name`` is one of four kinds (``kwargs`` always holds ``num_classes``):

- a zoo model of :data:`REGISTRY`: ``mlp``, ``cnn1d`` and ``transformer1d`` (MNIST-1D), ``wrn`` / ``wrnDxW`` (e.g.
  ``wrn28x2``), ``vgg11/13/16/19`` (with BatchNorm), ``resnet20`` and ``resnet18`` (CIFAR variants),
  ``resnet50`` (torchvision, ImageNet);
- ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None, **kwargs)``;
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, **kwargs)`` (``pip install -e ".[timm]"``);
- ``PACKAGE.MODULE:CALLABLE``: the user's factory ``CALLABLE(**kwargs)``, imported only with
  ``trust_code`` (:mod:`core.imports`).

To add a zoo model: write its factory ``NAME(num_classes=..., **arguments) -> nn.Module`` (in
``core/models/``; every argument with a default of a JSON type, which is what a checkpoint may
record) and add ``"NAME": factory`` to :data:`REGISTRY`. That is the one entry: ``--model NAME`` (and
its ``--help`` text, :func:`zoo_names`), the "choose ..." messages (:func:`model_kinds`) and the
checkpoint schema's check of the model's arguments (:func:`core.artifacts.schema.zoo_kwargs_problem`,
read from the factory's signature) all derive from it. A family with names that carry arguments
(``wrn28x2``) adds an :data:`ALIASES` entry too.

Example:
    >>> spec = model_spec("wrn16x2", 10)
    >>> spec
    {'name': 'wrn', 'kwargs': {'depth': 16, 'width': 2, 'num_classes': 10}}
    >>> type(build_model(model_spec("torchvision:resnet18", 10))).__name__
    'ResNet'
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from core.artifacts.jsonfile import brief_repr
from core.errors import UserError
from core.imports import import_callable, is_import_path
from core.models.budget import build_budget
from core.models.cifar import resnet18, resnet20, vgg, wrn
from core.models.external import check_library_kwargs, check_library_name, is_library_name, library_factory
from core.models.kwargs import model_kwargs_problem  # the checkpoint's rules, checked before training
from core.models.meta import building_on_meta, on_meta
from core.models.small import cnn1d, mlp
from core.models.transformer import transformer1d


def _resnet50(num_classes: int = 1000) -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(weights=None, num_classes=num_classes)


REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn1d": cnn1d,
    "transformer1d": transformer1d,
    "wrn": wrn,
    "vgg": vgg,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "resnet50": _resnet50,
}


class Alias(NamedTuple):
    """Names of a :data:`REGISTRY` family that carry arguments: ``pattern`` (a full match) gives ``arguments(match)``;
    ``form`` is how messages name the pattern, ``example`` how ``--help`` shows the family."""

    pattern: re.Pattern[str]
    arguments: Callable[[re.Match[str]], dict[str, Any]]
    form: str
    example: str


# registry name -> its alias
ALIASES: dict[str, Alias] = {
    "wrn": Alias(re.compile(r"wrn(\d+)x(\d+)"), lambda m: {"depth": int(m[1]), "width": int(m[2])}, "wrnDxW",
                 "wrn28x2"),
    "vgg": Alias(re.compile(r"vgg(\d+)"), lambda m: {"depth": int(m[1])}, "vggD", "vgg19"),
}
DEFAULT_SOURCE = "the model description"
# What constructors raise for arguments they cannot take (torchvision and timm check theirs with assertions).
ARGUMENT_ERRORS = (TypeError, ValueError, KeyError, AssertionError)


def zoo_names() -> str:
    """The zoo models as ``--model``'s help lists them (a family by its alias's example).

    Example:
        >>> zoo_names()
        'mlp, cnn1d, transformer1d, wrn28x2, vgg19, resnet20, resnet18, resnet50'
    """
    return ", ".join(ALIASES[name].example if name in ALIASES else name for name in REGISTRY)


def model_kinds() -> str:
    """Every kind of model name, as a refusal lists them ("choose ...")."""
    return (f"a zoo model ({', '.join([*REGISTRY, *(a.form for a in ALIASES.values())])}), torchvision:NAME, "
            "timm:NAME or PACKAGE.MODULE:CALLABLE")


def model_spec(name: str, num_classes: int, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The canonical ``{"name", "kwargs"}`` of a ``--model`` name and its ``--model-kwargs``.

    Zoo aliases expand (``wrn28x2`` is ``wrn`` with depth 28, width 2); ``torchvision:NAME`` and
    ``timm:NAME`` must name a model of the library (unknown names list the close matches); an import
    path is only checked for its form (nothing is imported). Library and user-code arguments must be
    what a checkpoint may record (:func:`core.models.kwargs.model_kwargs_problem`).

    Args:
        name: the model name, of one of the kinds of this module's docstring.
        num_classes: the data set's class count, added to ``kwargs``.
        kwargs: further keyword arguments of the model's constructor.

    Returns:
        ``{"name": name, "kwargs": {**kwargs, "num_classes": num_classes}}``.

    Raises:
        UserError: unknown name or kind, or arguments a checkpoint could not record (one line).

    Example:
        >>> model_spec("torchvision:resnet18", 10, {"zero_init_residual": True})["kwargs"]
        {'zero_init_residual': True, 'num_classes': 10}
    """
    kwargs = dict(kwargs or {})
    for family, alias in ALIASES.items():
        match = alias.pattern.fullmatch(name)
        if match:
            name, kwargs = family, {**alias.arguments(match), **kwargs}
    kwargs = {**kwargs, "num_classes": num_classes}
    if name in REGISTRY:
        return {"name": name, "kwargs": kwargs}
    if is_library_name(name):
        check_library_name(name)
        check_library_kwargs(name, kwargs)
    elif not is_import_path(name):
        raise UserError(f"unknown model {name!r}; choose {model_kinds()}")
    problem = model_kwargs_problem(kwargs)
    if problem is not None:
        key, rule, value = problem
        raise UserError(f"model {name}: argument {key} must be {rule}, not {brief_repr(value)}")
    return {"name": name, "kwargs": kwargs}


def model_factory(name: str, *, trust_code: bool = False, source: str = DEFAULT_SOURCE) -> Callable[..., nn.Module]:
    """The callable that builds the model ``name`` from its kwargs; a user factory is imported here, and
    only with ``trust_code`` (else :func:`core.imports.untrusted` names ``source``)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if is_library_name(name):
        return library_factory(name)
    if is_import_path(name):
        return import_callable(name, "model", trust_code=trust_code, source=source)
    raise UserError(f"unknown model {name!r}; choose {model_kinds()}")


def _instantiate(name: str, factory: Callable[..., nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    if is_library_name(name):
        check_library_kwargs(name, kwargs)
    try:
        with build_budget(name):
            net = factory(**kwargs)
    except ARGUMENT_ERRORS as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"bad arguments for model {name} {json.dumps(kwargs)}: {reason}") from None
    except MemoryError:
        raise UserError(f"model {name} {json.dumps(kwargs)} does not fit in memory; choose smaller arguments") \
            from None
    except SystemExit as err:  # the user's factory called sys.exit: no model, and no silent exit 0
        raise UserError(f"model {name}: its factory exited (SystemExit({err.code!r})) instead of returning a model") \
            from None
    if not isinstance(net, nn.Module):
        raise UserError(f"model {name} returned a {type(net).__name__} object, not a torch.nn.Module")
    return net


def build_model(spec: dict[str, Any], *, trust_code: bool = False, source: str = DEFAULT_SOURCE) -> nn.Module:
    """Instantiate the model a spec describes (weights freshly initialised from torch's RNG; library models
    never with pretrained weights).

    Args:
        spec: ``{"name", "kwargs"}`` as :func:`model_spec` makes it.
        trust_code: import and call a ``PACKAGE.MODULE:CALLABLE`` factory (the user's consent).
        source: what named the model, for the refusal of untrusted user code (e.g. ``checkpoint PATH``).

    Returns:
        The module, on the current default device (``with torch.device("meta"):`` builds it without memory).

    Raises:
        UserError: unknown model, untrusted or unimportable user code, bad arguments, or a factory that
        returns something other than an ``nn.Module`` (one line each).
    """
    name = spec["name"]
    net = _instantiate(name, model_factory(name, trust_code=trust_code, source=source), spec["kwargs"])
    asked = building_on_meta() or torch.get_default_device().type == "meta"
    if not asked and any(t.is_meta for t in (*net.parameters(), *net.buffers())):
        raise UserError(f"model {name} was built on the meta device (tensors without data); its factory must return "
                        "a model with real tensors (the toolkit places it on the device itself)")
    return net


def meta_model(spec: dict[str, Any], *, trust_code: bool = False, source: str = DEFAULT_SOURCE) -> nn.Module:
    """:func:`build_model` on the meta device (:func:`core.models.meta.on_meta`): shapes and dtypes, no
    memory. A user factory's module is imported before, outside the meta device, so that its module-level
    tensors are real.

    Example:
        >>> net = meta_model(model_spec("torchvision:regnet_y_400mf", 10))
        >>> next(net.parameters()).device.type
        'meta'
    """
    name = spec["name"]
    factory = model_factory(name, trust_code=trust_code, source=source)
    return on_meta(lambda: _instantiate(name, factory, spec["kwargs"]))
