"""A budget for building a model: a constructor told to make millions of layers stops at once.

The arguments of a model can come from a file (a checkpoint's metadata, a resumed run's
``config.json``), and a library's constructor turns some of them into a count of layers
(timm's DenseNet ``block_config``, MobileNetV3's ``depth_multiplier``, ReXNet's ``depth_mult``).
:func:`core.models.kwargs.model_kwargs_problem` bounds every number such a file may give; this
module bounds what a constructor makes of them, whatever the argument's name: while a model is built,
every submodule it registers and every tensor it creates is counted, and the build is refused (one
:class:`ModelTooLarge` line) past :data:`MAX_MODULES` modules, :data:`MAX_TENSORS` tensors or
:data:`MAX_BUILD_SECONDS` seconds. The largest library models stay far below (timm's
``efficientnet_l2``: 1,757 modules and 1,914 tensors, in half a second on the meta device).

Example:
    >>> from torch import nn
    >>> with build_budget("tiny"):
    ...     net = nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)])
    >>> try:
    ...     with build_budget("huge"):
    ...         net = nn.Sequential(*[nn.ReLU() for _ in range(MAX_MODULES + 1)])
    ... except ModelTooLarge as err:
    ...     print(str(err).split(";")[0])
    model huge makes more than 8,192 modules
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch
from torch.nn.modules.module import register_module_module_registration_hook
from torch.overrides import TorchFunctionMode

from core.errors import UserError

MAX_MODULES = 8_192  # four times timm's largest models
MAX_TENSORS = 16_384
MAX_BUILD_SECONDS = 60.0
_FACTORIES = {torch.empty, torch.empty_strided, torch.zeros, torch.ones, torch.full, torch.eye, torch.arange,
              torch.linspace, torch.logspace, torch.rand, torch.randn, torch.randint, torch.randperm, torch.tensor,
              torch.as_tensor, torch.asarray, torch.scalar_tensor, torch.empty_like, torch.zeros_like,
              torch.ones_like, torch.full_like}


class ModelTooLarge(UserError):
    """A model whose construction went past the budget of :mod:`core.models.budget`."""


class _Counter(TorchFunctionMode):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.modules, self.tensors, self.began = name, 0, 0, time.monotonic()

    def check(self) -> None:
        what = (f"more than {MAX_MODULES:,} modules" if self.modules > MAX_MODULES else
                f"more than {MAX_TENSORS:,} tensors" if self.tensors > MAX_TENSORS else
                f"no model in {MAX_BUILD_SECONDS:.0f} seconds"
                if time.monotonic() - self.began > MAX_BUILD_SECONDS else None)
        if what is not None:
            raise ModelTooLarge(f"model {self.name} makes {what}; its arguments ask for a model far larger than "
                                "any the toolkit trains (check the counts and multipliers of its arguments)")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _FACTORIES:
            self.tensors += 1
            self.check()
        return func(*args, **(kwargs or {}))

    def registered(self, module: torch.nn.Module, name: str, submodule: torch.nn.Module | None) -> None:
        self.modules += 1
        self.check()


@contextlib.contextmanager
def build_budget(name: str) -> Iterator[None]:
    """Count the modules and tensors made inside the block (the model ``name``'s constructor) and raise
    :class:`ModelTooLarge` past the budget of this module."""
    counter = _Counter(name)
    handle = register_module_module_registration_hook(counter.registered)
    try:
        with counter:
            yield
    finally:
        handle.remove()
