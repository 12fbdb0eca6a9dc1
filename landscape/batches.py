"""Data and losses of the landscape library: any iterable of ``(inputs, targets)`` batches, any loss.

Every analysis of :mod:`landscape` measures the **mean loss over all samples** of ``data``,

    L(theta) = (1/N) sum_b n_b * loss_fn(f_theta(x_b), y_b),      N = sum_b n_b,

where ``loss_fn`` returns the mean over its batch (as ``torch.nn.functional.cross_entropy`` and
``torch.nn.MSELoss()`` do by default): a last, smaller batch weighs by its size, not as a whole batch.
``n_b`` is the length of the targets' first dimension.

``data`` may be a :class:`torch.utils.data.DataLoader`, a list of ``(inputs, targets)`` tuples, or one
``(X, y)`` pair of tensors, which is cut into batches of ``batch_size`` samples. It is iterated once per
evaluation; nothing is assumed about its dataset class.

Example:
    >>> import torch
    >>> X, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    >>> [len(t) for _, t in as_batches((X, y), batch_size=4)]
    [4, 4, 2]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from training.errors import LibraryArgumentError

LossFn = Callable[[Any, Tensor], Tensor]
Batch = tuple[Any, Tensor]
DEFAULT_BATCH_SIZE = 1000
DEFAULT_BN_SAMPLES = 2048
# The most a function or command line may ask for: beyond these a scan or estimate would not fit in memory or
# finish (each grid point is one evaluation of the whole data set; each probe a vector of every weight).
MAX_POINTS = 10_001
MAX_HULL_SAMPLES = 100_000
MAX_RESOLUTION = 1_001
MAX_PROBES = 10_000
MAX_LANCZOS_RUNS = 1_000


class ArgumentError(LibraryArgumentError):
    """A bad argument of a landscape library function (data, models, loss, sizes); the message names it."""


def check_finite(value: float, what: str, remedy: str = "check the models' weights, the data and loss_fn") -> float:
    """``value`` if it is a finite number, else :class:`ArgumentError`: "``what`` is not finite (nan); ``remedy``".

    Every number a landscape function or tool reports passes through this one check, so a NaN or an
    infinity is refused alike everywhere (one line and exit status 2 in the tools) instead of being
    printed or written as a result.

    Example:
        >>> check_finite(0.5, "the loss")
        0.5
    """
    if not math.isfinite(value):
        raise ArgumentError(f"{what} is not finite ({value}); {remedy}")
    return value


def check_model(model: nn.Module, name: str = "model") -> None:
    """Refuse (:class:`ArgumentError`) a module whose weights cannot be measured: tensors on the meta device
    (shapes without values) or floating-point weights below float32 (half precision: the sums of a loss over
    a data set and the Hessian's products would round away what they measure)."""
    for key, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_meta:
            raise ArgumentError(f"{name} has no weight values: '{key}' is on the meta device; load its weights "
                                "first (model.to_empty(device='cpu'), then load_state_dict)")
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
            raise ArgumentError(f"{name} holds {tensor.dtype} weights ('{key}'); landscape measurements need float32 "
                                f"or float64 weights: pass {name}.float()")


def check_class_targets(outputs: Tensor, targets: Tensor) -> None:
    """Refuse targets the default loss (cross-entropy of class logits) cannot apply to: targets that are not
    integer class indices in [0, classes) of ``outputs`` (N, classes)."""
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ArgumentError(f"the default loss_fn (cross-entropy) needs integer class indices as targets, got "
                            f"{targets.dtype} targets; pass a loss_fn that fits them")
    classes = outputs.shape[1] if isinstance(outputs, Tensor) and outputs.dim() >= 2 else None
    if classes is not None and targets.dim() != outputs.dim() - 1:
        raise ArgumentError(f"the default loss_fn (cross-entropy) needs one class index per sample: targets of "
                            f"shape {tuple(targets.shape)} do not fit outputs of shape {tuple(outputs.shape)}; pass a "
                            "loss_fn that fits them")
    if classes is not None and targets.numel():
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= classes:
            raise ArgumentError(f"targets hold class {low if low < 0 else high}, outside the model's {classes} "
                                f"classes 0 .. {classes - 1}; check the data, or pass a loss_fn that fits them")


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """The default ``loss_fn``: mean cross-entropy of class logits (computed in float32)."""
    check_class_targets(outputs, targets)
    return nn.functional.cross_entropy(outputs.float(), targets)


def is_tensor_pair(data: Any) -> bool:
    return isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data) \
        and data[0].dim() > 0 and data[1].dim() > 0 and len(data[0]) == len(data[1])


class Batches:
    """A re-iterable view of ``data`` as ``(inputs, targets)`` batches moved to ``device``.

    Args:
        data: a DataLoader, an iterable of ``(inputs, targets)``, or an ``(X, y)`` pair of tensors.
        batch_size: batch size for an ``(X, y)`` pair (default 1000); ignored otherwise.
        name: the argument's name in error messages (``data``, ``bn_data``).
        device: where each batch is moved (the model's device); None leaves them where they are.
    """

    def __init__(self, data: Any, batch_size: int | None = None, name: str = "data",
                 device: torch.device | None = None):
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(data, Tensor) or data is None or isinstance(data, str | bytes):
            raise ArgumentError(f"{name} must be an iterable of (inputs, targets) batches or an (X, y) pair of "
                            f"tensors, got {type(data).__name__}")
        self.name, self.device = name, device
        self._pair = tuple(data) if is_tensor_pair(data) else None
        self._data, self._batch_size = data, batch_size or DEFAULT_BATCH_SIZE
        if self._pair is None and not isinstance(data, Iterable):
            raise ArgumentError(f"{name} must be an iterable of (inputs, targets) batches, got {type(data).__name__}")

    def __iter__(self) -> Iterator[Batch]:
        if self._pair is not None:
            source: Iterable = _slices(*self._pair, self._batch_size)
        else:
            source = self._data
        for n, batch in enumerate(source):
            if not (isinstance(batch, tuple | list) and len(batch) == 2 and isinstance(batch[1], Tensor)
                    and batch[1].dim() > 0):
                raise ArgumentError(f"{self.name} batch {n} is not an (inputs, targets) pair with a targets tensor")
            x, y = batch
            if self.device is not None:
                x = x.to(self.device) if isinstance(x, Tensor) else x
                y = y.to(self.device)
            yield x, y

    def first(self, samples: int) -> list[Batch]:
        """The first ``samples`` samples (all if fewer), as batches (the last one cut to size)."""
        out, count = [], 0
        for x, y in self:
            take = min(len(y), samples - count)
            out.append((x[:take] if take < len(y) else x, y[:take] if take < len(y) else y))
            count += take
            if count >= samples:
                break
        return out

    def count(self) -> int:
        """Number of samples (iterates once)."""
        return sum(len(y) for _, y in self)


def _slices(inputs: Tensor, targets: Tensor, size: int) -> Iterator[Batch]:
    for start in range(0, len(targets), size):
        yield inputs[start:start + size], targets[start:start + size]


def batches(data: Any, batch_size: int | None = None, name: str = "data",
            device: torch.device | None = None) -> Batches:
    """:class:`Batches` of ``data`` (returned as it is if it already is one, moved to ``device``)."""
    if isinstance(data, Batches):
        return Batches(data._pair or data._data, batch_size or data._batch_size, name, device or data.device)
    return Batches(data, batch_size, name, device)


def as_batches(data: Any, batch_size: int | None = None) -> list[Batch]:
    """``data`` as a list of ``(inputs, targets)`` batches (see :class:`Batches`)."""
    return list(batches(data, batch_size))


def bn_batches(bn_data: Any, data: Batches, batch_size: int | None) -> Batches | list[Batch] | None:
    """The batches that recompute BatchNorm statistics: ``bn_data``, by default the first
    :data:`DEFAULT_BN_SAMPLES` samples of ``data``; None when ``bn_data`` is ``()`` or ``False``
    (keep the stored statistics)."""
    if bn_data is False or (isinstance(bn_data, tuple | list) and len(bn_data) == 0):
        return None
    if bn_data is None or bn_data is True:
        return data.first(DEFAULT_BN_SAMPLES)
    return batches(bn_data, batch_size, "bn_data", data.device)


def peek(data: Batches) -> Batch:
    """The first batch; :class:`ArgumentError` if ``data`` is empty."""
    first = next(iter(data), None)
    if first is None:
        raise ArgumentError(f"{data.name} is empty: it yielded no batch")
    return first


def mean_loss_terms(outputs: Tensor, targets: Tensor, loss_fn: LossFn) -> Tensor:
    """``n_b * loss_fn(outputs, targets)``: the batch's share of the sum over samples."""
    value = loss_fn(outputs, targets)
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ArgumentError(f"loss_fn must return the mean loss of a batch as a scalar tensor, got {shape}")
    return value.reshape(()) * len(targets)
