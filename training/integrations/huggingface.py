"""SWAMP with the Hugging Face ``Trainer``: a ``TrainerCallback`` for one particle's ``train()``, and the cycles.

:class:`SWAMPTrainerCallback` (built when first named, so that this module imports without ``transformers``)
prunes the model to the cycle's masks at ``on_train_begin``, holds pruned weights at exactly 0 (gradients
masked as autograd computes them, so gradient clipping and the optimizer see the sparse network's gradient;
weights masked at ``on_optimizer_step``), adds the end-of-epoch weights to an SWA average over the last
``fraction`` of ``num_train_epochs`` (Izmailov et al. 2018) and at ``on_train_end`` loads that average, with
BatchNorm (if any) recomputed on the training batches. Batches are the ``Trainer``'s dicts (``labels`` is
the target, every other key a keyword input of the model, :mod:`core.batch`). :func:`swamp_huggingface` runs
SWAMP (Choi et al. 2024) with it, one ``Trainer(...).train()`` per particle with ``args.seed`` set to the
particle's seed. Requires ``pip install swamp-toolkit[huggingface]`` (``transformers>=4.40`` with
``accelerate``, which its ``Trainer`` needs).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from training.integrations.cycles import Cycle, ParticleDuties, require, swamp_cycles

EXTRA = "huggingface"
_CLASSES: dict[str, type] = {}


def epochs_of(args: Any) -> int:
    """The whole epochs a ``TrainingArguments`` trains for (SWA's window is counted in them)."""
    if getattr(args, "max_steps", -1) > 0 or args.num_train_epochs < 1:
        raise ValueError("SWAMPTrainerCallback averages over epochs: give TrainingArguments num_train_epochs >= 1 "
                         "and no max_steps")
    return math.ceil(args.num_train_epochs)


def _callback_class() -> type:
    """The ``TrainerCallback`` class, defined on first use (``transformers`` imported then)."""
    if "SWAMPTrainerCallback" in _CLASSES:
        return _CLASSES["SWAMPTrainerCallback"]
    transformers = require("transformers", EXTRA)

    class SWAMPTrainerCallback(transformers.TrainerCallback):
        """One SWAMP particle inside ``Trainer.train`` (see the module); ``bn_data=None`` recomputes BatchNorm
        on the ``Trainer``'s training dataloader."""

        def __init__(self, masks: Mapping[str, Tensor], fraction: float = 0.25, bn_data: Iterable[Any] | None = None):
            self.duties, self.bn_data = ParticleDuties(masks, fraction), bn_data

        @property
        def masks(self) -> dict[str, Tensor]:
            return self.duties.masks

        def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                           **kwargs: Any) -> None:
            self.duties.start(model, epochs_of(args))

        def on_optimizer_step(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                              **kwargs: Any) -> None:
            self.duties.after_step(model)

        def on_epoch_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                         **kwargs: Any) -> None:
            self.duties.end_epoch(model)

        def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                         train_dataloader: Iterable[Any] | None = None, **kwargs: Any) -> None:
            bn_data = self.bn_data if self.bn_data is not None else train_dataloader
            self.duties.finish(model, bn_data, device=next(model.parameters()).device)

    SWAMPTrainerCallback.__qualname__ = "SWAMPTrainerCallback"  # pickled by name, found through __getattr__
    _CLASSES["SWAMPTrainerCallback"] = SWAMPTrainerCallback
    return SWAMPTrainerCallback


def __getattr__(name: str) -> Any:
    if name == "SWAMPTrainerCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def swamp_huggingface(model: nn.Module, args: Any, train_dataset: Any, *, cycles: int = 3, particles: int = 3,
                      ratio: float = 0.2, fraction: float = 0.25, masks: Mapping[str, Tensor] | None = None,
                      bn_data: Iterable[Any] | None = None, seed: int = 0, **trainer_kwargs: Any) -> list[Cycle]:
    """SWAMP cycles with a Hugging Face model: every particle is ``Trainer(model=copy, args=args with the
    particle's seed, train_dataset=..., callbacks=[SWAMPTrainerCallback], **trainer_kwargs).train()`` on a deep
    copy of ``model`` rewound to its weights.

    Args:
        model: a ``PreTrainedModel`` (or any module the ``Trainer`` accepts) at its ticket (not modified).
        args: ``transformers.TrainingArguments`` with whole ``num_train_epochs`` (``seed`` is replaced per particle).
        train_dataset: the ``Trainer``'s training set (items are dicts with ``labels``).
        cycles, particles, ratio, masks, seed: as :func:`training.integrations.cycles.swamp_cycles`; the default
            masks are :func:`core.pruning.dense_masks` (linear and attention weights, embeddings kept dense).
        fraction: the share of each particle's epochs SWA averages.
        bn_data: batches (dicts) for BatchNorm recomputation of particles and average (None: the particles use
            their training dataloader and the average is not recomputed; transformers rarely have BatchNorm).
        trainer_kwargs: more ``Trainer`` arguments (``data_collator``, ``callbacks``, ...).

    Returns:
        One :class:`training.integrations.cycles.Cycle` per cycle.

    Example (needs transformers; examples/huggingface_swamp.py runs it on a tiny config-built BERT):
        >>> args = TrainingArguments(output_dir="out", num_train_epochs=4, report_to=[])  # doctest: +SKIP
        >>> cycles = swamp_huggingface(model, args, train_dataset, cycles=3, particles=3)  # doctest: +SKIP
        >>> [round(c.density, 2) for c in cycles]  # doctest: +SKIP
        [1.0, 0.8, 0.64]
    """
    transformers = require("transformers", EXTRA)
    callback_class = _callback_class()
    epochs_of(args)
    extra_callbacks = list(trainer_kwargs.pop("callbacks", None) or [])

    def train(particle: nn.Module, particle_masks: dict[str, Tensor], particle_seed: int) -> nn.Module:
        callback = callback_class(particle_masks, fraction, bn_data)
        trainer = transformers.Trainer(model=particle, args=dataclasses.replace(args, seed=particle_seed),
                                       train_dataset=train_dataset, callbacks=[*extra_callbacks, callback],
                                       **trainer_kwargs)
        trainer.train()
        return particle

    return swamp_cycles(model, train, cycles=cycles, particles=particles, ratio=ratio, masks=masks, bn_data=bn_data,
                        seed=seed)
