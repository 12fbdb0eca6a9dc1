"""The run directory that :func:`training.integrations.cycles.swamp_cycles` writes with ``out=``: the runner's
layout and checkpoint format (docs/format.md sections 2 and 3), written as the cycles finish, so that the
landscape tools (``python -m landscape.barrier A B``, ``hessian``, ``subspace``) read it as they read a run of
``python -m training.swamp``.

What the orchestrator knows, it writes: ``ticket.safetensors`` (the model it was given, all-ones masks),
``cycle_KK/particle_PP.safetensors`` (each trained particle under the cycle's masks), ``cycle_KK/average.safetensors``
(the cycle's solution), ``cycle_KK/metrics.json`` and ``results.csv`` (density, sparsity, wall time, and the
accuracies and losses only where the caller's ``evaluate`` gives them; never an ensemble: the orchestrator
sees no predictions). ``config.json`` records the orchestrator's settings, ``model_spec`` and ``dataset_spec``.

A checkpoint names its model as ``{"name", "kwargs"}`` (:func:`core.models.model_spec`): a zoo model,
``torchvision:NAME``, ``timm:NAME`` or the user's ``PACKAGE.MODULE:CALLABLE`` factory (the landscape tools then
need ``--trust-code``). Its data set defaults to :data:`IN_MEMORY_DATA`, which nothing can load again (the tools
then need ``--dataset NAME``); any spec of docs/datasets.md may be given instead.

Files follow the toolkit's rules (docs/reliability.md): each is written atomically, the directory's lock is
held while the cycles run (:mod:`core.artifacts.lock`), and only a new or empty directory is written, or, with
``overwrite=True``, a run directory of the toolkit (:mod:`core.artifacts.ownership`); any other directory is
refused before anything is trained, and nothing in it is deleted.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core import __version__
from core.artifacts.checkpoint import KINDS, save_checkpoint
from core.artifacts.ownership import check_out_text, is_empty, is_run_config
from core.artifacts.rundir import RunDir, write_metrics, write_results
from core.artifacts.schema import parse_metadata
from core.artifacts.structure import check_structure
from core.errors import UserError
from training.resume import prepared

IN_MEMORY_DATA = {"name": "python:swamp_cycles"}
"""The data set a checkpoint of :func:`swamp_cycles` records unless told: data it never saw, loadable by no name."""

ORCHESTRATOR = "training.integrations.cycles.swamp_cycles"


class NullRecord:
    """What :func:`run_record` hands over without ``out``: it writes nothing."""

    def ticket(self, state: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
        pass

    def particle(self, cycle: int, particle: int, state: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
        pass

    def cycle(self, metrics: dict[str, Any], state: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
        pass


@dataclass
class RunRecord:
    """Writes the ticket, the particles and each finished cycle into ``run`` (see the module docstring)."""

    run: RunDir
    model: dict[str, Any]
    dataset: dict[str, Any]
    config: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def _save(self, path: Path, state: Mapping[str, Tensor], masks: Mapping[str, Tensor], kind: str,
              cycle: int | None = None, particle: int | None = None) -> None:
        save_checkpoint(path, dict(state), dict(masks), kind=kind, model=self.model, dataset=self.dataset,
                        config=self.config, cycle=cycle, particle=particle)

    def ticket(self, state: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
        """The dense starting weights, with all-ones masks of the prunable weights (as the runner's ticket)."""
        self._save(self.run.ticket, state, {k: torch.ones_like(m) for k, m in masks.items()}, "ticket")

    def particle(self, cycle: int, particle: int, state: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
        """A trained particle; refuses (ValueError) one whose pruned weights ``train`` did not keep at 0."""
        for name, mask in masks.items():
            if bool((state[name][mask.to(state[name].device) == 0] != 0).any()):
                raise ValueError(f"train returned particle {particle} of cycle {cycle} with non-zero pruned weights in "
                                 f"{name}; it must keep them at 0 (training.mask_optimizer does)")
        self._save(self.run.particle(cycle, particle), state, masks, "particle", cycle, particle)

    def cycle(self, metrics: dict[str, Any], state: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
        """The cycle's solution, its ``metrics.json`` and the ``results.csv`` of the cycles so far."""
        k = metrics["cycle"]
        self._save(self.run.average(k), state, masks, "average", k)
        write_metrics(self.run, k, metrics)
        self.metrics.append(metrics)
        write_results(self.run, self.metrics)


def checked_specs(state: Mapping[str, Tensor], masks: Mapping[str, Tensor], model_spec: Mapping[str, Any] | None,
                  dataset_spec: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``model_spec`` and ``dataset_spec`` (default :data:`IN_MEMORY_DATA`) as a checkpoint may record them
    (:mod:`core.artifacts.schema`), the model's tensors and masks checked against ``model_spec`` (a
    ``PACKAGE.MODULE:CALLABLE`` factory is imported for it: the caller named it). Raises ValueError without a
    ``model_spec``, :class:`UserError` for one the format refuses or that describes another model."""
    if model_spec is None:
        raise ValueError("out= needs model_spec, the {'name', 'kwargs'} that rebuilds the model (e.g. "
                         "core.models.model_spec('mlp', 10, {'hidden': 16}), or {'name': 'PACKAGE.MODULE:CALLABLE', "
                         "'kwargs': {'num_classes': C}} for your own factory), so that the checkpoints describe it")
    where = "swamp_cycles(model_spec=..., dataset_spec=...)"
    dataset = dict(dataset_spec) if dataset_spec is not None else dict(IN_MEMORY_DATA)
    fields = parse_metadata(where, {"kind": KINDS[0], "model": json.dumps(dict(model_spec)),
                                    "dataset": json.dumps(dataset)}, KINDS)
    check_structure(where, fields["model"], dict(state), dict(masks), trust_code=True)
    return fields["model"], fields["dataset"]


def _check_out(root: Path, overwrite: bool) -> None:
    """Refuse, before anything is trained, an ``out`` that is not a directory, or that holds anything but a
    run of the toolkit, or a run without ``overwrite``."""
    if (root.exists() or root.is_symlink()) and not root.is_dir():
        raise UserError(f"out {root} exists and is not a directory; choose another out")
    if not root.exists() or is_empty(root):
        return
    if not is_run_config(root / "config.json"):
        raise UserError(f"out {root} is a directory that no run of the toolkit wrote (it has no run's config.json); "
                        "swamp_cycles writes only into a new or empty directory, or over a run with overwrite=True: "
                        "choose another out")
    if not overwrite:
        raise UserError(f"run directory {root} already exists; pass overwrite=True to replace it, or choose another "
                        "out")


@contextlib.contextmanager
def run_record(out: str | Path | None, state: Mapping[str, Tensor], masks: Mapping[str, Tensor], *,
               model_spec: Mapping[str, Any] | None, dataset_spec: Mapping[str, Any] | None,
               settings: Mapping[str, Any], overwrite: bool = False) -> Iterator[RunRecord | NullRecord]:
    """The :class:`RunRecord` of the run directory ``out`` (created, or replaced with ``overwrite``, holding its
    lock while the block runs), or a :class:`NullRecord` if ``out`` is None.

    Args:
        out: the run directory, or None.
        state, masks: the model's ticket and first masks (checked against ``model_spec``).
        model_spec, dataset_spec: what the checkpoints record (:func:`checked_specs`).
        settings: the orchestrator's settings, stored in ``config.json`` and every checkpoint's ``config``.
        overwrite: replace a run directory of the toolkit.

    Example:
        >>> with run_record(None, {}, {}, model_spec=None, dataset_spec=None, settings={}) as record:
        ...     record.ticket({}, {})
        >>> type(record).__name__
        'NullRecord'
    """
    if out is None:
        yield NullRecord()
        return
    root = check_out_text(out, "out")
    model, dataset = checked_specs(state, masks, model_spec, dataset_spec)
    _check_out(root, overwrite)
    config = {**settings, "orchestrator": ORCHESTRATOR, "package_version": __version__,
              "torch_version": torch.__version__, "model_spec": model, "dataset_spec": dataset}
    run = RunDir(root)
    with prepared(run, config, resume=False, overwrite=overwrite):
        record = RunRecord(run, model, dataset, dict(settings))
        record.ticket(state, masks)
        yield record
