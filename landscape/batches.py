"""Data and losses of the landscape library: any iterable of ``(inputs, targets)`` batches, any loss.

Every analysis of :mod:`landscape` measures the **mean loss over all samples** of ``data``,

    L(theta) = (1/N) sum_b n_b * loss_fn(f_theta(x_b), y_b),      N = sum_b n_b,

where ``loss_fn`` returns the mean over its batch (as ``torch.nn.functional.cross_entropy`` and
``torch.nn.MSELoss()`` do by default): a last, smaller batch weighs by its size, not as a whole batch.
``n_b`` is the length of the targets' first dimension.

``data`` may be a :class:`torch.utils.data.DataLoader`, a list of ``(inputs, targets)`` tuples, or one
``(X, y)`` pair of tensors, which is cut into batches of ``batch_size`` samples. It is iterated once per
evaluation; nothing is assumed about its dataset class.

Named inputs (the Hugging Face convention), one rule: inputs that are a mapping are passed to the model
as keyword arguments, ``model(**inputs)``; a batch that is a mapping holds its targets under ``labels``
(:data:`TARGETS_KEY`) and the model's inputs under every other key (the labels are not passed to the
model). Targets under another key: give ``(inputs_dict, targets)`` pairs instead. An ``(X, y)`` pair may
have a mapping of tensors as X. Every tensor of a mapping is moved to the model's device and cut into
samples along its first dimension, as a tensor input is.

Outputs: the default loss (:func:`cross_entropy`) takes the class logits of the model's outputs, or their
``logits`` entry when they are a mapping (a Hugging Face ``ModelOutput``; a model's own ``loss`` entry is
not used); it refuses, naming ``loss_fn``, targets it cannot apply to (floating-point, e.g. regression
targets, or the wrong shape, or classes outside the outputs). Any other ``loss_fn`` receives the outputs as
the model returns them.

Example:
    >>> import torch
    >>> X, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    >>> [len(t) for _, t in as_batches((X, y), batch_size=4)]
    [4, 4, 2]
    >>> ids = torch.randint(0, 50, (10, 7))
    >>> inputs, targets = as_batches([{"input_ids": ids, "labels": y}])[0]
    >>> sorted(inputs), targets.shape
    (['input_ids'], torch.Size([10]))
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from core.batch import logits_of
from core.errors import LibraryArgumentError

LossFn = Callable[[Any, Tensor], Tensor]
Batch = tuple[Any, Tensor]
DEFAULT_BATCH_SIZE = 1000  # an (X, y) pair's batches; the tools' when a run records no eval_batch_size
DEFAULT_BN_SAMPLES = 2048  # samples that recompute BatchNorm by default (the tools' --bn-recal, --samples)
# The most a function or command line may ask for: beyond these a scan or estimate would not fit in memory or
# finish (each grid point is one evaluation of the whole data set; each probe a vector of every weight).
MAX_POINTS = 10_001
MAX_HULL_SAMPLES = 100_000
MAX_RESOLUTION = 1_001
MAX_PROBES = 10_000
MAX_LANCZOS_RUNS = 1_000
TARGETS_KEY = "labels"  # the targets of a batch that is a mapping (Hugging Face's name)
IGNORE_INDEX = -100  # a target cross-entropy skips (torch's default ignore_index; Hugging Face pads with it)


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


def describe_inputs(inputs: Any) -> str:
    """A model's inputs in a message: a tensor's dtype and shape, or those of each entry of a mapping.

    >>> import torch
    >>> describe_inputs({"input_ids": torch.zeros(2, 5, dtype=torch.long)})
    'input_ids: torch.int64 of shape (2, 5)'
    """
    def one(x: Any) -> str:
        return f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__

    if isinstance(inputs, Mapping):
        return ", ".join(f"{k}: {one(v)}" for k, v in inputs.items())
    return one(inputs)


@contextlib.contextmanager
def model_applied_to(inputs: Any, name: str = "data") -> Iterator[None]:
    """Turn the error torch raises when the model cannot take ``inputs`` (a ``RuntimeError``: integer inputs to
    a float layer, features of the wrong size) into an :class:`ArgumentError` naming ``name`` and the inputs'
    dtypes and shapes (``inputs`` may be a function that returns them, called only then). Running out of memory
    stays what it is.

    >>> import torch
    >>> with model_applied_to(torch.zeros(2, 3, dtype=torch.long)):  # doctest: +ELLIPSIS
    ...     torch.nn.Linear(3, 1)(torch.zeros(2, 3, dtype=torch.long))
    Traceback (most recent call last):
    ...
    landscape.batches.ArgumentError: data: the model cannot take these inputs (torch.int64 of shape (2, 3)): ...
    """
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        shown = describe_inputs(inputs() if callable(inputs) else inputs)
        raise ArgumentError(f"{name}: the model cannot take these inputs ({shown}): {first}; "
                            "give the inputs its forward takes (e.g. float features, or integer token ids for an "
                            "embedding)") from err


def class_logits(outputs: Any, targets: Tensor) -> Tensor:
    """The class logits of ``outputs`` (:func:`logits_of`) after checking that cross-entropy applies to them and
    ``targets``: floating-point logits (N, C, ...), integer targets (N, ...) in [0, C) (or
    :data:`IGNORE_INDEX`); an :class:`ArgumentError` naming ``loss_fn`` otherwise."""
    logits = logits_of(outputs)
    other = "; pass a loss_fn that fits them (e.g. torch.nn.MSELoss() for regression targets)"
    if not isinstance(logits, Tensor):
        keys = f" with keys {', '.join(map(str, outputs))}" if isinstance(outputs, Mapping) else ""
        raise ArgumentError(f"loss_fn: the default cross-entropy needs class logits, but the model returned a "
                            f"{type(outputs).__name__}{keys}{other}")
    if not logits.is_floating_point() or logits.dim() < 2:
        raise ArgumentError(f"loss_fn: the default cross-entropy needs floating-point class logits of shape (N, C, "
                            f"...), but the model returned {logits.dtype} outputs of shape {tuple(logits.shape)}"
                            f"{other}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ArgumentError(f"loss_fn: the default cross-entropy needs integer class targets, got {targets.dtype} "
                            f"targets of shape {tuple(targets.shape)}{other}")
    want = (logits.shape[0], *logits.shape[2:])
    if tuple(targets.shape) != want:
        raise ArgumentError(f"loss_fn: the default cross-entropy needs targets of shape {want} for outputs of shape "
                            f"{tuple(logits.shape)}, got {tuple(targets.shape)}{other}")
    classes = logits.shape[1]
    bad = ((targets < 0) & (targets != IGNORE_INDEX)) | (targets >= classes)
    if bool(bad.any()):
        raise ArgumentError(f"loss_fn: target class {int(targets[bad][0])} is outside the model's {classes} classes "
                            f"[0, {classes}); targets must be class indices of the outputs{other}")
    return logits


def cross_entropy(outputs: Any, targets: Tensor) -> Tensor:
    """The default ``loss_fn``: mean cross-entropy of class logits (computed in float32), after
    :func:`class_logits` has checked that it applies.

    >>> import torch
    >>> round(cross_entropy(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0])).item(), 4)  # log 2
    0.6931
    >>> cross_entropy(torch.zeros(4, 1), torch.randn(4, 1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    landscape.batches.ArgumentError: loss_fn: the default cross-entropy needs integer class targets, got ...
    """
    return nn.functional.cross_entropy(class_logits(outputs, targets).float(), targets)


def cross_entropy_sum(outputs: Any, targets: Tensor, float32: bool = True) -> Tensor:
    """The summed cross-entropy of a batch (:func:`cross_entropy` times its samples), in float32 or, with
    ``float32`` False, in the logits' dtype."""
    logits = class_logits(outputs, targets)
    return nn.functional.cross_entropy(logits.float() if float32 else logits, targets, reduction="sum")


def is_tensor_pair(data: Any) -> bool:
    """Whether ``data`` is one ``(X, y)`` pair of tensors (X may be a mapping of tensors) of as many samples."""
    if not (isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[1], Tensor) and data[1].dim() > 0):
        return False
    inputs = list(data[0].values()) if isinstance(data[0], Mapping) else [data[0]]
    return bool(inputs) and all(isinstance(t, Tensor) and t.dim() > 0 and len(t) == len(data[1]) for t in inputs)


def slice_samples(inputs: Any, start: int, stop: int) -> Any:
    """Samples ``start:stop`` of ``inputs``: a tensor, or a mapping whose tensors are cut alike."""
    if isinstance(inputs, Mapping):
        return {k: v[start:stop] if isinstance(v, Tensor) and v.dim() > 0 else v for k, v in inputs.items()}
    return inputs[start:stop]


def to_device(inputs: Any, device: torch.device) -> Any:
    """``inputs`` on ``device``: a tensor, or every tensor of a mapping; anything else as it is."""
    if isinstance(inputs, Mapping):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    return inputs.to(device) if isinstance(inputs, Tensor) else inputs


def split_batch(batch: Any, name: str, n: int) -> Batch:
    """``(inputs, targets)`` of one batch: a pair, or a mapping with the targets under :data:`TARGETS_KEY`."""
    if isinstance(batch, Mapping):
        if TARGETS_KEY not in batch:
            raise ArgumentError(f"{name} batch {n} is a mapping without {TARGETS_KEY!r}: a mapping batch holds the "
                                f"model's keyword inputs and the targets under {TARGETS_KEY!r} (or give "
                                "(inputs, targets) pairs)")
        x, y = {k: v for k, v in batch.items() if k != TARGETS_KEY}, batch[TARGETS_KEY]
    elif isinstance(batch, tuple | list) and len(batch) == 2:
        x, y = batch
    else:
        x = y = None
    if not (isinstance(y, Tensor) and y.dim() > 0):
        raise ArgumentError(f"{name} batch {n} is not an (inputs, targets) pair with a targets tensor")
    return x, y


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
            x, y = split_batch(batch, self.name, n)
            if self.device is not None:
                x, y = to_device(x, self.device), y.to(self.device)
            yield x, y

    def first(self, samples: int) -> list[Batch]:
        """The first ``samples`` samples (all if fewer), as batches (the last one cut to size)."""
        out, count = [], 0
        for x, y in self:
            take = min(len(y), samples - count)
            out.append((slice_samples(x, 0, take), y[:take]) if take < len(y) else (x, y))
            count += take
            if count >= samples:
                break
        return out

    def count(self) -> int:
        """Number of samples (iterates once)."""
        return sum(len(y) for _, y in self)


def _slices(inputs: Any, targets: Tensor, size: int) -> Iterator[Batch]:
    for start in range(0, len(targets), size):
        yield slice_samples(inputs, start, start + size), targets[start:start + size]


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
