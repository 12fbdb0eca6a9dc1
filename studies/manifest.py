"""What the study layer reads of a study directory besides its runs: the role of every method
(``study.json``, :mod:`studies.grid.cli`), where the analysis caches its measurements, and
:func:`read_json_object`, which every JSON file the study layer reads goes through.

A light module (no trainer, no landscape tool), so the table readers and notebooks can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.artifacts.jsonfile import BadJSON, brief_repr, read_json
from core.errors import UserError

ANALYSIS = "analysis"  # DIR/analysis/KIND/RUN/cycle_KK.json: the cached measurements (studies.analyse)


def _type_problem(key: str, value: Any, kind: type) -> str | None:
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return None
    return f"its {key!r} is missing" if value is None else f"its {key!r} is {brief_repr(value)}, not {kind.__name__}"


def read_json_object(path: Path, remedy: str, keys: Mapping[str, type] | None = None) -> dict:
    """The JSON object in ``path`` with ``keys`` of their types (an int is never a bool): what every reader of
    the study layer loads a file with. A damaged file is one :class:`UserError` line naming it, what is wrong
    and ``remedy``; an unreadable one (permissions, ...) keeps its OSError, which the CLIs report as one line."""
    try:
        obj = read_json(path)
    except BadJSON as err:  # not JSON, not UTF-8, nested too deep, too large, not a regular file
        problem = str(err)
    else:
        problem = f"a JSON {type(obj).__name__}, not an object" if not isinstance(obj, dict) else None
    if problem is not None:
        raise UserError(f"{path} is damaged ({problem}); {remedy}")
    check_fields(path, obj, keys or {}, remedy)
    return obj


def check_fields(path: Path, obj: Mapping[str, Any], keys: Mapping[str, type], remedy: str) -> None:
    """Refuse (one :class:`UserError` line naming ``path`` and ``remedy``) an object ``obj`` read from
    ``path`` that lacks one of ``keys`` or holds it with another type (an int is never a bool)."""
    problem = next((p for key, kind in keys.items() if (p := _type_problem(key, obj.get(key), kind))), None)
    if problem is not None:
        raise UserError(f"{path} is damaged ({problem}); {remedy}")


def measurement_remedy(root: str | Path) -> str:
    return f"delete it and rerun python -m studies.analyse {root} to compute it again"


def read_measurement(root: str | Path, path: Path) -> dict[str, Any]:
    """A cached measurement ``ROOT/analysis/KIND/RUN/cycle_KK.json``: an object of that run and cycle."""
    obj = read_json_object(path, measurement_remedy(root), {"run": str, "cycle": int})
    if (obj["run"], f"cycle_{obj['cycle']:02d}") != (path.parent.name, path.stem):
        raise UserError(f"{path} is damaged (it holds run {obj['run']!r} cycle {obj['cycle']}); "
                        f"{measurement_remedy(root)}")
    return obj


# What the study layer reads of study.json's methods and runs (studies.grid.plan.Method, study_manifest.SubRun)
METHOD_FIELDS = {"name": str, "particles": int}
METHOD_OPTIONAL = {"swa": bool, "particles_from_cycle": int, "prune_method": str, "oneshot": bool, "role": str}
RUN_FIELDS = {"name": str, "method": str, "seed": int, "path": str}


def read_study(root: str | Path) -> dict[str, Any]:
    """The study's ``study.json`` (:func:`studies.grid.manifest.read_manifest`) with what every reader of
    the study layer relies on checked: ``seeds`` a non-empty list of integers; ``methods`` a list of
    objects with a unique ``name`` and ``particles`` (at least 1), their other fields of
    :class:`studies.grid.plan.Method`'s types; ``runs`` objects with ``name``, ``method`` (one of the
    methods), ``seed`` and ``path``. Anything else is one :class:`UserError` line naming the file."""
    from studies.grid.manifest import MANIFEST, read_manifest

    manifest, path = read_manifest(root), Path(root) / MANIFEST
    remedy = "restore it, or start the study again in another --out"
    seeds, methods = manifest.get("seeds"), manifest.get("methods")
    if not (isinstance(seeds, list) and seeds and all(type(s) is int for s in seeds)):
        raise UserError(f"{path} is damaged (its 'seeds' is {brief_repr(seeds)}, not a list of integers); {remedy}")
    if not (isinstance(methods, list) and all(isinstance(m, dict) for m in methods)):
        raise UserError(f"{path} is damaged (its 'methods' is {brief_repr(methods)}, not a list of objects); "
                        f"{remedy}")
    for method in methods:
        check_fields(path, method, {**METHOD_FIELDS, **{k: t for k, t in METHOD_OPTIONAL.items()
                                                        if method.get(k) is not None}}, remedy)
        if method["particles"] < 1:
            raise UserError(f"{path} is damaged (method {method['name']!r} has {method['particles']} particles); "
                            f"{remedy}")
    names = [m["name"] for m in methods]
    if len(set(names)) < len(names):
        raise UserError(f"{path} is damaged (two methods are named {next(n for n in names if names.count(n) > 1)!r});"
                        f" {remedy}")
    for run in manifest["runs"]:
        if not isinstance(run, dict):
            raise UserError(f"{path} is damaged (a run is {brief_repr(run)}, not an object); {remedy}")
        check_fields(path, run, RUN_FIELDS, remedy)
        if run["method"] not in names:
            raise UserError(f"{path} is damaged (run {run['name']!r} has the method {run['method']!r}, which it does "
                            f"not list); {remedy}")
    return manifest


@dataclass(frozen=True)
class MethodRoles:
    """The role (:data:`studies.grid.cli.ROLES`, or ``other``) of every method of a study, in its order."""

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
    the name :func:`studies.grid.cli.grid` gives: ``imp``, ``swa``, ``particles`` and ``swamp-plus`` are
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
