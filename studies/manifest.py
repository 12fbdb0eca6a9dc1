"""What the study layer reads of a study directory besides its runs: the role of every method
(``study.json``, :mod:`training.study`) and where the analysis caches its measurements.

A light module (no trainer, no landscape tool), so the table readers and notebooks can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ANALYSIS = "analysis"  # DIR/analysis/KIND/RUN/cycle_KK.json: the cached measurements (studies.analyse)


@dataclass(frozen=True)
class MethodRoles:
    """The role (:data:`training.study.ROLES`, or ``other``) of every method of a study, in its order."""

    of: Mapping[str, str]  # method name -> role

    def __getitem__(self, role: str) -> str | None:
        """The method playing ``role`` (the first, if several do), or None: ``roles["swamp"]`` is SWAMP."""
        return next((method for method, r in self.of.items() if r == role), None)

    def methods(self, *roles: str) -> list[str]:
        """Every method playing one of ``roles``, in the study's order."""
        return [method for method, r in self.of.items() if r in roles]


def method_roles(manifest: Mapping[str, Any]) -> MethodRoles:
    """The roles of a manifest's methods: what every reader of a study selects methods by.

    A method's role is the ``role`` recorded in ``study.json``. A manifest written before methods
    recorded their role (or a method made without one) gets it derived here, and nowhere else, from
    the name :func:`training.study.grid` gives: ``imp``, ``swa``, ``particles`` and ``swamp-plus`` are
    their own role, a one-shot method is ``oneshot``, ``swamp-nN`` is ``swamp-n`` and any other name
    ``other``. If no method plays ``swamp`` (such an old manifest, or a study whose ``--methods`` left
    out the central arm), the first ``swamp-n`` method does: the grid lists its central arm first.
    """
    roles = {m["name"]: m.get("role") or _role_from_name(m) for m in manifest["methods"]}
    if "swamp" not in roles.values():
        first = next((method for method, role in roles.items() if role == "swamp-n"), None)
        if first is not None:
            roles[first] = "swamp"
    return MethodRoles(roles)


def _role_from_name(method: Mapping[str, Any]) -> str:
    name = method["name"]
    if method.get("oneshot"):
        return "oneshot"
    if name in ("imp", "swa", "particles", "swamp-plus"):
        return name
    return "swamp-n" if name.startswith("swamp-n") else "other"
