"""``python -m studies.grid --out DIR --models M,... --rewinds R,...``: a family of ordinary studies.

A family is the study grid (the same preset, settings, seeds and methods) repeated for every model and
rewind point of its axes: one *cell* (:class:`Cell`) per (model, rewind) pair, each an ordinary study
directory ``DIR/cells/MODEL-rR`` (docs/format.md, section 5) whose ``study.json`` settings record its
``model`` and ``rewind_epochs``, so that every reader of a study (``studies.analyse``, ``studies.report``,
``studies.controls``, the landscape tools) reads a cell as any study. ``DIR/family.json`` records the
axes, the shared plan and the cells (docs/format.md, "Study families"). Without an axis flag the model is
the preset's and the rewind point the plan's (``--rewind-epochs`` or the preset's).

All cells' sub-runs form one queue, seed-major (seed 0 of every cell first, so that a family cut short
holds the whole grid for its first seeds): ``--jobs K`` trains K of them at once across the cells, in one
pool of worker processes, or as at most K submitit jobs at once. Each cell keeps its own lock,
``study.json`` and submitit ``jobs/`` folder, so that ``--status`` on the cell alone sees its jobs.
The same command continues a family (finished sub-runs are skipped); it may gain seeds, as a study may.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.artifacts.atomic import atomic_write_text
from core.artifacts.jsonfile import BadJSON, read_json
from core.artifacts.lock import exclusive
from core.artifacts.ownership import check_out_text, check_usable_directory
from core.errors import UserError
from studies.grid.args import parse_models, parse_rewinds
from studies.grid.launchers import SUBMITIT, Hooks, LauncherOptions, make_launcher
from studies.grid.manifest import FAMILY_MANIFEST, MANIFEST, SubRun, check_same_plan, extends, plain_name
from studies.grid.plan import StudyPlan, check_plan, preflight
from studies.grid.runner import OpenStudy, open_study
from studies.grid.workers import check_jobs
from training.presets import PRESETS

FAMILY_FORMAT = "swamp-study-family/1"
CELLS = "cells"  # DIR/cells/NAME: the cells' study directories
AXES = ("model", "rewind_epochs")  # the settings a cell sets; the family's shared settings leave them out
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]|^\.")


def cell_name(model: str, rewind: int) -> str:
    """The directory name of the cell (``model``, ``rewind``): the model name with every character other than
    ``A-Z a-z 0-9 . _ -`` (and a leading dot) replaced by ``_``, then ``-rR``.

    Example:
        >>> cell_name("cnn1d", 2), cell_name("torchvision:resnet18", 0), cell_name("pkg.mod:fn", 8)
        ('cnn1d-r2', 'torchvision_resnet18-r0', 'pkg.mod_fn-r8')
    """
    return f"{_UNSAFE.sub('_', model)}-r{rewind}"


@dataclass(frozen=True)
class Cell:
    """One study of a family: its model, its rewind point (dense epochs), its directory name and its plan
    (the family's shared plan with ``model`` and ``rewind_epochs`` in its settings)."""

    name: str
    model: str
    rewind_epochs: int
    plan: StudyPlan

    @property
    def path(self) -> str:
        """The cell's directory, relative to the family's."""
        return f"{CELLS}/{self.name}"


@dataclass(frozen=True)
class FamilyPlan:
    """A family of studies: the shared plan (its settings without ``model`` and ``rewind_epochs``) and the
    axes, whose product (models major) is the cells."""

    plan: StudyPlan
    models: tuple[str, ...]
    rewinds: tuple[int, ...]

    @property
    def cells(self) -> tuple[Cell, ...]:
        return tuple(Cell(cell_name(m, r), m, r, replace(self.plan, settings={**self.plan.settings, "model": m,
                                                                               "rewind_epochs": r}))
                     for m in self.models for r in self.rewinds)

    def to_json(self) -> dict[str, Any]:
        """The body of ``family.json``."""
        return {"format": FAMILY_FORMAT, "axes": {"models": list(self.models), "rewinds": list(self.rewinds)},
                **self.plan.to_json(),
                "cells": [{"name": c.name, "model": c.model, "rewind_epochs": c.rewind_epochs, "path": c.path}
                          for c in self.cells]}


def family_plan(plan: StudyPlan, models: Sequence[str] | None = None,
                rewinds: Sequence[int] | None = None) -> FamilyPlan:
    """The family of ``plan`` over ``models`` (None: the plan's model, else the preset's) and ``rewinds``
    (None: the plan's ``rewind_epochs``, else the preset's). Cell names that would collide (also when only
    their case differs: case-insensitive file systems) are refused in one line naming ``--models``.

    Example:
        >>> from studies.grid.plan import quick_plan
        >>> family = family_plan(quick_plan("mnist1d"), ["cnn1d", "mlp"], [0, 1])
        >>> [c.name for c in family.cells]
        ['cnn1d-r0', 'cnn1d-r1', 'mlp-r0', 'mlp-r1']
        >>> family.cells[1].plan.settings
        {'cycles': 2, 'epochs': 1, 'model': 'cnn1d', 'rewind_epochs': 1}
    """
    preset = PRESETS[plan.preset]
    model = plan.settings.get("model", preset.get("model"))
    if models is None and model is None:
        raise UserError(f"--preset {plan.preset} names no model; give the family's models with --models")
    models = tuple(models) if models is not None else (model,)
    rewinds = tuple(rewinds) if rewinds is not None else (plan.settings.get("rewind_epochs",
                                                                            preset["rewind_epochs"]),)
    seen: dict[str, str] = {}
    for m in models:
        other = seen.setdefault(cell_name(m, 0).lower(), m)
        if other != m:
            raise UserError(f"--models {other} and {m} would share the cell directory {cell_name(m, rewinds[0])} "
                            "(characters other than letters, digits, '.', '_' and '-' become '_'); run them as "
                            "two families")
    shared = {k: v for k, v in plan.settings.items() if k not in AXES}
    return FamilyPlan(replace(plan, settings=shared), models, rewinds)


def family_from_args(args: argparse.Namespace, plan: StudyPlan) -> FamilyPlan:
    """The family that ``--models`` and ``--rewinds`` make of the flags' ``plan`` (not yet checked against
    RunConfig: see :func:`check_family`)."""
    if args.rewinds is not None and args.rewind_epochs is not None:
        raise UserError("--rewinds gives every cell its rewind point; leave out --rewind-epochs "
                        f"{args.rewind_epochs} (or put it in --rewinds)")
    return family_plan(plan, parse_models(args.models) if args.models is not None else None,
                       parse_rewinds(args.rewinds) if args.rewinds is not None else None)


def check_family(family: FamilyPlan, runtime: dict[str, Any], launcher: str = "processes") -> None:
    """:func:`studies.grid.plan.check_plan` on every cell, and ``training.swamp``'s pre-flight check
    (:func:`studies.grid.plan.preflight`) on every model: an impossible setting, a model that cannot be imported
    or does not fit the data set is one line, naming the cell, before anything is written."""
    data, checked = None, set()
    for cell in family.cells:
        where = f"cell {cell.name}"
        try:
            configs = check_plan(cell.plan, runtime, launcher)
            if cell.model not in checked:  # the cells of one model differ only in their rewind point
                where += f" of --models {cell.model}"
                data = preflight(configs[0], data)
                checked.add(cell.model)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None


def read_family(root: str | Path) -> dict[str, Any]:
    """The family's ``family.json``, its cells checked (a name and the path ``cells/NAME`` each); one clear
    error if it is missing or broken."""
    path = Path(root) / FAMILY_MANIFEST
    if not path.is_file():
        raise UserError(f"{path} does not exist; is {root} a family of studies (python -m studies.grid --out DIR "
                        "--models ...)?")
    try:
        body = read_json(path)
    except (OSError, BadJSON) as err:
        raise UserError(f"{path} is unreadable ({err}); restore it, or start the family again in another --out") \
            from None
    cells = body.get("cells") if isinstance(body, dict) else None
    if not isinstance(cells, list) or not all(
            isinstance(c, dict) and plain_name(c.get("name")) and c.get("path") == f"{CELLS}/{c['name']}"
            for c in cells):
        raise UserError(f"{path} is not a family's manifest (a JSON object listing cells, each with a name and the "
                        f"path {CELLS}/NAME, expected); restore it, or start the family again in another --out")
    return body


def check_same_family(root: Path, family: FamilyPlan) -> None:
    """An existing family must be continued with the axes and plan it was started with; it may gain seeds
    (``--seeds`` listing the old ones first), which each cell then runs."""
    if not (root / FAMILY_MANIFEST).is_file():
        return
    saved = read_family(root)
    if not extends(saved, json.loads(json.dumps(family.to_json()))):
        old_seeds = saved.get("seeds") or []
        raise UserError(f"{root} holds a family of studies with other axes or settings ({FAMILY_MANIFEST}); "
                        "continue it with the flags it was started with (more seeds may be added after seeds "
                        f"{','.join(map(str, old_seeds))}), or choose another --out")


def run_family(root: str | Path, family: FamilyPlan, runtime: dict[str, Any] | None = None,
               log: Callable[[str], None] = print, jobs: int = 1,
               launch: LauncherOptions | None = None) -> dict[str, list[SubRun]]:
    """Run (or continue) every cell of ``family`` under ``root``; returns each cell's sub-runs by cell name.

    As :func:`studies.grid.runner.run_study` for each cell (the same statuses, failures and launchers), with one
    queue for all cells (see the module docstring). Every cell is checked (a folder that is not a study, a
    study with other settings) before ``family.json`` or any cell is written; each log line names its cell.

    Example:
        >>> from studies.grid.plan import quick_plan
        >>> family = family_plan(quick_plan("mnist1d", (0,)), ["cnn1d", "mlp"])
        >>> cells = run_family("runs/family-quick", family)  # doctest: +SKIP
        >>> {name: [r.status for r in runs] for name, runs in cells.items()}  # doctest: +SKIP
        {'cnn1d-r1': ['done', ...], 'mlp-r1': ['done', ...]}
    """
    options = launch or LauncherOptions(jobs=jobs)
    check_jobs(options.jobs)
    root = check_out_text(root)
    if (root / MANIFEST).is_file():
        raise UserError(f"{root} is a study ({MANIFEST}), not a family of studies; continue it without --models "
                        "and --rewinds, or choose another --out")
    check_usable_directory(root, FAMILY_MANIFEST, "family of studies", "--out")
    root.mkdir(parents=True, exist_ok=True)
    cells = family.cells
    with exclusive(root, "family of studies"), ExitStack() as stack:
        check_same_family(root, family)
        for cell in cells:  # refused here, nothing is written
            check_usable_directory(root / cell.path, MANIFEST, "study directory", "--out")
            check_same_plan(root / cell.path, cell.plan)
        atomic_write_text(root / FAMILY_MANIFEST, json.dumps(family.to_json(), indent=2) + "\n")
        studies = [stack.enter_context(open_study(root / cell.path, cell.plan, runtime or {},
                                                  lambda line, name=cell.name: log(f"{name}: {line}")))
                   for cell in cells]
        todo = sorted((r for s in studies for r in s.todo), key=lambda r: family.plan.seeds.index(r.seed))
        if options.name in SUBMITIT:
            launch_cells(make_launcher(options), studies, todo)
        else:
            owner = {id(r): s.hooks for s in studies for r in s.runs}
            hooks = Hooks(root, lambda r, job: owner[id(r)].start(r, job),
                          lambda r, began, status, error: owner[id(r)].finish(r, began, status, error),
                          lambda r: owner[id(r)].settle(r), lambda r: owner[id(r)].arguments(r))
            make_launcher(options).launch(todo, [r for s in studies for r in s.following], hooks)
    return {cell.name: study.runs for cell, study in zip(cells, studies, strict=True)}


def launch_cells(launcher: Any, studies: Sequence[OpenStudy], todo: list[SubRun]) -> None:
    """What :meth:`studies.grid.submitit_launcher.SubmititLauncher.launch` does for one study, for several at once:
    ``todo`` (sub-runs of any of ``studies``) is one queue, at most ``--jobs`` jobs run at once on this
    machine (:meth:`room`), and each study's jobs are submitted into and asked about in its own ``jobs/``
    folder, their records relative to it, so each cell stays an ordinary study. Sub-runs whose jobs an
    earlier command submitted (each study's ``following``) are followed; without waiting it returns once
    the jobs are submitted, and an interrupted wait leaves them running (the next command follows them)."""
    owner = {id(r): k for k, s in enumerate(studies) for r in s.runs}
    queue = list(todo)
    active = {(k, r.job.id): (r, time.perf_counter()) for k, s in enumerate(studies) for r in s.following
              if r.job is not None}
    wait = launcher.options.wait
    while queue or (wait and active):
        room = launcher.room(len(queue), len(active))
        if room > 0:
            batch, queue = queue[:room], queue[room:]
            for k, s in enumerate(studies):
                for r, record in launcher.submit([r for r in batch if owner[id(r)] == k], s.hooks):
                    active[(k, record.id)] = (r, s.hooks.start(r, record))
        if not wait:
            return
        time.sleep(launcher.poll_seconds)
        for k, s in enumerate(studies):
            mine = {key: r for key, (r, _) in active.items() if key[0] == k}
            if not mine:
                continue
            states = launcher.states(s.root, [r.job for r in mine.values()], launcher.own)
            for key, r in mine.items():
                if states.get(key[1]) is None:
                    _, began = active.pop(key)
                    s.hooks.finish(r, began, *s.hooks.settle(r))
