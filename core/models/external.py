"""Models from outside the zoo: ``torchvision:NAME``, ``timm:NAME`` and ``PACKAGE.MODULE:CALLABLE``.

A library model is built from the library's own registry with freshly initialised weights: never
downloaded (torchvision ``weights=None``, timm ``pretrained=False``), so the arguments that would load
or fetch weights (:data:`TORCHVISION_FORBIDDEN`, :data:`TIMM_FORBIDDEN`) are refused, also when a
checkpoint's metadata asks for them. A user factory is called as ``CALLABLE(num_classes=..., **kwargs)``
and is imported only with the user's consent (:mod:`core.imports`).

Example:
    >>> factory = library_factory("torchvision:resnet18")
    >>> type(factory(num_classes=10)).__name__
    'ResNet'
    >>> unknown_library_model("torchvision:resnet19").split(",")[0]
    'close matches: torchvision:resnet18'
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from typing import Any

from torch import nn

from core.errors import UserError

TORCHVISION, TIMM = "torchvision:", "timm:"
TIMM_INSTALL = 'pip install -e ".[timm]"'
# Arguments that would load weights from the network or a file named in a checkpoint: the toolkit passes
# weights=None / pretrained=False itself and never lets a file choose a path to read.
TORCHVISION_FORBIDDEN = ("weights",)
TIMM_FORBIDDEN = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")
_CLOSE_MATCHES = 5


def is_library_name(name: str) -> bool:
    """Whether ``name`` is ``torchvision:NAME`` or ``timm:NAME`` (NAME not checked)."""
    return name.startswith((TORCHVISION, TIMM)) and ":" not in name.split(":", 1)[1]


def torchvision_models() -> list[str]:
    """The names of torchvision's classification models (``torchvision.models.list_models``)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _timm(name: str) -> Any:
    try:
        import timm
    except ImportError:
        raise UserError(f"--model {name} needs timm: {TIMM_INSTALL}") from None
    return timm


def timm_models(name: str = "timm:NAME") -> list[str]:
    """The names of timm's models (``timm.list_models()``); a :class:`UserError` saying how to install timm
    (for the model ``name``) if it is absent."""
    return _timm(name).list_models()


def unknown_library_model(name: str) -> str | None:
    """None if the library of ``torchvision:NAME`` or ``timm:NAME`` has the model NAME; else what to say
    instead: its close matches (difflib) and where the full list is. Raises :class:`UserError` if timm
    is needed and absent."""
    prefix, model = name.split(":", 1)
    names = torchvision_models() if prefix + ":" == TORCHVISION else timm_models(name)
    if model in names:
        return None
    close = difflib.get_close_matches(model, names, n=_CLOSE_MATCHES)
    lister = "torchvision.models.list_models()" if prefix + ":" == TORCHVISION else "timm.list_models()"
    hint = f"close matches: {', '.join(f'{prefix}:{c}' for c in close)}" if close else "no close match"
    return f"{hint} ({lister} lists them all)"


def check_library_name(name: str) -> None:
    """Refuse (:class:`UserError`, one line) a ``torchvision:NAME`` or ``timm:NAME`` whose NAME the library
    does not have, listing the close matches."""
    hint = unknown_library_model(name)
    if hint is not None:
        raise UserError(f"unknown model {name!r}; {hint}")


def forbidden_argument(name: str, kwargs: dict[str, Any]) -> str | None:
    """The first argument of ``kwargs`` that the library model ``name`` may not be given (it would load
    weights), or None."""
    forbidden = TORCHVISION_FORBIDDEN if name.startswith(TORCHVISION) else TIMM_FORBIDDEN
    return next((key for key in kwargs if key in forbidden), None)


def check_library_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse (:class:`UserError`) an argument that would make the library model ``name`` load weights."""
    key = forbidden_argument(name, kwargs)
    if key is not None:
        given = "weights=None" if name.startswith(TORCHVISION) else "pretrained=False"
        raise UserError(f"model {name}: argument {key} is not allowed; the toolkit builds library models with "
                        f"{given} (freshly initialised, nothing downloaded or read)")


def library_factory(name: str) -> Callable[..., nn.Module]:
    """``factory(num_classes=..., **kwargs)`` building the library model ``name`` without pretrained weights.

    Args:
        name: ``torchvision:NAME`` or ``timm:NAME``, checked with :func:`check_library_name`.

    Returns:
        ``torchvision.models.get_model(NAME, weights=None, ...)`` or
        ``timm.create_model(NAME, pretrained=False, ...)`` as a partial function.
    """
    check_library_name(name)
    model = name.split(":", 1)[1]
    if name.startswith(TORCHVISION):
        import torchvision

        return functools.partial(torchvision.models.get_model, model, weights=None)
    return functools.partial(_timm(name).create_model, model, pretrained=False)
