"""Loss over the convex hull of checkpoints, and the plane through three: ``python -m landscape.subspace``.

SWAMP averages particles that share a mask (Choi et al. 2024); whether the whole simplex spanned by
them has low loss, not only its centroid, tells whether they lie in one basin. For checkpoints
theta_1..theta_n the hull is sampled with coefficients c ~ Dirichlet(1, ..., 1), the uniform
distribution on the simplex {c_i >= 0, sum_i c_i = 1}, and theta(c) = sum_i c_i theta_i is evaluated
(BatchNorm recomputed as in :mod:`landscape.tools.barrier`), together with every vertex and the centroid.

Summary per split: ``hull_loss_max`` and ``hull_loss_mean`` over the S samples, ``vertex_loss_max``
(the worst checkpoint) and ``hull_frac_below_vertex_max``, the fraction of samples whose loss is at
or below the worst vertex's. ``--plane`` adds the loss plane through exactly three checkpoints
(:mod:`landscape.tools.plane`, Garipov et al. 2018).

JSON (docs/format.md section 4) plus: ``samples``, ``seed``, ``bn``, ``mask``, ``device`` and, with
``--plane``, ``plane`` (see :meth:`landscape.tools.plane.PlaneResult.to_json`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.artifacts.outputs import check_outputs
from core.errors import ArgumentParser, UserError, run_cli
from core.evaluate import Evaluation
from landscape.connectivity import simplex_samples
from landscape.tools.artifacts import (
    TEST_SPLIT,
    CheckpointLike,
    CheckpointSet,
    EvalOptions,
    MaskInfo,
    Series,
    describe_checkpoint,
    load_compatible,
    run_particles,
    shared_mask_or_refuse,
)
from landscape.tools.cli import (
    MAX_HULL_SAMPLES,
    add_eval_arguments,
    check_at_most,
    cycle_list,
    eval_options,
    open_checkpoint,
    split_cells,
    split_header,
    write_json,
)
from landscape.tools.plane import PlaneResult, checkpoint_plane
from landscape.tools.plots import checkpoint_label, contour_panels, histogram_panels, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class HullSummary:
    hull_loss_max: float
    hull_loss_mean: float
    vertex_loss_max: float
    hull_frac_below_vertex_max: float


@dataclass(frozen=True)
class HullResult:
    """Vertices, centroid and hull samples of each split, and their summary."""

    checkpoints: tuple[str, ...]
    vertices: dict[str, Series]
    centroid: dict[str, Evaluation]
    coefficients: tuple[tuple[float, ...], ...]
    hull: dict[str, Series]
    summary: dict[str, HullSummary]
    seed: int
    bn: str
    mask: MaskInfo
    device: str

    def to_json(self) -> dict:
        return {"checkpoints": list(self.checkpoints),
                "vertices": {s: v.to_json() for s, v in self.vertices.items()},
                "centroid": {s: {"loss": e.loss, "acc": e.acc} for s, e in self.centroid.items()},
                "hull": {"coefficients": [list(c) for c in self.coefficients],
                         **{s: v.to_json() for s, v in self.hull.items()}},
                "summary": {s: vars(v) for s, v in self.summary.items()},
                "samples": len(self.coefficients), "seed": self.seed, "bn": self.bn, "mask": self.mask.to_json(),
                "device": self.device}


def hull_landscape(checkpoints: Sequence[CheckpointLike], samples: int = 32, options: EvalOptions = TEST_SPLIT,
                   allow_mask_union: bool = False) -> HullResult:
    """Evaluate the vertices, the centroid and ``samples`` uniform points of the checkpoints' convex hull."""
    if len(checkpoints) < 2 or samples < 1:
        raise UserError("the hull needs at least two checkpoints and --samples >= 1")
    check_at_most(samples, MAX_HULL_SAMPLES, "--samples")
    ckpts = load_compatible(checkpoints)
    mask = shared_mask_or_refuse(ckpts, allow_mask_union)
    inputs = CheckpointSet(ckpts, options)
    n = len(ckpts)
    coefficients = tuple(tuple(float(x) for x in row) for row in simplex_samples(n, samples, options.seed))
    rows = [tuple(np.eye(n)[i]) for i in range(n)] + [(1.0 / n,) * n] + list(coefficients)
    values = inputs.scan(rows, desc="hull")
    vertices = {s: Series(v.loss[:n], v.acc[:n]) for s, v in values.items()}
    centroid = {s: Evaluation(v.loss[n], v.acc[n]) for s, v in values.items()}
    hull = {s: Series(v.loss[n + 1:], v.acc[n + 1:]) for s, v in values.items()}
    summary = {}
    for s, h in hull.items():
        worst = max(vertices[s].loss)
        summary[s] = HullSummary(max(h.loss), float(np.mean(h.loss)), worst,
                                 float(np.mean([loss <= worst for loss in h.loss])))
    return HullResult(tuple(c.path for c in ckpts), vertices, centroid, coefficients, hull, summary, options.seed,
                      inputs.bn, mask, str(inputs.device))


def _vertex_names(checkpoints: Sequence[str]) -> list[str]:
    """``C1 = run/cycle_01/particle_00`` and so on, as the CLI numbers them."""
    return [f"C{i + 1} = {checkpoint_label(p)}" for i, p in enumerate(checkpoints)]


def plot_hull(result: HullResult) -> Figure:
    """Histogram of hull-sample losses per split, with each vertex (named by its file) and the centroid marked."""
    names = _vertex_names(result.checkpoints)
    markers = {f"{s} split": {**dict(zip(names, v.loss, strict=True)), "centroid": result.centroid[s].loss}
               for s, v in result.vertices.items()}
    return histogram_panels({f"{s} split": h.loss for s, h in result.hull.items()}, markers,
                            "loss (cross-entropy)", ylabel="hull samples (count)",
                            title=f"loss over the convex hull of {len(names)} checkpoints "
                                  f"({len(result.coefficients)} uniform samples, seed {result.seed})",
                            caption=f"BatchNorm: {result.bn}; {result.mask.describe()}.")


def plot_plane(plane: PlaneResult) -> Figure:
    """Contours of loss (log-spaced levels) and error (%) per split, with the checkpoints and their triangle,
    in the plane's Gram-Schmidt coordinates (Euclidean distances in weight space)."""
    panels, units = {}, {}
    for s, g in plane.grids.items():
        panels[f"{s} loss"], units[f"{s} loss"] = g["loss"], f"{s} loss (cross-entropy)"
        panels[f"{s} error"], units[f"{s} error"] = 100.0 * (1.0 - g["acc"]), f"{s} error (%)"
    names = _vertex_names(plane.checkpoints)
    return contour_panels(plane.xs, plane.ys, panels, plane.vertices, ["C1", "C2", "C3"],
                          title="loss on the plane through three checkpoints (Garipov et al. 2018)\n"
                                + ", ".join(n.replace(" ", "\u00a0") for n in names),  # break between names only
                          log_scale=[name for name in panels if name.endswith("loss")],
                          xlabel="x: along C2 - C1 (L2 distance)", ylabel="y: towards C3 (L2 distance)",
                          colorbar_labels=units,
                          caption="Plane coordinates in the Gram-Schmidt basis of (C2 - C1, C3 - C1), C1 at the origin;"
                                  " distances are Euclidean norms of weight differences. "
                                  f"BatchNorm: {plane.bn}; {plane.mask.describe()}.")


def format_hull(result: HullResult) -> str:
    """Vertex and centroid values, then the summary, one block per split."""
    splits = list(result.vertices)
    rows = [f"{'':>9}" + split_header(splits)]
    for i in range(len(result.checkpoints)):
        rows.append(f"{'C' + str(i + 1):>9}" + split_cells(
            [(result.vertices[s].loss[i], result.vertices[s].error[i]) for s in splits]))
    rows.append(f"{'centroid':>9}" + split_cells(
        [(result.centroid[s].loss, 1 - result.centroid[s].acc) for s in splits]))
    for s, m in result.summary.items():
        rows.append(f"{s}: hull loss max {m.hull_loss_max:.4f}, mean {m.hull_loss_mean:.4f}; worst vertex "
                    f"{m.vertex_loss_max:.4f}; {100 * m.hull_frac_below_vertex_max:.1f}% of "
                    f"{len(result.coefficients)} samples at or below it")
    return "\n".join(rows)


def chosen_particles(run: str, cycle: int, particles: list[int] | None, plane: bool) -> list[Path]:
    """The particle files of ``--run --cycle`` picked by ``--particles`` (all, or the first three for
    ``--plane``), saying on stdout when the first three were picked for the plane."""
    paths = run_particles(run, cycle)
    if particles is None:
        if not plane or len(paths) <= 3:
            return paths
        print(f"--plane: using particles 0, 1, 2 of the {len(paths)} in cycle {cycle} "
              "(choose others with --particles)")
        return paths[:3]
    bad = [p for p in particles if not 0 <= p < len(paths)] or [p for p in particles if particles.count(p) > 1]
    if bad:
        raise UserError(f"--particles {bad[0]}: give distinct particles of cycle {cycle} of {run}, which has "
                        f"0..{len(paths) - 1}")
    return [paths[p] for p in particles]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m landscape.subspace",
        description="Loss over the convex hull of checkpoints (uniform Dirichlet samples) and, with --plane, "
                    "on the plane through three checkpoints (Garipov et al. 2018).")
    parser.add_argument("checkpoints", nargs="*", metavar="CKPT", help="two or more checkpoints")
    parser.add_argument("--run", default=None, metavar="DIR", help="a run directory: the particles of --cycle")
    parser.add_argument("--cycle", type=int, default=None, metavar="K", help="cycle whose particles to use")
    parser.add_argument("--particles", type=cycle_list, default=None, metavar="P,P,...",
                        help="with --run: which particles of the cycle, e.g. 0,1,2 (default all; with --plane, "
                             "the first three)")
    parser.add_argument("--samples", type=int, default=32, metavar="S", help="hull samples (default 32)")
    parser.add_argument("--plane", action="store_true", help="also scan the plane through three checkpoints "
                        "(with --json, finished points are kept in OUT.partial and a rerun continues them)")
    parser.add_argument("--resolution", type=int, default=21, metavar="R", help="plane grid R x R (default 21)")
    parser.add_argument("--margin", type=float, default=0.2, metavar="M",
                        help="plane margin around the triangle, a fraction of its extent (default 0.2)")
    parser.add_argument("--allow-mask-union", action="store_true",
                        help="combine checkpoints with different masks (weights taken as they are)")
    add_eval_arguments(parser, default_split="test")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = eval_options(args)
    if (args.run is None) != (args.cycle is None) or (args.run is not None and args.checkpoints):
        raise UserError("give checkpoint files, or --run DIR with --cycle K (not both)")
    if args.particles is not None and args.run is None:
        raise UserError("--particles picks particles of --run DIR --cycle K; with files, pass the files you want")
    partial = Path(f"{args.json}.partial") if args.json else None
    check_outputs({"--json": args.json, "--json (its .partial)": partial if args.plane else None, "--plot": args.plot},
                  [*args.checkpoints, *([args.run] if args.run else [])],
                  {"--json": {"hull"}, "--json (its .partial)": {"identity"}})
    paths = chosen_particles(args.run, args.cycle, args.particles, args.plane) if args.run is not None \
        else args.checkpoints
    ckpts = load_compatible([open_checkpoint(p, args) for p in paths])
    if args.plane and len(ckpts) != 3:
        raise UserError(f"--plane needs exactly three checkpoints, got {len(ckpts)}; pass three files "
                        "(or, with --run, three --particles)")
    plane = checkpoint_plane(ckpts, args.resolution, args.margin, options, args.allow_mask_union, partial) \
        if args.plane else None
    hull = hull_landscape(ckpts, args.samples, options, args.allow_mask_union)
    print("\n".join(f"C{i + 1}: {c.path} ({describe_checkpoint(c)})" for i, c in enumerate(ckpts)))
    print(f"BatchNorm: {hull.bn}; {hull.mask.describe()}")
    print(format_hull(hull))
    obj = hull.to_json()
    if plane is not None:
        if plane.resumed:
            print(f"plane: continued a partial scan ({plane.resumed} of {args.resolution ** 2} points from {partial})")
        for s, g in plane.grids.items():
            err = 100 * (1 - g["acc"])
            print(f"plane {s}: {args.resolution}x{args.resolution} grid, loss {g['loss'].min():.4f} .. "
                  f"{g['loss'].max():.4f}, error {err.min():.2f}% .. {err.max():.2f}%")
        obj["plane"] = plane.to_json()
    if args.json:
        write_json(args.json, obj)
    if args.plot:
        save_figure(plot_hull(hull) if plane is None else plot_plane(plane), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
