"""What the controls measure: the settings, one :class:`Measurement` per cached file, the plan of every
measurement of a directory of runs, and the function computing each kind (:func:`measure_row`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from torch.nn.attention import SDPBackend, sdpa_kernel

from core.artifacts.checkpoint import build_model, load_checkpoint
from core.options import check_fields, flag_of, option, to_json
from landscape.flatness import normalized_trace
from landscape.tools.artifacts import EvalOptions, checkpoint_data, run_particles
from landscape.tools.barrier import checkpoint_barrier
from landscape.tools.cli import MAX_HULL_SAMPLES, MAX_POINTS, MAX_PROBES, check_at_most
from landscape.tools.hessian_report import HessianOptions, training_batches
from landscape.tools.subspace import hull_landscape
from studies.controls.runs import Grid, Run, grid_runs


@dataclass(frozen=True)
class Settings:
    """What is measured and how; each field is a flag of ``python -m studies.controls``."""

    rewind: int = option(2, "--rewind-epochs of the grid's runs", least=0, metavar="N", flag_default=None,
                         default_text="the rewind point every model has, when there is one; other rewind points "
                                      "feed only the rewind table")
    points: int = option(11, "points on each line", least=2, metavar="N")
    hull_samples: int = option(32, "samples per hull", least=1, metavar="N")
    hull_vertices: int = option(3, "vertices K of every hull", least=2, metavar="N")
    probes: int = option(32, "Hutchinson probes", least=2, metavar="N")
    hessian_samples: int = option(1024, "training samples of the Hessian", least=1, metavar="N")
    data_dir: str | None = None
    trust_code: bool = False

    def validate(self) -> None:
        """Raise :class:`UserError` naming the flag of the first impossible setting."""
        check_fields(self)
        for name, limit in (("points", MAX_POINTS), ("hull_samples", MAX_HULL_SAMPLES), ("probes", MAX_PROBES)):
            check_at_most(getattr(self, name), limit, flag_of(name))

    def recorded(self) -> dict[str, int]:
        """The settings the numbers depend on (all but ``data_dir``, which says only where the data are, and
        ``trust_code``, the consent to import a ``PACKAGE.MODULE:CALLABLE`` model or data set the runs name)."""
        return {k: v for k, v in to_json(self).items() if k not in RUNTIME}

    def flags(self) -> list[str]:
        """The command-line flags that give these settings (those that differ from the defaults)."""
        default = Settings()
        return [part for k, v in self.recorded().items() if v != getattr(default, k) for part in (flag_of(k), str(v))]


RUNTIME = ("data_dir", "trust_code")  # the settings that change where the data are read and what may be imported


@dataclass(frozen=True)
class Controls:
    """Every measured row, by kind (``accuracy``, ``particle_pairs``, ``seed_pairs``, ``particle_hulls``,
    ``seed_hulls``, ``flatness``), the settings, which models alignment refuses, and seconds per kind (the
    sum of the seconds each cached measurement took; ``hulls`` counts both hull kinds)."""

    settings: Settings
    rows: dict[str, list[dict[str, Any]]]
    unalignable: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        settings = {k: v for k, v in to_json(self.settings).items() if k != "trust_code"}
        return {"settings": settings, "rows": self.rows, "unalignable": self.unalignable,
                "seconds": self.seconds}


@dataclass(frozen=True)
class Measurement:
    """One cached measurement: its ``kind`` (:data:`KINDS`), file name ``key`` (model, method, rewind point,
    seed(s), cycle and, for a particle pair, the particles), the row's ``labels`` and the checkpoints it reads."""

    kind: str
    key: str
    labels: dict[str, Any]
    checkpoints: tuple[Path, ...]
    align: bool = False


def _key(model: str, method: str, rewind: int, seeds: Sequence[int], cycle: int, pair: str = "") -> str:
    return f"{quote(model, safe='')}-{method}-r{rewind}-s{'-'.join(map(str, seeds))}-c{cycle:02d}{pair}"


def plan_measurements(runs: Sequence[Run], settings: Settings, unalignable: dict[str, str]) -> list[Measurement]:
    """Every measurement of the controls (the package docstring), in the order of the rows: particle pairs of
    every SWAMP cycle at every rewind point; on the grid (``settings.rewind``) seed pairs, particle hulls and
    seed hulls of ``settings.hull_vertices`` vertices, and the flatness of every solution.

    Example:
        >>> from studies.controls.runs import find_runs
        >>> runs = find_runs(Path("runs/controls"))  # doctest: +SKIP
        >>> plan = plan_measurements(runs, Settings(), {})  # doctest: +SKIP
        >>> plan[0].kind, plan[0].key, measure_row(plan[0], Settings())["loss"]  # doctest: +SKIP
        ('particle_pairs', 'cnn1d-swamp-r2-s0-c00-p0-1', 0.0)
    """
    grid = grid_runs(runs, settings.rewind)
    return [*_particle_pairs(runs), *_seed_pairs(grid, unalignable), *_hulls(grid, settings.hull_vertices),
            *_flatness(grid)]


def _particle_pairs(runs: Sequence[Run]) -> list[Measurement]:
    out = []
    for r in runs:
        if r.method != "swamp":
            continue
        for k in r.cycles:
            particles = run_particles(r.path, k)
            for i, j in combinations(range(len(particles)), 2):
                labels = {"model": r.model, "seed": r.seed, "rewind": r.rewind, "cycle": k, "pair": [i, j],
                          "sparsity": r.metrics(k)["sparsity"]}
                out.append(Measurement("particle_pairs", _key(r.model, "swamp", r.rewind, [r.seed], k, f"-p{i}-{j}"),
                                       labels, (particles[i], particles[j])))
    return out


def seed_groups(seeds: Sequence[int], k: int) -> list[tuple[int, ...]]:
    """The groups of ``k`` seeds whose solutions form the unpaired controls (seed pairs, seed hulls): each seed
    with the ``k - 1`` seeds after it in ``seeds``, cyclically, so every seed starts one group (n groups of n > k
    seeds; one group of exactly k; none of fewer). Each group is sorted.

    Example:
        >>> seed_groups([0, 1, 2, 3], 2), seed_groups([0, 1, 2], 3), seed_groups([0, 1, 2], 2)
        ([(0, 1), (1, 2), (2, 3), (0, 3)], [(0, 1, 2)], [(0, 1), (1, 2), (0, 2)])
    """
    n = len(seeds)
    if n < k:
        return []
    if n == k:
        return [tuple(seeds)]
    return [tuple(sorted(seeds[(i + j) % n] for j in range(k))) for i in range(n)]


def _seed_pairs(grid: Grid, unalignable: dict[str, str]) -> list[Measurement]:
    out = []
    for (model, method), seeds in sorted(grid.items()):
        for i, j in seed_groups(sorted(seeds), 2):
            for k in sorted(set(seeds[i].cycles) & set(seeds[j].cycles)):
                labels = {"model": model, "method": method, "cycle": k, "seeds": [i, j],
                          "sparsity": seeds[i].metrics(k)["sparsity"]}
                out.append(Measurement("seed_pairs", _key(model, method, seeds[i].rewind, [i, j], k), labels,
                                       (seeds[i].average(k), seeds[j].average(k)), align=model not in unalignable))
    return out


def _hulls(grid: Grid, vertices: int) -> list[Measurement]:
    """Hulls of ``vertices`` particles of one SWAMP cycle (per seed), then of as many seeds' solutions (per
    method and cycle: the groups of :func:`seed_groups`)."""
    particle, seed = [], []
    for (model, method), seeds in sorted(grid.items()):
        for chosen in seed_groups(sorted(seeds), vertices):
            first = seeds[chosen[0]]
            for k in sorted(set.intersection(*(set(seeds[s].cycles) for s in chosen))):
                labels = {"model": model, "method": method, "cycle": k, "seeds": list(chosen),
                          "sparsity": first.metrics(k)["sparsity"]}
                seed.append(Measurement("seed_hulls", _key(model, method, first.rewind, chosen, k), labels,
                                        tuple(seeds[s].average(k) for s in chosen)))
        if method != "swamp":
            continue
        for s, r in sorted(seeds.items()):
            for k in r.cycles:
                particles = run_particles(r.path, k)
                if len(particles) >= vertices:
                    labels = {"model": model, "seed": s, "cycle": k, "sparsity": r.metrics(k)["sparsity"]}
                    particle.append(Measurement("particle_hulls", _key(model, method, r.rewind, [s], k), labels,
                                                tuple(particles[:vertices])))
    return particle + seed


def _flatness(grid: Grid) -> list[Measurement]:
    return [Measurement("flatness", _key(model, method, r.rewind, [s], k),
                        {"model": model, "method": method, "seed": s, "cycle": k, "sparsity": r.metrics(k)["sparsity"],
                         "test_acc": r.metrics(k)["average"]["test_acc"]}, (r.average(k),))
            for (model, method), seeds in sorted(grid.items()) for s, r in sorted(seeds.items()) for k in r.cycles]


def _options(settings: Settings) -> EvalOptions:
    return EvalOptions(("test",), data_dir=settings.data_dir, progress=False, trust_code=settings.trust_code)


def _barrier(m: Measurement, settings: Settings) -> dict[str, float | None]:
    """Test loss and error barrier of the line between the two checkpoints (Frankle et al. 2020), BatchNorm
    recomputed at every point; also after weight matching (Ainsworth et al. 2023) when ``m.align``."""
    result = checkpoint_barrier(*m.checkpoints, settings.points, _options(settings), allow_mask_union=True,
                                align="weights" if m.align else None)
    row = {"loss": result.barrier["test"].loss, "error": result.barrier["test"].error,
           "aligned_loss": None, "aligned_error": None}
    if result.aligned is not None:
        row.update(aligned_loss=result.aligned.barrier["test"].loss, aligned_error=result.aligned.barrier["test"].error)
    return row


def _hull(m: Measurement, settings: Settings) -> dict[str, float]:
    """Uniform samples of the checkpoints' convex hull: mean hull loss minus the vertices' mean, largest hull
    loss minus the worst vertex's, and the fraction of samples at or below the worst vertex."""
    result = hull_landscape(list(m.checkpoints), settings.hull_samples, _options(settings), allow_mask_union=True)
    summary, vertices = result.summary["test"], result.vertices["test"].loss
    return {"excess_mean": summary.hull_loss_mean - float(np.mean(vertices)),
            "excess_max": summary.hull_loss_max - summary.vertex_loss_max,
            "frac_below": summary.hull_frac_below_vertex_max, "hull_loss_mean": summary.hull_loss_mean}


def _flatness_of(m: Measurement, settings: Settings) -> dict[str, Any]:
    """Raw and BatchNorm-invariant Hessian traces (per layer and per channel) of the solution, on a seeded subset
    of ``hessian_samples`` training samples, restricted to the unpruned coordinates."""
    ckpt = load_checkpoint(m.checkpoints[0], trust_code=settings.trust_code)
    batches = training_batches(checkpoint_data(ckpt, "cpu", settings.data_dir),
                               HessianOptions(samples=settings.hessian_samples, batch_size=512))
    net, masks = build_model(ckpt, "cpu"), dict(ckpt.masks)
    # the fused CPU attention kernels have no double backward: the math kernel has
    with sdpa_kernel([SDPBackend.MATH]):
        layer = normalized_trace(net, batches, probes=settings.probes, masks=masks)
        channel = normalized_trace(net, batches, probes=settings.probes, masks=masks, granularity="channel") \
            if layer.layers else layer
    return {"raw": layer.raw, "raw_stderr": layer.raw_stderr,
            "normalized": layer.normalized if layer.layers else None,
            "normalized_stderr": layer.normalized_stderr if layer.layers else None,
            "channel": channel.normalized if channel.layers else None,
            "channel_stderr": channel.normalized_stderr if channel.layers else None,
            "other": layer.other, "layers": list(layer.layers)}


# The registry of the controls' measurements: kind -> the function that measures one row of it. A new kind is
# one entry here and a planner in plan_measurements.
MEASURE: dict[str, Callable[[Measurement, Settings], dict[str, Any]]] = {
    "particle_pairs": _barrier, "seed_pairs": _barrier, "particle_hulls": _hull, "seed_hulls": _hull,
    "flatness": _flatness_of}
KINDS = tuple(MEASURE)


def measure_row(m: Measurement, settings: Settings) -> dict[str, Any]:
    """The row of one measurement: its labels followed by what was measured (every measurement is seeded)."""
    return {**m.labels, **MEASURE[m.kind](m, settings)}
