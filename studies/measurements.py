"""The measurements of a study's analysis (:mod:`studies.analyse`): one registry, :data:`MEASUREMENTS`, and
their settings, :class:`AnalysisSettings`. For every finished cycle k of the runs of a role
(:func:`studies.manifest.method_roles`: "SWAMP" the method of role ``swamp``, N = 4 in the full grid; IMP,
SWA and particles those of roles ``imp``, ``swa`` and ``particles``):

============  ===================  =========================================================
KIND          runs                 what (tool)
============  ===================  =========================================================
pairs         SWAMP, particles     barriers between every particle pair of cycle k
                                   (:func:`landscape.tools.barrier.cycle_barriers`, Frankle et al. 2020)
consecutive   IMP, SWA, SWAMP      barrier between the solutions of cycles k - 1 and k
hull          SWAMP, particles     loss over the particles' convex hull (:mod:`landscape.tools.subspace`)
plane         SWAMP, first seed    loss plane through three particles at the first, middle and last
                                   cycle (Garipov et al. 2018)
hessian       IMP, SWA, SWAMP      Hutchinson trace of the solution's Hessian with its standard error
                                   (:mod:`landscape.tools.hessian`, Hutchinson 1989)
============  ===================  =========================================================

To add a study measurement: write ``FUNCTION(at: Where) -> dict`` (the JSON object of one run's cycle
``at.cycle``, computed from ``at.run``, ``at.settings`` and ``at.options``: a library or tool function's
result ``.to_json()``) and add ``"KIND": Measurement(roles, cycles, FUNCTION, about)`` to
:data:`MEASUREMENTS` (and its row to the table above). ``python -m studies.analyse`` then plans it for
every finished cycle that ``cycles`` picks of the runs of those roles, caches it as
``DIR/analysis/KIND/RUN/cycle_KK.json`` (with ``kind``, ``run`` and ``cycle`` added), computes it in
worker processes or submitit jobs like the others, and ``--only`` chooses it. A measurement that needs
a setting of its own adds a field to :class:`AnalysisSettings` (its flag and help come with it);
``analysis/settings.json`` then records it, so a study analysed before must be analysed again.
:mod:`studies.tables` reads the files into the notebooks' tables.

Example:
    >>> MEASUREMENTS["plane"].roles, MEASUREMENTS["plane"].cycles([0, 1, 2, 3, 4])
    (('swamp',), [0, 2, 4])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.artifacts.rundir import RunDir
from core.errors import UserError
from core.options import check_fields, flag_of, option
from core.seeds import check_seed
from landscape.tools.artifacts import SPLITS, EvalOptions, run_particles
from landscape.tools.barrier import checkpoint_barrier, cycle_barriers
from landscape.tools.cli import MAX_HULL_SAMPLES, MAX_POINTS, MAX_PROBES, MAX_RESOLUTION, check_at_most
from landscape.tools.hessian_report import HessianOptions, analyse_checkpoint
from landscape.tools.plane import checkpoint_plane
from landscape.tools.subspace import hull_landscape
from studies.manifest import ANALYSIS


def _splits_of_flag(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


def _count(default: int, help_: str, least: int) -> Any:
    """An integer setting of at least ``least``; its flag's text is parsed here (one line naming the flag)."""
    return option(default, help_, least=least, metavar="N", to_field=int)


@dataclass(frozen=True)
class AnalysisSettings:
    """Resolution of every measurement (the same for all runs, so they can be compared); each field is a flag
    of ``python -m studies.analyse``."""

    points: int = _count(11, "points on each interpolation line", 2)
    splits: tuple[str, ...] = option(("train", "test"), "data splits to evaluate: train, test or train,test",
                                     metavar="SPLIT,...", to_field=_splits_of_flag, to_flag=",".join)
    bn_recal: int = _count(2048, "train samples for BatchNorm recalibration at every point (0: combine the stored "
                           "statistics)", 0)
    hull_samples: int = _count(32, "Dirichlet samples of each convex hull", 1)
    plane_resolution: int = _count(15, "plane grid N x N", 2)
    hessian_probes: int = _count(32, "Hutchinson probes per Hessian trace", 2)  # one product gives no standard error
    hessian_samples: int = _count(1024, "seeded train samples the Hessian is taken over", 1)
    seed: int = _count(0, "seed of every subsample and random probe", 0)

    def validate(self) -> None:
        """Raise :class:`UserError` naming the flag of the first impossible setting."""
        check_fields(self)
        check_seed(self.seed)
        for name, limit in (("points", MAX_POINTS), ("hull_samples", MAX_HULL_SAMPLES),
                            ("plane_resolution", MAX_RESOLUTION), ("hessian_probes", MAX_PROBES)):
            check_at_most(getattr(self, name), limit, flag_of(name))
        splits = self.splits
        if not isinstance(splits, tuple) or not splits or not set(splits) <= set(SPLITS) \
                or len(set(splits)) != len(splits):
            raise UserError(f"--splits takes train, test or train,test, not {','.join(map(str, splits))!r}")

    def eval_options(self, device: str, data_dir: str | None, progress: bool | None,
                     trust_code: bool = False) -> EvalOptions:
        return EvalOptions(self.splits, self.bn_recal, self.seed, None, device, data_dir, progress, trust_code)

    def hessian_options(self) -> HessianOptions:
        return HessianOptions(probes=self.hessian_probes, samples=self.hessian_samples, seed=self.seed)


QUICK_SETTINGS = AnalysisSettings(points=3, splits=("test",), bn_recal=256, hull_samples=4, plane_resolution=4,
                                  hessian_probes=4, hessian_samples=128)


@dataclass(frozen=True)
class Where:
    """What a measurement measures (``run``'s cycle ``cycle``) and with which settings."""

    run: Path
    cycle: int
    settings: AnalysisSettings
    options: EvalOptions
    device: str

    @property
    def rundir(self) -> RunDir:
        return RunDir(self.run)


@dataclass(frozen=True)
class Measurement:
    """One kind of study measurement: the runs of the method ``roles`` it measures, which of a run's finished
    cycles (``cycles(done)``, ``done`` the list 0 .. K-1), and ``measure(at)``, the JSON object of one
    (``about``: what it is, for ``--only``'s help). ``first_seed``: only the runs of the study's first seed."""

    roles: tuple[str, ...]
    cycles: Callable[[list[int]], list[int]]
    measure: Callable[[Where], dict[str, Any]]
    about: str
    first_seed: bool = False


def _pairs(at: Where) -> dict[str, Any]:
    return cycle_barriers(str(at.run), at.cycle, at.settings.points, at.options).to_json()


def _consecutive(at: Where) -> dict[str, Any]:
    return checkpoint_barrier(at.rundir.average(at.cycle - 1), at.rundir.average(at.cycle), at.settings.points,
                              at.options, allow_mask_union=True).to_json()


def _hull(at: Where) -> dict[str, Any]:
    return hull_landscape(run_particles(at.run, at.cycle), at.settings.hull_samples, at.options).to_json()


def _plane(at: Where) -> dict[str, Any]:
    particles = run_particles(at.run, at.cycle)[:3]
    if len(particles) < 3:
        return {"skipped": f"cycle {at.cycle} has {len(particles)} particles; a plane needs three"}
    partial = result_path(at.run.parent.parent, "plane", at.run.name, at.cycle).with_suffix(".partial")
    return checkpoint_plane(particles, at.settings.plane_resolution, options=replace(at.options, splits=("test",)),
                            partial=partial).to_json()


def _hessian(at: Where) -> dict[str, Any]:
    return analyse_checkpoint(at.rundir.average(at.cycle), at.settings.hessian_options(), at.device,
                              at.options.data_dir, trust_code=at.options.trust_code).to_json()


def _every(done: list[int]) -> list[int]:
    return done


def _after_the_first(done: list[int]) -> list[int]:
    return done[1:]


def _first_middle_last(done: list[int]) -> list[int]:
    return sorted({done[0], done[len(done) // 2], done[-1]}) if done else []


# The study's measurements, in the order they are planned and listed.
MEASUREMENTS: dict[str, Measurement] = {
    "pairs": Measurement(("swamp", "particles"), _every, _pairs, "barriers between the particles of a cycle"),
    "consecutive": Measurement(("imp", "swa", "swamp"), _after_the_first, _consecutive,
                               "barriers between consecutive cycles' solutions"),
    "hull": Measurement(("swamp", "particles"), _every, _hull, "convex hull of the particles"),
    "plane": Measurement(("swamp",), _first_middle_last, _plane, "loss plane through three particles",
                         first_seed=True),
    "hessian": Measurement(("imp", "swa", "swamp"), _every, _hessian, "Hessian trace of the solution"),
}
KINDS = tuple(MEASUREMENTS)


def result_path(root: str | Path, kind: str, run: str, cycle: int) -> Path:
    return Path(root) / ANALYSIS / kind / run / f"cycle_{cycle:02d}.json"
