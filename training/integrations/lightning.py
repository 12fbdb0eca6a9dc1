"""SWAMP with PyTorch Lightning: a ``Callback`` for one particle's ``Trainer.fit``, and the cycles around it.

:class:`SWAMPCallback` (built when first named, so that this module imports without Lightning) prunes the
``LightningModule`` to the cycle's masks at fit start, holds pruned weights at exactly 0 (gradients masked as
autograd computes them, before clipping and the optimizer; weights masked after every training batch, i.e.
after the optimizer step), adds the end-of-epoch weights to an SWA average over the last ``fraction`` of
``max_epochs`` (Izmailov et al. 2018) and, at fit end, loads that average with BatchNorm recomputed on the
training batches. :func:`swamp_lightning` runs SWAMP (Choi et al. 2024) with it: each particle one
``Trainer(**trainer_kwargs).fit`` from the ticket under the cycle's mask, seeded with ``seed_everything``.
Requires ``pip install swamp-toolkit[lightning]`` (``lightning>=2.2``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from training.integrations.cycles import Cycle, ParticleDuties, require, swamp_cycles

EXTRA = "lightning"
_CLASSES: dict[str, type] = {}


def _callback_class() -> type:
    """The Lightning callback class, defined on first use (Lightning imported then)."""
    if "SWAMPCallback" in _CLASSES:
        return _CLASSES["SWAMPCallback"]
    pl = require("lightning.pytorch", EXTRA)

    class SWAMPCallback(pl.Callback):
        """One SWAMP particle inside ``Trainer.fit`` (see the module); ``bn_data=None`` recomputes BatchNorm on
        ``trainer.train_dataloader``."""

        def __init__(self, masks: Mapping[str, Tensor], fraction: float = 0.25, bn_data: Iterable[Any] | None = None):
            self.duties, self.bn_data = ParticleDuties(masks, fraction), bn_data

        @property
        def masks(self) -> dict[str, Tensor]:
            return self.duties.masks

        def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
            if trainer.max_epochs is None or trainer.max_epochs < 1:
                raise ValueError("SWAMPCallback averages over epochs: give the Trainer max_epochs >= 1")
            self.duties.start(pl_module, trainer.max_epochs)

        def on_train_batch_end(self, trainer: Any, pl_module: nn.Module, *args: Any) -> None:
            self.duties.after_step(pl_module)

        def on_train_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
            self.duties.end_epoch(pl_module)

        def on_fit_end(self, trainer: Any, pl_module: nn.Module) -> None:
            bn_data = self.bn_data if self.bn_data is not None else trainer.train_dataloader
            self.duties.finish(pl_module, bn_data, device=pl_module.device)

    SWAMPCallback.__qualname__ = "SWAMPCallback"  # pickled by name (spawned workers), found through __getattr__
    _CLASSES["SWAMPCallback"] = SWAMPCallback
    return SWAMPCallback


def __getattr__(name: str) -> Any:
    if name == "SWAMPCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def swamp_lightning(module: nn.Module, train_dataloaders: Any, *, trainer_kwargs: Mapping[str, Any] | None = None,
                    cycles: int = 3, particles: int = 3, ratio: float = 0.2, fraction: float = 0.25,
                    masks: Mapping[str, Tensor] | None = None, bn_data: Iterable[Any] | None = None,
                    seed: int = 0) -> list[Cycle]:
    """SWAMP cycles with a ``LightningModule``: every particle is a fresh ``Trainer(**trainer_kwargs)`` whose
    ``fit`` runs with a :class:`SWAMPCallback` (added to any ``callbacks`` given) on a deep copy of ``module``
    rewound to its weights, after ``lightning.seed_everything(particle seed)``.

    Args:
        module: the ``LightningModule`` at its ticket (not modified); its ``forward`` must take a batch's inputs
            (:mod:`core.batch`) for BatchNorm recomputation and pruning by magnitude reads its parameters.
        train_dataloaders: what ``Trainer.fit`` trains on.
        trainer_kwargs: the ``Trainer``'s arguments, ``max_epochs`` included (default: 1 epoch, CPU, quiet).
        cycles, particles, ratio, masks, seed: as :func:`training.integrations.cycles.swamp_cycles`.
        fraction: the share of each particle's epochs SWA averages.
        bn_data: batches for BatchNorm recomputation (default ``train_dataloaders``).

    Returns:
        One :class:`training.integrations.cycles.Cycle` per cycle.

    Example (needs Lightning; examples/lightning_swamp.py runs it on MNIST-1D):
        >>> cycles = swamp_lightning(MyModule(), loader, trainer_kwargs={"max_epochs": 4},  # doctest: +SKIP
        ...                          cycles=3, particles=3, fraction=0.5)
        >>> [round(c.density, 2) for c in cycles]  # doctest: +SKIP
        [1.0, 0.8, 0.64]
        >>> MyModule().load_state_dict(cycles[-1].state)  # the last cycle's average  # doctest: +SKIP
    """
    pl = require("lightning.pytorch", EXTRA)
    callback_class = _callback_class()
    settings = {"max_epochs": 1, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                "enable_progress_bar": False, "enable_model_summary": False, **(trainer_kwargs or {})}
    extra_callbacks = list(settings.pop("callbacks", None) or [])
    bn_batches = bn_data if bn_data is not None else train_dataloaders

    def train(particle: nn.Module, particle_masks: dict[str, Tensor], particle_seed: int) -> nn.Module:
        pl.seed_everything(particle_seed, verbose=False)
        callback = callback_class(particle_masks, fraction, bn_batches)
        pl.Trainer(callbacks=[*extra_callbacks, callback], **settings).fit(particle, train_dataloaders)
        return particle

    return swamp_cycles(module, train, cycles=cycles, particles=particles, ratio=ratio, masks=masks,
                        bn_data=bn_batches, seed=seed)
