"""What a study runs: its methods, seeds and shared settings, and how one sub-run of it runs.

Every method below runs for every seed as an ordinary run directory ``DIR/runs/METHOD-sSEED``
(docs/format.md, section 2), so every landscape tool reads it. Methods (Choi et al. 2024, sections 4-5
and their ablations), each with its role (:data:`ROLES`):

=================  ==============  =============================================================
method             role            what
=================  ==============  =============================================================
``imp``            ``imp``         IMP with weight rewinding (Frankle et al. 2020): one particle,
                                   plain SGD
``swa``            ``swa``         IMP + SWA (Izmailov et al. 2018): one particle with SWA (N = 1
                                   of the ablation)
``particles``      ``particles``   N particles averaged, no SWA
``swamp-nN``       ``swamp``       SWAMP, the central arm every comparison is about: N = 4 (the
                                   smallest N if 4 is not in the grid)
``swamp-nN``       ``swamp-n``     SWAMP with the other N = 2, 8 SWA particles (the N ablation)
``swamp-plus``     ``swamp-plus``  SWAMP+: one particle before ``plus_cycle``, N particles from it
``oneshot-*``      ``oneshot``     one-shot global magnitude / random pruning of the dense solution
                                   to every IMP density, then training from the ticket
                                   (:mod:`training.oneshot`)
=================  ==============  =============================================================

The default grid (``--preset mnist1d``) runs 15 cycles, so that the last trains at density
0.8^14 = 4.4% (>= 95% sparsity), on three seeds. ``--quick`` is a seconds-long grid for tests.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.artifacts.rundir import RunDir
from core.errors import ENVIRONMENT_ERRNOS, UserError
from studies.grid.launchers import check_device
from studies.grid.workers import set_threads
from training.config import RunConfig, check_data_dir, resolve_config
from training.presets import PRESETS

if TYPE_CHECKING:
    from core.data import Dataset

STUDY_CYCLES = 15  # 0.8^14 = 4.4% density in the last cycle
ROLES = ("imp", "swa", "particles", "swamp", "swamp-n", "swamp-plus", "oneshot")


@dataclass(frozen=True)
class Method:
    """One arm of the study: the RunConfig fields it sets, whether it prunes one-shot, and its role.

    ``role`` (one of :data:`ROLES`, recorded in ``study.json``) is what the study's readers select and
    compare methods by, so that no reader parses method names; None: not recorded (as in the
    manifests of studies started before methods had roles).
    """

    name: str
    particles: int = 1
    swa: bool = True
    particles_from_cycle: int = 0
    prune_method: str = "global"
    oneshot: bool = False
    role: str | None = None

    def overrides(self) -> dict[str, Any]:
        return {"particles": self.particles, "swa": self.swa, "particles_from_cycle": self.particles_from_cycle,
                "prune_method": self.prune_method}


def grid(particles: Sequence[int], plus_cycle: int, plus_particles: int, averaged: int) -> tuple[Method, ...]:
    """IMP, SWA only, particles only (``averaged`` of them), one-shot, SWAMP with each N and SWAMP+.

    Cheap and central arms first, so that a study cut short still holds the main comparison.
    """
    central, *others = sorted(particles, key=lambda n: (n != 4, n))
    return (Method("imp", swa=False, role="imp"), Method("swa", role="swa"),
            Method(f"swamp-n{central}", central, role="swamp"),
            Method("particles", averaged, swa=False, role="particles"),
            Method("oneshot-magnitude", swa=False, oneshot=True, role="oneshot"),
            Method("oneshot-random", swa=False, prune_method="random", oneshot=True, role="oneshot"),
            *(Method(f"swamp-n{n}", n, role="swamp-n") for n in others),
            Method("swamp-plus", plus_particles, particles_from_cycle=plus_cycle, role="swamp-plus"))


@dataclass(frozen=True)
class StudyPlan:
    """What a study runs: the preset, settings shared by every sub-run, seeds and methods."""

    preset: str
    settings: dict[str, Any]
    seeds: tuple[int, ...]
    methods: tuple[Method, ...]
    quick: bool = False

    @property
    def cycles(self) -> int:
        """Cycles of every sub-run (the study's setting, else the preset's)."""
        return self.settings.get("cycles") or PRESETS[self.preset]["cycles"]

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "settings": self.settings, "seeds": list(self.seeds),
                "methods": [asdict(m) for m in self.methods], "quick": self.quick}


def default_plan(preset: str, seeds: Sequence[int] = (0, 1, 2)) -> StudyPlan:
    """The full grid: 15 cycles, N = 2, 4, 8, particles-only with 4, SWAMP+ (4 particles) from cycle 5."""
    return StudyPlan(preset, {"cycles": STUDY_CYCLES}, tuple(seeds), grid((2, 4, 8), 5, 4, 4))


def quick_plan(preset: str, seeds: Sequence[int] = (0, 1)) -> StudyPlan:
    """A grid for tests (about half a minute): 2 cycles of 1 epoch, N = 3 (three particles make a
    plane), particles-only and SWAMP+ (from cycle 1) with 2."""
    settings = {"cycles": 2, "epochs": 1, "rewind_epochs": 1}
    return StudyPlan(preset, settings, tuple(seeds), grid((3,), 1, 2, 2), quick=True)


def sub_config(plan: StudyPlan, method: Method, seed: int, path: Path, runtime: dict[str, Any]) -> Any:
    """The sub-run's RunConfig: preset < study settings < method < seed, resuming what exists."""
    exists = RunDir(path).config.is_file()
    values = {"preset": plan.preset, **plan.settings, **method.overrides(), "seed": seed, "out": str(path),
              "resume": exists, "overwrite": not exists, **runtime}
    return resolve_config(argparse.Namespace(**values))


def check_plan(plan: StudyPlan, runtime: dict[str, Any], launcher: str = "processes") -> list[RunConfig]:
    """Resolve every sub-run's RunConfig (and the runtime flags) now, so that an impossible setting is one
    error naming its flag before anything runs, not one failed sub-run each; returns the configs. On Slurm
    (``launcher``) the device is checked by name only: the jobs' nodes have the GPUs
    (:func:`studies.grid.launchers.check_device`)."""
    cycles = plan.cycles
    configs = []
    for method in plan.methods:
        if cycles >= 1 and 0 < method.particles_from_cycle >= cycles:  # clearer than RunConfig's message
            raise UserError(f"method {method.name} adds its particles at cycle {method.particles_from_cycle}, so it "
                            f"needs --cycles above {method.particles_from_cycle}; give more cycles or leave it out "
                            "with --methods")
        for seed in plan.seeds:
            values = {"preset": plan.preset, **plan.settings, **method.overrides(), "seed": seed,
                      "out": f"runs/{method.name}-s{seed}", **runtime}
            try:
                configs.append(resolve_config(argparse.Namespace(**values)))
            except UserError as err:
                raise UserError(f"sub-run {method.name}-s{seed}: {err}") from None
    if "device" in runtime:
        check_device(runtime["device"], launcher)
    for cfg in configs[:1]:  # every sub-run reads the same data
        check_data_dir(cfg)
    return configs


def preflight(cfg: RunConfig, data: Dataset | None = None) -> Dataset:
    """The checks ``python -m training.swamp`` makes before it writes anything
    (:func:`training.context.build_context`: the data set loads, the ``--model`` imports, builds within memory and
    maps two training samples to the data set's logits), on the CPU, so that a model a sub-run cannot train is
    one :class:`UserError` line before anything is written, not a failed sub-run. ``data``: the data set of an
    earlier check of the same data (loaded once); returns the data set loaded."""
    from training.context import build_context  # torch and the data sets load here, not at import

    return build_context(replace(cfg, device="cpu"), data).data


def environment_failure(err: BaseException) -> bool:
    """Whether ``err`` is a failure of the machine (full disk, file-size limit, read-only path, ...), which
    every later sub-run would meet as well: it stops the study instead of failing one sub-run."""
    return isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS


def run_sub_run(plan: StudyPlan, method: Method, seed: int, path: Path, runtime: dict[str, Any],
                threads: int | None = None) -> tuple[str, str | None]:
    """Run (or resume) one sub-run; returns ``(status, error)``. Runs in the study's process, in a worker
    process (``--jobs``) or in a submitit job (``--launcher``).

    An :func:`environment_failure` is raised, not returned.
    """
    # the trainers load here, not at import: the study's readers import the plan for its manifest
    from training.oneshot import run_oneshot
    from training.run import run_swamp

    set_threads(threads)
    try:
        cfg = sub_config(plan, method, seed, path, runtime)
        (run_oneshot if method.oneshot else run_swamp)(cfg)
        return "done", None
    except Exception as err:  # one broken sub-run must not stop the grid
        if environment_failure(err):
            raise
        return "failed", f"{type(err).__name__}: {err}"
