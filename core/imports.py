"""User code named by an import path ``PACKAGE.MODULE:CALLABLE``, imported only when the user says so.

A model or dataset may be a factory in the user's own code (``--model mypkg.nets:small_cnn``). Naming
it on the command line (or passing it to the Python API) is the user's consent to import and run it.
A name read from a file (a checkpoint's metadata, a resumed run's ``config.json``) is not: the tools
refuse it unless the user passes ``--trust-code`` (``trust_code=True`` in Python), because importing a
module runs its code.

The working directory is on the import path while a factory is imported (as ``python -m`` has it), so
a module next to where the user runs the tool is found.

Example:
    >>> is_import_path("mypkg.nets:small_cnn"), is_import_path("torchvision:resnet18"), is_import_path("mlp")
    (True, False, False)
    >>> import_callable("collections:OrderedDict", "model", trust_code=True).__name__
    'OrderedDict'
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from core.errors import UserError

# Prefixes that name a library's own registry, or data handed over in Python (no user code runs), not a module path.
LIBRARY_PREFIXES = ("torchvision", "timm", "python")
_IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
                          r"(\.[A-Za-z_][A-Za-z0-9_]*)*")
TRUST_FLAG = "--trust-code"


def is_import_path(name: str) -> bool:
    """Whether ``name`` is ``PACKAGE.MODULE:CALLABLE`` (user code), not a zoo or ``torchvision:``/``timm:`` name."""
    return bool(_IMPORT_PATH.fullmatch(name)) and name.split(":", 1)[0] not in LIBRARY_PREFIXES


def untrusted(name: str, what: str, source: str) -> UserError:
    """The refusal of importing ``name`` (a ``what``: model or dataset) that ``source`` names."""
    return UserError(f"{source} names the {what} {name}, which is user code; importing it runs that code, so "
                     f"pass {TRUST_FLAG} if you trust it")


def import_callable(name: str, what: str, *, trust_code: bool, source: str = "the checkpoint") -> Callable[..., Any]:
    """The callable ``name`` (``PACKAGE.MODULE:CALLABLE``) names, imported with the working directory on the
    path.

    Args:
        name: the import path.
        what: ``"model"`` or ``"dataset"``, for messages.
        trust_code: the user's consent; without it a :class:`UserError` says which flag gives it.
        source: what named ``name`` (for the refusal), e.g. ``"checkpoint runs/x/cycle_00/average.safetensors"``.

    Returns:
        The callable.

    Raises:
        UserError: untrusted, not importable, no such attribute, or not callable (one line each).
    """
    if not is_import_path(name):
        raise UserError(f"{what} {name!r} is not an import path PACKAGE.MODULE:CALLABLE")
    if not trust_code:
        raise untrusted(name, what, source)
    module_name, attr = name.split(":", 1)
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"{what} {name}: cannot import {module_name} ({err}); is it on the Python path "
                        "(the working directory is)?") from None
    except Exception as err:  # the user's module raised while being imported
        raise UserError(f"{what} {name}: importing {module_name} failed ({type(err).__name__}: {err})") from None
    finally:
        if added:
            sys.path.remove(cwd)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UserError(f"{what} {name}: {module_name} has no attribute {attr}")
        target = getattr(target, part)
    if not callable(target):
        raise UserError(f"{what} {name}: {attr} is a {type(target).__name__}, not a callable")
    return target
