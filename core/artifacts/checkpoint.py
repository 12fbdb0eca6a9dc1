"""Checkpoint files (docs/format.md section 3): safetensors, self-describing, never unpickled.

A checkpoint holds every ``state_dict`` entry under its own key and, for each prunable weight
``NAME``, its 0/1 mask under ``mask.NAME``. The safetensors metadata (all strings) carries
``format``, ``kind``, ``cycle``, ``particle``, ``density`` and the JSON of ``model``, ``dataset`` and
``config``, so the landscape tools can rebuild model and data from the file alone.

Every file is untrusted: :mod:`core.artifacts.schema` says what its metadata and tensors may be.
A plain PyTorch ``.pt`` state_dict is accepted only through ``torch.load(weights_only=True)`` and only
with an explicit model and dataset description.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.artifacts.atomic import atomic_write_bytes
from core.artifacts.schema import (
    brief_repr,
    check_model_spec,
    first_line,
    parse_metadata,
    printable,
)
from core.artifacts.serialize import dumps
from core.artifacts.structure import check_forward, check_structure, check_tensor_values
from core.errors import UserError
from core.imports import is_import_path, untrusted
from core.pruning import density as mask_density

FORMAT = "swamp-checkpoint/1"
MASK_PREFIX = "mask."
KINDS = ("ticket", "particle", "average")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: model state, masks and the metadata needed to rebuild model and data.

    ``trust_code``: whether it was loaded with the user's consent to import the ``PACKAGE.MODULE:CALLABLE``
    model or data set its metadata names (:func:`load_checkpoint`); :func:`build_model` and the landscape
    tools' data loading follow it unless told otherwise.
    """

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
    trust_code: bool = False


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
        raise UserError(f"{path} is not a readable safetensors checkpoint ({first_line(err)})") from None
    return tensors, meta


def check_input_file(p: Path) -> None:
    """Refuse (:class:`UserError`) an input that is not a readable regular file, saying what it is instead:
    missing, a directory, a broken link or a link loop, or a FIFO, socket or device (reading one could
    block forever)."""
    try:
        mode = p.stat().st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UserError(f"checkpoint {p} is a loop of symbolic links; pass the file itself") from None
        if p.is_symlink():
            raise UserError(f"checkpoint {p} is a broken symbolic link (to {os.readlink(p)})") from None
        if err.errno == errno.ENOENT:
            raise UserError(f"checkpoint {p} does not exist") from None
        raise UserError(f"checkpoint {p} cannot be read ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"checkpoint {p} is a directory, not a checkpoint file")
    if not stat.S_ISREG(mode):
        raise UserError(f"checkpoint {p} is not a regular file (a FIFO, socket or device); pass a checkpoint file")


def load_checkpoint(path: str | os.PathLike, *, trust_code: bool = False) -> Checkpoint:
    """Read and validate a toolkit checkpoint; raises :class:`UserError` on any bad file.

    Metadata, tensor shapes and values are checked as :mod:`core.artifacts.schema` describes,
    before anything is built from them: a file cannot make a tool allocate more than it holds.

    Args:
        path: the ``.safetensors`` file.
        trust_code: consent to import the ``PACKAGE.MODULE:CALLABLE`` model the metadata may name. Without
            it such a file's metadata and tensor values are still checked, but not its structure (that needs
            the model built): :func:`build_model` then refuses it, saying that ``--trust-code`` allows it.
            Nothing is imported unless it is given.

    Returns:
        The :class:`Checkpoint`, recording ``trust_code``.

    Example:
        >>> ckpt = load_checkpoint("runs/mnist1d-default/cycle_00/average.safetensors")  # doctest: +SKIP
        >>> net = build_model(ckpt)  # doctest: +SKIP
    """
    p = Path(path)
    check_input_file(p)
    if p.suffix in (".pt", ".pth"):
        raise UserError(f"{p} is a PyTorch file; pass --model and --dataset to read it as a plain state_dict")
    tensors, meta = _read_safetensors(p)
    if meta.get("format") != FORMAT:
        raise UserError(f"{p} is not a SWAMP checkpoint (metadata format is {brief_repr(meta.get('format'))})")
    fields = parse_metadata(str(p), meta, KINDS)
    masks = {k[len(MASK_PREFIX):]: v for k, v in tensors.items() if k.startswith(MASK_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(MASK_PREFIX)}
    check_structure(str(p), fields["model"], state, masks, trust_code=trust_code)
    check_tensor_values(str(p), state, masks)
    return Checkpoint(str(p), state, masks, fields["kind"], fields["model"], fields["dataset"], fields["config"],
                      fields["cycle"], fields["particle"], mask_density(masks) if masks else 1.0, trust_code)


def _load_failure(err: Exception) -> str:
    """The first line of torch.load's reason that is not advice to load the file with weights_only=False."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reasons = [line for line in lines if "weights_only" not in line and not line.startswith("Weights only load")]
    return reasons[0] if reasons else type(err).__name__


def load_plain_state_dict(path: str | os.PathLike, model: dict[str, Any], dataset: dict[str, Any], *,
                          trust_code: bool = False) -> Checkpoint:
    """A ``.pt`` state_dict, read with ``weights_only=True`` (refuses pickled code); dense masks.

    Its tensors must be finite and no larger than the data stored for them (no broadcast views);
    :func:`build_model` checks them against ``model``. ``trust_code`` is recorded as in
    :func:`load_checkpoint`: the caller's consent to import a user-code ``model`` or ``dataset`` (the
    command-line tools give it when the user named them with ``--model`` / ``--dataset``).
    """
    p = Path(path)
    accepted = ("the toolkit reads a plain state_dict of tensors saved with torch.save, or a SWAMP safetensors "
                "checkpoint")
    check_input_file(p)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors include the refusal of arbitrary globals
        raise UserError(f"{p} is not a plain PyTorch state_dict ({_load_failure(err)}); {accepted}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise UserError(f"{p} does not hold a state_dict of tensors; {accepted}")
    for key, t in state.items():
        if t.layout != torch.strided or t.numel() * t.element_size() > t.untyped_storage().nbytes():
            raise UserError(f"{p}: tensor {printable(key)} is sparse or a view larger than the data stored for it")
    check_tensor_values(str(p), state, {})
    return Checkpoint(str(p), state, {}, "plain", model, dataset, trust_code=trust_code)


def build_model(ckpt: Checkpoint, device: torch.device | str = "cpu", *, trust_code: bool | None = None
                ) -> nn.Module:
    """The checkpoint's model with its weights loaded, in eval mode on ``device``.

    The model's shapes are first built on the meta device and compared with the stored tensors, so
    only a model of the file's size is ever materialised; then it must map two inputs of the data set's
    shape to class scores (:func:`core.artifacts.structure.check_forward`).

    Args:
        ckpt: a loaded checkpoint.
        device: where the model goes.
        trust_code: consent to import a ``PACKAGE.MODULE:CALLABLE`` model; None: the trust ``ckpt`` was
            loaded with. Untrusted user code is refused with one line naming the checkpoint and
            ``--trust-code``.

    Example:
        >>> net = build_model(load_checkpoint("runs/x/cycle_00/average.safetensors"))  # doctest: +SKIP
    """
    from core.models import build_model as build

    trust = ckpt.trust_code if trust_code is None else trust_code
    source = f"checkpoint {ckpt.path}"
    spec = check_model_spec(ckpt.path, ckpt.model)
    if is_import_path(spec["name"]) and not trust:
        raise untrusted(spec["name"], "model", source)
    check_structure(ckpt.path, spec, ckpt.state, ckpt.masks, trust_code=trust)
    net = build(spec, trust_code=trust, source=source)
    net.load_state_dict(ckpt.state)
    check_forward(ckpt.path, net, spec, ckpt.dataset)
    return net.to(device).eval()
