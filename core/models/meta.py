"""Models on the ``meta`` device: every parameter's shape and dtype, and no memory for any of them.

A checkpoint's model is first built on the meta device and compared with the file's tensors
(:mod:`core.artifacts.schema`), so that a file cannot make a tool allocate more than it holds.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# Elements of a tensor that the fallback makes for real: at this size even a thousand-layer model's
# constructor tensors take a few megabytes.
SMALL_TENSOR = 1024
_ON_META = contextvars.ContextVar("on_meta", default=False)
_FACTORIES = {torch.empty, torch.empty_strided, torch.zeros, torch.ones, torch.full, torch.eye, torch.arange,
              torch.linspace, torch.logspace, torch.rand, torch.randn, torch.randint, torch.randperm, torch.tensor,
              torch.as_tensor, torch.asarray, torch.scalar_tensor}


class _MetaUnlessSmall(TorchFunctionMode):
    """Tensor factories without a device make meta tensors, except tensors of at most :data:`SMALL_TENSOR`
    elements, which are made on the CPU so that their values can be read."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _FACTORIES or kwargs.get("device") is not None:
            return func(*args, **kwargs)
        probe = func(*args, **{**kwargs, "device": "meta"})
        return probe if probe.numel() > SMALL_TENSOR else func(*args, **{**kwargs, "device": "cpu"})


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with every parameter and buffer on the meta device.

    It runs under ``torch.device("meta")``. A constructor that reads the values of tensors it makes
    (torchvision's RegNet derives its widths from ``Tensor.tolist()``) fails there; it is run again with
    tensors of at most :data:`SMALL_TENSOR` elements made on the CPU (under a forked random state, so
    torch's global generator is untouched), and the model is then moved to the meta device.

    Example:
        >>> import torchvision
        >>> net = on_meta(lambda: torchvision.models.regnet_y_400mf(num_classes=10))
        >>> {t.device.type for t in net.state_dict().values()}
        {'meta'}
    """
    token = _ON_META.set(True)
    try:
        try:
            with torch.device("meta"):
                return build()
        except (NotImplementedError, RuntimeError):  # e.g. "Cannot copy out of meta tensor; no data!"
            with torch.random.fork_rng(devices=[]), _MetaUnlessSmall():
                net = build()
            return net.to("meta")
    finally:
        _ON_META.reset(token)


def building_on_meta() -> bool:
    """Whether the caller runs inside :func:`on_meta` (a model built there may hold meta tensors)."""
    return _ON_META.get()
