"""Checkpoint files (CONTRACT.md section 3): safetensors, self-describing, never unpickled.

A checkpoint holds every ``state_dict`` entry under its own key and, for each prunable weight
``NAME``, its 0/1 mask under ``mask.NAME``. The safetensors metadata (all strings) carries
``format``, ``kind``, ``cycle``, ``particle``, ``density`` and the JSON of ``model``, ``dataset`` and
``config``, so the landscape tools can rebuild model and data from the file alone.

A plain PyTorch ``.pt`` state_dict is accepted only through ``torch.load(weights_only=True)`` and only
with an explicit model and dataset description.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from training.atomic import atomic_write_bytes
from training.errors import UserError
from training.pruning import density as mask_density
from training.serialize import dumps

FORMAT = "swamp-checkpoint/1"
MASK_PREFIX = "mask."
KINDS = ("ticket", "particle", "average")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: model state, masks and the metadata needed to rebuild model and data."""

    path: str
    state: dict[str, Tensor]
    masks: dict[str, Tensor]
    kind: str
    model: dict[str, Any]
    dataset: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    cycle: int | None = None
    particle: int | None = None
    density: float = 1.0


def save_checkpoint(path: str | os.PathLike, state: dict[str, Tensor], masks: dict[str, Tensor], *, kind: str,
                    model: dict[str, Any], dataset: dict[str, Any], config: dict[str, Any],
                    cycle: int | None = None, particle: int | None = None) -> None:
    """Write a checkpoint atomically. Refuses (as a bug) a weight that is non-zero where masked."""
    for name, mask in masks.items():
        if bool((state[name][mask == 0] != 0).any()):
            raise RuntimeError(f"internal error: pruned entries of {name} are not zero")
    tensors = dict(state)
    tensors.update({MASK_PREFIX + k: m.to(torch.float32) for k, m in masks.items()})
    meta = {"format": FORMAT, "kind": kind, "density": repr(mask_density(masks)) if masks else "1.0",
            "model": json.dumps(model), "dataset": json.dumps(dataset), "config": json.dumps(config)}
    if cycle is not None:
        meta["cycle"] = str(cycle)
    if particle is not None:
        meta["particle"] = str(particle)
    atomic_write_bytes(path, dumps(tensors, meta))


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises several error types for corrupt files
        raise UserError(f"{path} is not a readable safetensors checkpoint ({str(err).splitlines()[0]})") from None
    return tensors, meta


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a toolkit checkpoint; raises :class:`UserError` on any bad file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {p} does not exist")
    if p.suffix in (".pt", ".pth"):
        raise UserError(f"{p} is a PyTorch file; pass --model and --dataset to read it as a plain state_dict")
    tensors, meta = _read_safetensors(p)
    if meta.get("format") != FORMAT:
        raise UserError(f"{p} is not a SWAMP checkpoint (metadata format is {meta.get('format')!r})")
    try:
        model, dataset = json.loads(meta["model"]), json.loads(meta["dataset"])
        config = json.loads(meta.get("config", "{}"))
        kind = meta["kind"]
        cycle = int(meta["cycle"]) if "cycle" in meta else None
        particle = int(meta["particle"]) if "particle" in meta else None
    except (KeyError, ValueError) as err:
        raise UserError(f"{p} has corrupt checkpoint metadata ({err})") from None
    masks = {k[len(MASK_PREFIX):]: v for k, v in tensors.items() if k.startswith(MASK_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(MASK_PREFIX)}
    for name, mask in masks.items():
        if name not in state or state[name].shape != mask.shape:
            raise UserError(f"{p}: mask.{name} has no weight of the same shape")
        if bool((state[name][mask == 0] != 0).any()):
            raise UserError(f"{p}: weight {name} is non-zero where its mask is 0")
    return Checkpoint(str(p), state, masks, kind, model, dataset, config, cycle, particle,
                      mask_density(masks) if masks else 1.0)


def load_plain_state_dict(path: str | os.PathLike, model: dict[str, Any], dataset: dict[str, Any]) -> Checkpoint:
    """A ``.pt`` state_dict, read with ``weights_only=True`` (refuses pickled code); dense masks."""
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {p} does not exist") from None
    except Exception as err:  # unpickling errors include the refusal of arbitrary globals
        raise UserError(f"{p} is not a plain PyTorch state_dict ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{p} does not hold a state_dict of tensors")
    return Checkpoint(str(p), state, {}, "plain", model, dataset)


def build_model(ckpt: Checkpoint, device: torch.device | str = "cpu") -> nn.Module:
    """The checkpoint's model with its weights loaded, in eval mode on ``device``."""
    from training.models import build_model as build

    net = build(ckpt.model)
    try:
        net.load_state_dict(ckpt.state)
    except RuntimeError as err:
        raise UserError(f"{ckpt.path} does not match model {ckpt.model['name']}: "
                        f"{str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}") from None
    return net.to(device).eval()
