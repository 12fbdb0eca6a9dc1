"""What the study layer reads of a study directory besides its runs: the role of every method
(``study.json``, :mod:`training.study`), where the analysis caches its measurements, and
:func:`read_json_object`, which every JSON file the study layer reads goes through.

A light module (no trainer, no landscape tool), so the table readers and notebooks can import it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import UserError

ANALYSIS = "analysis"  # DIR/analysis/KIND/RUN/cycle_KK.json: the cached measurements (studies.analyse)


def _type_problem(key: str, value: Any, kind: type) -> str | None:
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return None
    return f"its {key!r} is missing" if value is None else f"its {key!r} is {value!r}, not {kind.__name__}"


def read_json_object(path: Path, remedy: str, keys: Mapping[str, type] | None = None) -> dict:
    """The JSON object in ``path`` with ``keys`` of their types (an int is never a bool): what every reader of
    the study layer loads a file with. A damaged file is one :class:`UserError` line naming it, what is wrong
    and ``remedy``; an unreadable one (permissions, ...) keeps its OSError, which the CLIs report as one line."""
    try:
        obj = json.loads(path.read_text())
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, nested too deep
        problem = f"not JSON: {(str(err).splitlines() or [type(err).__name__])[0]}"
    else:
        problem = f"a JSON {type(obj).__name__}, not an object" if not isinstance(obj, dict) else \
            next((p for key, kind in (keys or {}).items() if (p := _type_problem(key, obj.get(key), kind))), None)
    if problem is not None:
        raise UserError(f"{path} is damaged ({problem}); {remedy}")
    return obj


def measurement_remedy(root: str | Path) -> str:
    return f"delete it and rerun python -m studies.analyse {root} to compute it again"


def read_measurement(root: str | Path, path: Path) -> dict[str, Any]:
    """A cached measurement ``ROOT/analysis/KIND/RUN/cycle_KK.json``: an object of that run and cycle."""
    obj = read_json_object(path, measurement_remedy(root), {"run": str, "cycle": int})
    if (obj["run"], f"cycle_{obj['cycle']:02d}") != (path.parent.name, path.stem):
        raise UserError(f"{path} is damaged (it holds run {obj['run']!r} cycle {obj['cycle']}); "
                        f"{measurement_remedy(root)}")
    return obj


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
    ``other``; in such an old manifest the first ``swamp-n`` method plays ``swamp`` (the grid listed
    its central arm first). Roles that a manifest records are never reassigned: a study whose
    ``--methods`` leave out the central arm has no ``swamp`` method, and the verdicts that need one are
    left out rather than given to another arm.
    """
    recorded = any(m.get("role") for m in manifest["methods"])
    roles = {m["name"]: m.get("role") or _role_from_name(m) for m in manifest["methods"]}
    if not recorded and "swamp" not in roles.values():
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
