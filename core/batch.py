"""Where a batch's inputs and targets are: one rule for any batch structure.

A batch is one of
* a tensor: the model's input, no targets;
* a tuple or list ``(inputs, targets, ...)``: its first element is the input (a tensor, or a mapping of
  named tensors), its second the targets;
* a mapping (the Hugging Face convention): the targets under ``"labels"`` (:data:`TARGETS_KEY`), the
  model's keyword inputs under every other key.

Inputs that are a mapping are passed as keyword arguments, ``model(**inputs)``, anything else as
``model(inputs)``. This is the rule of the landscape library (:mod:`landscape.batches`) as well.

Example:
    >>> x, y = torch.ones(4, 3), torch.zeros(4)
    >>> [type(batch_parts(b)[0]).__name__ for b in (x, (x, y), {"input_ids": x, "labels": y})]
    ['Tensor', 'Tensor', 'dict']
    >>> batch_parts({"input_ids": x, "labels": y})[1] is y
    True
    >>> batch_length({"input_ids": x, "labels": y}), batch_length(x[:2])
    (4, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

TARGETS_KEY = "labels"


def batch_parts(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of ``batch`` by the module's rule; targets None for a bare tensor or a mapping
    without ``"labels"``. Anything else (a number, a string) is refused with a ``TypeError``."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if k != TARGETS_KEY}, batch.get(TARGETS_KEY)
    if isinstance(batch, tuple | list) and batch:
        return batch[0], batch[1] if len(batch) > 1 else None
    raise TypeError(f"a batch must be a tensor, an (inputs, targets) tuple or a mapping of tensors, got "
                    f"{type(batch).__name__}")


def to_device(value: Any, device: torch.device | str | None) -> Any:
    """``value`` on ``device`` (None: where it is): a tensor, or every tensor of a mapping."""
    if device is None:
        return value
    if isinstance(value, Mapping):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in value.items()}
    return value.to(device) if isinstance(value, Tensor) else value


def apply_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping of named inputs (a Hugging Face batch), ``model(inputs)`` otherwise."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def batch_length(batch: Any) -> int:
    """How many samples ``batch`` holds: the first dimension of its targets, else of its first input tensor
    (the weight of the batch in a mean over samples)."""
    inputs, targets = batch_parts(batch)
    if isinstance(targets, Tensor):
        return len(targets)
    tensors = [v for v in inputs.values() if isinstance(v, Tensor)] if isinstance(inputs, Mapping) else [inputs]
    if not tensors or not isinstance(tensors[0], Tensor):
        raise TypeError("a batch without targets needs a tensor input to count its samples")
    return len(tensors[0])


def logits_of(outputs: Any) -> Any:
    """The class logits among a model's outputs: their ``logits`` entry when they are a mapping (a Hugging
    Face ``ModelOutput``) that has one, else the outputs themselves."""
    return outputs["logits"] if isinstance(outputs, Mapping) and "logits" in outputs else outputs
