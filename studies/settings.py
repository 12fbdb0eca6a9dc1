"""Integer settings of the study layer's measurement steps (``studies.analyse``, ``studies.controls``): a
dataclass field with its least allowed value, and the check that names the flag of the first bad one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field, fields
from typing import Any

from core.errors import UserError


def count_setting(default: int, least: int) -> Any:
    """A dataclass field: an integer setting of at least ``least``."""
    return field(default=default, metadata={"least": least})


def check_counts(settings: Any, flag: Callable[[str], str]) -> None:
    """Raise :class:`UserError` naming ``flag(name)`` of the first :func:`count_setting` field of ``settings``
    that is not an integer of at least its least value."""
    for f in fields(settings):
        value = getattr(settings, f.name)
        if "least" in f.metadata and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < f.metadata["least"]):
            raise UserError(f"{flag(f.name)} must be an integer >= {f.metadata['least']}, not {value!r}")
