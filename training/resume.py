"""Starting, replacing and resuming a run directory (:class:`~core.artifacts.rundir.RunDir`), and the
per-epoch training state a unit resumes from (``DIR/.resume/UNIT.safetensors``).

The run layout is the foundation's (:mod:`core.artifacts.rundir`); what a run's settings are and what a
unit's training state holds is training's, so both live here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from core.artifacts.atomic import atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from core.artifacts.lock import exclusive
from core.artifacts.ownership import check_replaceable_run, clear_run, is_empty
from core.artifacts.rundir import RunDir
from core.artifacts.serialize import dumps
from core.averaging import RunningAverage
from core.errors import UserError
from training.config import RUNTIME_FIELDS, RunConfig, read_saved
from training.train import TrainState

# Recorded for provenance; a run may be resumed under a newer toolkit or torch.
UNCHECKED_ON_RESUME = {"package_version", "torch_version"}


def check_resumable(run: RunDir, config: dict[str, Any]) -> None:
    """A :class:`UserError` unless ``run`` holds a run started with the settings ``config`` (read-only)."""
    if not run.config.is_file():
        raise UserError(f"cannot resume: {run.config} does not exist (start the run without --resume)")
    saved = read_saved(run.config)
    keys = (set(config) | set(saved)) - RUNTIME_FIELDS - UNCHECKED_ON_RESUME
    # a field added to RunConfig after the run started counts as its default there
    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                for f in fields(RunConfig)}
    changed = sorted(k for k in keys if saved.get(k, defaults.get(k)) != config.get(k))
    if changed:
        k = changed[0]
        name = f"--{k.replace('_', '-')}" if k in RunConfig.__dataclass_fields__ else k
        was = saved.get(k, defaults.get(k))
        raise UserError(f"cannot resume {run.root}: {name} was {was!r}, now {config.get(k)!r}; "
                        "resume with the original settings (and the program that started the run)")


@contextlib.contextmanager
def prepared(run: RunDir, config: dict[str, Any], resume: bool, overwrite: bool) -> Iterator[None]:
    """Create, replace or reopen the run directory according to --resume / --overwrite, and hold its
    lock (:mod:`core.artifacts.lock`) while the block runs: one process writes a run at a time."""
    if resume:
        check_resumable(run, config)
        with exclusive(run.root, "run directory"):
            remove_stale_temporaries(run.root)
            yield
        return
    if (run.root.exists() or run.root.is_symlink()) and not run.root.is_dir():
        raise UserError(f"--out {run.root} is not a directory; choose another --out")
    if run.root.exists() and not overwrite and not is_empty(run.root):
        raise UserError(f"run directory {run.root} already exists; pass --resume to continue it or "
                        "--overwrite to replace it")
    check_replaceable_run(run.root)  # --overwrite replaces only a run of ours (or an empty directory)
    run.root.mkdir(parents=True, exist_ok=True)
    with exclusive(run.root, "run directory"):
        check_replaceable_run(run.root)  # again under the lock: the directory may have changed meanwhile
        clear_run(run.root)
        atomic_write_text(run.config, json.dumps(config, indent=2, sort_keys=True) + "\n")
        yield


def save_train_state(path: Path, state: TrainState) -> None:
    tensors = {f"model.{k}": v for k, v in state.model.items()}
    tensors.update({f"momentum.{k}": v for k, v in state.momentum.items()})
    tensors.update({f"optimizer.{key}.{k}": v for key, entries in state.optimizer_state.items()
                    for k, v in entries.items()})
    tensors.update({f"swa.{k}": v for k, v in state.swa.state.items()})
    tensors["rng"] = state.rng
    meta = {"epoch": str(state.epoch), "swa_count": str(state.swa.count)}
    atomic_write_bytes(path, dumps(tensors, meta))


def _count(meta: dict[str, str], key: str) -> int | None:
    """The non-negative integer ``meta[key]``, or None if it is absent or not one."""
    text = meta.get(key)
    return int(text) if isinstance(text, str) and text.isdigit() and text.isascii() else None


def load_train_state(path: Path, device: Any, template: Mapping[str, Tensor] | None = None, *,
                     epochs: int | None = None) -> TrainState | None:
    """The saved state, or None if there is none (a corrupt or incomplete one is an error, never ignored).

    ``template`` (the model's ``state_dict``): the saved weights must have exactly its names, shapes and
    dtypes, the momentum and SWA entries those of its tensors, and the other optimizer entries
    (``optimizer.KEY.NAME``, kept on the CPU: the optimizer puts them where it keeps them) its shapes or
    scalars, or the state is refused. ``epochs`` (the unit's :attr:`Schedule.epochs`): a state past the end
    of the schedule is refused, since resuming it would count the unit as trained without training it.
    """
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # corrupt file
        raise UserError(f"resume state {path} is unreadable ({err}); delete it to restart that unit") from None

    def group(prefix: str) -> dict:
        return {k[len(prefix):]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)}

    epoch, swa_count = _count(meta, "epoch"), _count(meta, "swa_count")
    model, momentum, swa = group("model."), group("momentum."), group("swa.")
    optimizer_state: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            entry, _, name = key[len("optimizer."):].partition(".")
            optimizer_state.setdefault(entry, {})[name] = value
    problems = [f"no integer {key!r} in its metadata" for key, v in (("epoch", epoch), ("swa_count", swa_count))
                if v is None]
    if epochs is not None and epoch is not None and epoch > epochs:
        problems.append(f"epoch {epoch}, past the unit's {epochs} epochs")
    if not model:
        problems.append("no model weights")
    if "rng" not in tensors or tensors["rng"].dtype != torch.uint8:
        problems.append("no random-generator state")
    if swa_count and not swa:
        problems.append(f"no SWA average for its {swa_count} snapshots")
    if not set().union(momentum, swa, *optimizer_state.values()) <= set(model):
        problems.append("momentum, optimizer or SWA entries for weights the model does not have")
    if template is not None and not problems:
        problems += _template_problems(template, model, momentum, swa)
        problems += [f"optimizer {key} {name} is {tuple(v.shape)}, the model's is {tuple(template[name].shape)}"
                     for key, entries in optimizer_state.items() for name, v in entries.items()
                     if v.dim() and v.shape != template[name].shape][:1]
    if problems:
        raise UserError(f"resume state {path} is incomplete ({'; '.join(problems)}); delete it to restart that unit")
    return TrainState(epoch, model, momentum, RunningAverage(swa, swa_count), tensors["rng"], optimizer_state)


def _template_problems(template: Mapping[str, Tensor], model: dict, momentum: dict, swa: dict) -> list[str]:
    if set(model) != set(template):
        odd = sorted(set(model) ^ set(template))[0]
        return [f"its weights are not the run's model (e.g. {odd})"]
    for group, entries in (("weight", model), ("momentum", momentum), ("SWA", swa)):
        for key, value in entries.items():
            want = template[key]
            if value.shape != want.shape or value.dtype != want.dtype:
                return [f"{group} {key} is {tuple(value.shape)} {value.dtype}, the model's is "
                        f"{tuple(want.shape)} {want.dtype}"]
    return []
