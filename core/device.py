"""Device selection for ``--device auto|cpu|cuda|cuda:N``."""

from __future__ import annotations

import torch

from core.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the first GPU when there is one, else the CPU; an absent GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asked for a GPU, but torch sees none; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) present")
    elif device.type != "cpu":
        raise UserError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device
