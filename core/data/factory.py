"""The user's own datasets: a factory ``--dataset PACKAGE.MODULE:CALLABLE``, or objects handed to the Python API.

The factory protocol: ``CALLABLE(**dataset_kwargs)`` (plus ``data_dir=`` the ``--data-dir``, when the
callable has a parameter of that name) returns ``(train_dataset, test_dataset)``, two map-style datasets
(``len`` and ``[index]``) whose samples are, as the first training sample shows, one of

* ``(input, label)`` with an integer class label (:mod:`core.data.loader` says which inputs and labels are
  accepted): a classification task;
* ``(input, target)`` with a tensor or NumPy array target (regression values, a sequence of tokens), batched
  as ``(inputs, targets)``;
* a mapping of named tensors (the Hugging Face convention, :mod:`core.data.records`), batched as a mapping:
  ``"labels"`` the targets, the other keys the model's keyword inputs.

For class labels the number of classes is the training dataset's ``num_classes`` attribute, else
``len(train_dataset.classes)`` (as torchvision datasets have); a dataset with neither is refused. For other
targets (``class_labels`` False, :class:`core.data.Dataset`) :func:`output_count` stands in: the same attributes
if set (e.g. a language model's vocabulary), else the number of elements of one sample's target (a
regression's output width). Inputs are used as they are: the factory normalises, the toolkit does not augment.

Importing the factory runs the user's code, so :func:`load_factory` does it only with ``trust_code``
(:mod:`core.imports`). Datasets handed over as objects (:func:`from_datasets`) are recorded as
``python:NAME``; nothing can load them again from that name.

Example:
    >>> import torch
    >>> x, y = torch.randn(64, 5), torch.arange(64) % 3
    >>> train = torch.utils.data.TensorDataset(x, y)
    >>> train.num_classes = 3
    >>> data = from_datasets(train, torch.utils.data.TensorDataset(x[:8], y[:8]), name="toy", device="cpu")
    >>> data.spec, data.num_classes, data.size("train")
    ({'name': 'python:toy'}, 3, 64)
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Mapping
from typing import Any

import torch

from core.data.loader import (
    SampleCollator,
    StreamingDataset,
    as_input,
    as_label,
    check_labels,
    first_sample,
    map_style_dataset,
)
from core.data.names import IN_MEMORY_PREFIX
from core.data.records import RecordDataset, has_class_labels, read_records
from core.data.tensors import TensorDataset
from core.errors import UserError
from core.imports import import_callable


def class_count(train: Any, name: str, given: int | None = None, fallback: int | None = None) -> int:
    """``given``, else the training dataset's ``num_classes``, else ``len(train.classes)``, else ``fallback``;
    refused if none."""
    count = given if given is not None else getattr(train, "num_classes", None)
    if count is None and getattr(train, "classes", None) is not None:
        count = len(train.classes)
    if count is None:
        count = fallback
    if count is None:
        raise UserError(f"dataset {name}: the training dataset has neither a num_classes nor a classes attribute; "
                        "set one of them (e.g. train_set.num_classes = 10)")
    if isinstance(count, bool) or not hasattr(count, "__index__") or operator.index(count) < 1:
        raise UserError(f"dataset {name}: the number of classes must be a positive integer, not {count!r}")
    return operator.index(count)


def output_count(train: Any, name: str, target: Any, given: int | None = None) -> int:
    """The ``num_classes`` handed to the model for targets that are not class labels: ``given`` or the training
    dataset's ``num_classes`` / ``classes`` (:func:`class_count`), else the number of elements of one sample's
    ``target`` (1 without one)."""
    return class_count(train, name, given, 1 if target is None else int(torch.as_tensor(target).numel()))


def _records(spec: dict[str, Any], train: Any, test: Any, *, name: str, device: torch.device | str, workers: int,
             num_classes: int | None) -> RecordDataset:
    splits = {split: read_records(dataset, split, name, workers) for split, dataset in (("train", train),
                                                                                       ("test", test))}
    if set(splits["test"]) != set(splits["train"]):
        raise UserError(f"dataset {name}: test samples have the keys {sorted(splits['test'])}, train samples "
                        f"{sorted(splits['train'])}; both splits need the same keys")
    classes = has_class_labels(splits["train"])
    if classes:
        count = class_count(train, name, num_classes)
        for split, record in splits.items():
            check_labels(name, split, record["labels"], count)
    else:
        labels = splits["train"].get("labels")
        count = output_count(train, name, None if labels is None else labels[0], num_classes)
    held = {k: v for k, v in spec.items() if k != "workers"}
    return RecordDataset(held, count, splits["train"], splits["test"], classes).to(device)


def _wrap(spec: dict[str, Any], train: Any, test: Any, *, name: str, device: torch.device | str, workers: int,
          num_classes: int | None) -> TensorDataset | StreamingDataset | RecordDataset:
    for split, dataset in (("train", train), ("test", test)):
        if isinstance(dataset, torch.utils.data.IterableDataset):
            raise UserError(f"dataset {name}: the {split} dataset is an IterableDataset; the toolkit needs map-style "
                            "datasets (len() and [index]) to draw each particle's order")
    first = first_sample(train, "train", name)
    if isinstance(first, Mapping):
        return _records(spec, train, test, name=name, device=device, workers=workers, num_classes=num_classes)
    target = first[1] if isinstance(first, tuple | list) and len(first) == 2 else None
    # anything but an (input, tensor target) pair takes the class-label path, which names what is wrong
    classes = target is None or as_label(target) is not None or as_input(target) is None
    count = class_count(train, name, num_classes) if classes else output_count(train, name, target, num_classes)
    return map_style_dataset(spec, train, test, num_classes=count, device=torch.device(device), workers=workers,
                             collator=SampleCollator(name, class_labels=classes))


def _takes_data_dir(fn: Any) -> bool:
    try:
        return "data_dir" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): pass only the kwargs
        return False


def load_factory(spec: dict[str, Any], device: torch.device | str = "cpu", *,
                 trust_code: bool = False) -> TensorDataset | StreamingDataset | RecordDataset:
    """The dataset a user factory builds (``spec``: ``{"name": "PACKAGE.MODULE:CALLABLE", "data_dir", "kwargs",
    "workers"}``), imported only with ``trust_code`` (else the refusal names ``--trust-code``).

    Raises:
        UserError: untrusted, not importable or callable, failing, not returning a pair of map-style datasets,
            samples that are not ``(input, label)``, labels out of range, no class count (one line each).
    """
    name = spec["name"]
    make = import_callable(name, "dataset", trust_code=trust_code, source="the checkpoint")
    kwargs = dict(spec.get("kwargs", {}))
    if "data_dir" in kwargs:
        raise UserError("--dataset-kwargs: data_dir comes from --data-dir; leave it out of --dataset-kwargs")
    if _takes_data_dir(make):
        kwargs["data_dir"] = spec["data_dir"]
    try:
        made = make(**kwargs)
    except UserError:
        raise
    except Exception as err:  # the user's code failed: report it as one line, naming the factory
        reason = (str(err).strip().splitlines() or [""])[0]
        raise UserError(f"dataset {name}({', '.join(kwargs)}) failed: {type(err).__name__}: {reason}") from None
    except SystemExit as err:  # no datasets, and no silent exit 0
        raise UserError(f"dataset {name}: its factory exited (SystemExit({err.code!r})) instead of returning "
                        "(train_dataset, test_dataset)") from None
    if not (isinstance(made, (tuple, list)) and len(made) == 2):
        raise UserError(f"dataset {name} returned a {type(made).__name__}, not a pair (train_dataset, test_dataset)")
    return _wrap(spec, *made, name=name, device=device, workers=spec.get("workers", 0), num_classes=None)


def from_datasets(train_set: Any, test_set: Any, *, name: str, device: torch.device | str, workers: int = 0,
                  num_classes: int | None = None) -> TensorDataset | StreamingDataset | RecordDataset:
    """The toolkit's dataset over two map-style datasets handed over in Python, held on ``device`` or streamed
    with ``workers`` worker processes as the command line's datasets are (:mod:`core.data.loader`).

    Args:
        train_set, test_set: map-style datasets of ``(input, label)``, ``(input, target)`` or mappings of named
            tensors (see the module docstring).
        name: what the run records, as ``python:NAME`` (a name already starting with ``python:`` is kept).
        device: where batches are delivered.
        workers: DataLoader worker processes, if the data streams.
        num_classes: the number of classes; None: ``train_set.num_classes`` or ``len(train_set.classes)`` (for
            targets that are not class labels: :func:`output_count`).

    Returns:
        The dataset; its ``spec`` is ``{"name": "python:NAME"}`` (plus ``workers`` if it streams).

    Raises:
        UserError: the same checks as for a factory's datasets (one line each).
    """
    label = name if name.startswith(IN_MEMORY_PREFIX) else IN_MEMORY_PREFIX + name
    return _wrap({"name": label}, train_set, test_set, name=label, device=device, workers=workers,
                 num_classes=num_classes)
