"""Linear mode connectivity between two checkpoints: ``python -m landscape.barrier A B``.

Along theta(lambda) = (1 - lambda) theta_A + lambda theta_B at K evenly spaced lambda in [0, 1]
(0 and 1 included), with L the loss or the error 1 - acc on a split:

* ``barrier`` (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis"):
  max_lambda L(lambda) - ((1 - lambda) L(0) + lambda L(1)), the height above the chord;
* ``barrier_max`` (the seed's definition): max_lambda L(lambda) - max(L(0), L(1)).

Both are >= 0 (lambda = 0 contributes 0) and exactly 0 for identical checkpoints. The numbers are those of
:func:`landscape.connectivity.linear_barriers` on the checkpoints' splits: this tool rebuilds the models, the
splits and the BatchNorm batches from the files (:class:`landscape.tools.artifacts.CheckpointSet`). BatchNorm
statistics are recomputed at every lambda, the endpoints included, so that all points are treated
alike; ``--bn-recal 0`` keeps the endpoints' stored statistics. With a shared mask theta(lambda) keeps it;
different masks are refused unless ``--allow-mask-union`` (implied by
``--consecutive``, whose cycles differ by construction), as in ``landscape.tools.subspace``: the masked weights
are then interpolated as they are and the union density is reported.

Run-level modes: every particle pair of one cycle (``--run DIR --cycle K``, heatmap) and the
solutions of consecutive cycles (``--run DIR --consecutive``, line plot).

JSON (docs/format.md section 4) plus: ``points``, ``mask`` ({shared, density (union), densities, note}),
``device``, ``endpoints`` (per split {loss: [A, B], acc: [A, B]}: the checkpoints as stored, with their
own BatchNorm statistics, which the curve's lambda = 0 and 1 points are not when BatchNorm is recomputed);
run-level files hold {run, mode, cycle, checkpoints, pairs: [{i, j, <pair JSON>}]}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.artifacts.outputs import check_outputs
from core.errors import ArgumentParser, UserError, run_cli
from landscape.connectivity import LinearBarrier, linear_barriers
from landscape.matching import METHOD_NAMES, METHODS, Alignment
from landscape.tools.artifacts import (
    SPLITS,
    CheckpointLike,
    CheckpointSet,
    EvalOptions,
    MaskInfo,
    Series,
    describe_checkpoint,
    load_compatible,
    mask_info,
    run_particles,
    run_solutions,
    shared_mask_or_refuse,
)
from landscape.tools.cli import (
    MAX_POINTS,
    add_eval_arguments,
    check_at_most,
    eval_options,
    open_checkpoint,
    split_cells,
    split_header,
    write_json,
)
from landscape.tools.plots import (
    checkpoint_label,
    decimals_for,
    format_number,
    heatmap_panels,
    line_panels,
    save_figure,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BOTH_SPLITS = EvalOptions(SPLITS)


@dataclass(frozen=True)
class Barrier:
    """A barrier height for the loss and for the error (a fraction)."""

    loss: float
    error: float

    def to_json(self) -> dict[str, float]:
        return {"loss": self.loss, "error": self.error}


class _SplitLines:
    """A line measured on each split (``lines``: :class:`landscape.connectivity.LinearBarrier` per split), read
    per split: its curves, both barriers of the loss and the error, and the JSON of those."""

    lines: dict[str, LinearBarrier]

    @property
    def lambdas(self) -> tuple[float, ...]:
        return next(iter(self.lines.values())).lambdas

    @property
    def curves(self) -> dict[str, Series]:
        return {s: Series(line.losses, line.accuracies) for s, line in self.lines.items()}

    @property
    def barrier(self) -> dict[str, Barrier]:
        return {s: Barrier(line.barrier, line.error_barrier) for s, line in self.lines.items()}

    @property
    def barrier_max(self) -> dict[str, Barrier]:
        return {s: Barrier(line.barrier_max, line.error_barrier_max) for s, line in self.lines.items()}

    def _curves_json(self) -> dict:
        return {**{s: c.to_json() for s, c in self.curves.items()},
                "barrier": {s: b.to_json() for s, b in self.barrier.items()},
                "barrier_max": {s: b.to_json() for s, b in self.barrier_max.items()}}


@dataclass(frozen=True)
class BarrierResult(_SplitLines):
    """:func:`landscape.connectivity.linear_barriers` of two checkpoint files on each split (``lines``), with
    what is about the files: their paths, their masks, the device and (``aligned``) the line to B aligned to A.
    ``bn`` says how BatchNorm was treated, in the tool's words (``--bn-recal``).

    ``curves``, ``barrier`` and ``barrier_max`` read ``lines`` per split; ``endpoints`` are A's and B's own
    losses and accuracies (their stored BatchNorm statistics), which the curve's ends are not when BatchNorm is
    recomputed at every lambda."""

    a: str
    b: str
    lines: dict[str, LinearBarrier]
    bn: str
    mask: MaskInfo
    device: str
    aligned: AlignedLine | None = None

    @property
    def endpoints(self) -> dict[str, Series]:
        return {s: Series(line.endpoint_losses, line.endpoint_accuracies) for s, line in self.lines.items()}

    def to_json(self) -> dict:
        out = {"a": self.a, "b": self.b, "points": len(self.lambdas), "lambdas": list(self.lambdas),
               **self._curves_json(), "bn": self.bn, "mask": self.mask.to_json(), "device": self.device,
               "endpoints": {s: c.to_json() for s, c in self.endpoints.items()}}
        return out if self.aligned is None else {**out, "aligned": self.aligned.to_json()}


@dataclass(frozen=True)
class AlignedLine(_SplitLines):
    """The same line with B's hidden units first permuted to match A (Git Re-Basin, Ainsworth et al. 2023):
    its lines per split, the masks (A's and B's permuted one) and the alignment."""

    lines: dict[str, LinearBarrier]
    mask: MaskInfo
    alignment: Alignment

    def to_json(self) -> dict:
        return {**self._curves_json(), "mask": self.mask.to_json(), "alignment": self.alignment.summary()}


def _lines(inputs: CheckpointSet, points: int) -> dict[str, LinearBarrier]:
    """:func:`landscape.connectivity.linear_barriers` between the two checkpoints of ``inputs`` on its splits."""
    a, b = inputs.models()
    return linear_barriers(a, b, inputs.splits, points=points, bn_data=inputs.bn_data,
                           progress=inputs.options.progress)


def checkpoint_barrier(a: CheckpointLike, b: CheckpointLike, points: int = 11,
                       options: EvalOptions = BOTH_SPLITS, allow_mask_union: bool = False,
                       align: str | None = None) -> BarrierResult:
    """:func:`landscape.connectivity.linear_barriers` for two checkpoint files (model and data rebuilt from
    them): theta(lambda) at ``points`` lambdas on ``options.splits`` (the CLI's JSON), both barriers.

    Checkpoints with different masks are refused unless ``allow_mask_union`` (as in
    :func:`landscape.tools.subspace.hull_landscape`): their pruned weights are then interpolated as they are.
    With ``align`` (``"weights"`` or ``"activations"``, :func:`landscape.tools.align.align_checkpoints`) the line
    is measured a second time after aligning B to A (``aligned``); B's mask is permuted with its weights,
    so that line interpolates the masked weights as they are.
    """
    if points < 2:
        raise UserError("--points must be at least 2 (lambda = 0 and 1)")
    check_at_most(points, MAX_POINTS, "--points")
    if align is not None and align not in METHODS:
        raise UserError(f"--align-method must be one of {', '.join(METHODS)}, not {align!r}")
    ckpts = load_compatible([a, b])
    shared_mask_or_refuse(ckpts, allow_mask_union)
    inputs = CheckpointSet(ckpts, options)
    lines = _lines(inputs, points)
    aligned = None
    if align is not None:
        from landscape.tools.align import align_checkpoints

        result = align_checkpoints(ckpts[0], ckpts[1], method=align, seed=options.seed, device=options.device,
                                   data_dir=options.data_dir)
        pair = (ckpts[0], result.checkpoint)
        aligned = AlignedLine(_lines(CheckpointSet(pair, options), points), mask_info(pair), result.alignment)
    return BarrierResult(ckpts[0].path, ckpts[1].path, lines, inputs.bn, mask_info(ckpts), str(inputs.device),
                         aligned)


@dataclass(frozen=True)
class BarrierSet:
    """Barriers of several checkpoint pairs of one run: ``pairs[n] = (i, j, result)``."""

    run: str
    mode: str
    cycle: int | None
    checkpoints: tuple[str, ...]
    pairs: tuple[tuple[int, int, BarrierResult], ...]

    def matrix(self, split: str, metric: str = "loss") -> np.ndarray:
        """Symmetric matrix of Frankle barriers between checkpoints (NaN where not measured, 0 on the
        diagonal: a checkpoint has no barrier to itself)."""
        n = len(self.checkpoints)
        out = np.full((n, n), np.nan)
        np.fill_diagonal(out, 0.0)
        for i, j, result in self.pairs:
            out[i, j] = out[j, i] = getattr(result.barrier[split], metric)
        return out

    def to_json(self) -> dict:
        return {"run": self.run, "mode": self.mode, "cycle": self.cycle, "checkpoints": list(self.checkpoints),
                "pairs": [{"i": i, "j": j, **r.to_json()} for i, j, r in self.pairs]}


def _barrier_set(run: str, mode: str, cycle: int | None, items: Sequence[CheckpointLike],
                 pairs: Sequence[tuple[int, int]], points: int, options: EvalOptions,
                 allow_mask_union: bool = False) -> BarrierSet:
    ckpts = load_compatible(items)
    results = tuple((i, j, checkpoint_barrier(ckpts[i], ckpts[j], points, options, allow_mask_union)) for i, j in pairs)
    return BarrierSet(str(run), mode, cycle, tuple(c.path for c in ckpts), results)


def cycle_barriers(run: str, cycle: int, points: int = 11, options: EvalOptions = BOTH_SPLITS,
                   load: Callable[[Path], CheckpointLike] | None = None) -> BarrierSet:
    """Barriers between every pair of particles of one cycle (they share the cycle's mask); ``load`` opens each
    checkpoint file (default: as it is, e.g. the command line's ``open_checkpoint`` applies its flags)."""
    paths = run_particles(run, cycle)
    if len(paths) < 2:
        raise UserError(f"cycle {cycle} of {run} has one particle; pairs need at least two")
    return _barrier_set(run, "pairs", cycle, [load(p) for p in paths] if load else paths,
                        list(combinations(range(len(paths)), 2)), points, options)


def consecutive_barriers(run: str, points: int = 11, options: EvalOptions = BOTH_SPLITS,
                         load: Callable[[Path], CheckpointLike] | None = None) -> BarrierSet:
    """Barriers between the solutions (``average.safetensors``) of cycles k and k + 1; their masks differ
    by construction (cycle k + 1 prunes cycle k's), so the masked weights are interpolated as they are.
    ``load`` as in :func:`cycle_barriers`."""
    paths = run_solutions(run)
    if len(paths) < 2:
        raise UserError(f"{run} has one finished cycle; consecutive barriers need at least two")
    return _barrier_set(run, "consecutive", None, [load(p) for p in paths] if load else paths,
                        [(k, k + 1) for k in range(len(paths) - 1)], points, options, allow_mask_union=True)


BARRIER_DEFINITIONS = (
    "barrier: max over lambda of L(lambda) minus the chord (1 - lambda) L(0) + lambda L(1) (Frankle et al. 2020)",
    "barrier_max: max over lambda of L(lambda) minus max(L(0), L(1)), the height above the higher endpoint")


def _percent(values: Sequence[float]) -> list[float]:
    return [100 * v for v in values]


def plot_barrier(result: BarrierResult) -> Figure:
    """Loss and error (%) against lambda, one line per split (and per split of the aligned line) labelled
    with its barriers, every number of a panel with the same decimals."""
    lines = [("", result)] + ([] if result.aligned is None else [(" aligned", result.aligned)])
    panels = {}
    for metric, scale, unit in (("loss", 1.0, ""), ("error", 100.0, "%")):
        heights = [scale * getattr(getattr(x, kind)[s], metric) for _, x in lines
                   for kind in ("barrier", "barrier_max") for s in x.curves]
        places = decimals_for(heights)

        def number(value: float, scale: float = scale, unit: str = unit, places: int = places) -> str:
            return format_number(scale * value, places) + unit

        panels[metric] = {
            f"{s}{tag}: barrier {number(getattr(x.barrier[s], metric))}, "
            f"max {number(getattr(x.barrier_max[s], metric))}":
            [scale * v for v in getattr(c, metric)] for tag, x in lines for s, c in x.curves.items()}
    a, b = (checkpoint_label(p).replace(" ", "\u00a0") for p in (result.a, result.b))
    return line_panels(result.lambdas, panels, "λ (interpolation weight of B)",
                       title=f"linear interpolation from A (λ = 0) to B (λ = 1)\nA\u00a0=\u00a0{a}, "
                             f"B\u00a0=\u00a0{b}",  # breaks between the names only
                       ylabels={"loss": "loss (cross-entropy)", "error": "error (%)"},
                       legend_title="barrier: above the chord; max: above the higher end",
                       caption=f"BatchNorm: {result.bn}; {result.mask.describe()}.\n" + "; ".join(BARRIER_DEFINITIONS))


def plot_barrier_set(bset: BarrierSet) -> Figure:
    """Heatmaps of pairwise barriers (``pairs``; each pair once, the matrix being symmetric) or barriers
    against the sparsity of the later solution (``consecutive``); error in %."""
    splits = list(bset.pairs[0][2].barrier)
    first = bset.pairs[0][2]
    run = Path(bset.run).name or bset.run
    scale = {"loss": 1.0, "error": 100.0}
    if bset.mode == "pairs":
        names = {(s, m): f"{s} {m} barrier" for s in splits for m in ("loss", "error")}
        panels = {name: scale[m] * bset.matrix(s, m) for (s, m), name in names.items()}
        units = {name: f"{s} loss barrier" if m == "loss" else f"{s} error barrier (%)"
                 for (s, m), name in names.items()}
        labels = [str(int(n)) if (n := Path(p).stem.removeprefix("particle_")).isdigit() else n
                  for p in bset.checkpoints]
        caption = (f"Cell (i, j): barrier on the line from {run}/cycle_{bset.cycle:02d}/particle_i (λ = 0) to "
                   f"particle_j (λ = 1); each pair is drawn once (i < j), as the barrier from j to i is the same. "
                   f"BatchNorm: {first.bn}; {first.mask.describe()}.\n{BARRIER_DEFINITIONS[0]}")
        return heatmap_panels(panels, labels, title=f"barriers between the particles of cycle {bset.cycle} of {run} "
                              "(Frankle et al. 2020)", xlabel="particle j", ylabel="particle i",
                              colorbar_labels=units, vmin=0.0, caption=caption, upper=True, columns=2)
    sparsity = [100 * (1 - r.mask.densities[-1]) for _, _, r in bset.pairs]
    panels = {f"{m} barrier": {s: [scale[m] * getattr(r.barrier[s], m) for _, _, r in bset.pairs] for s in splits}
              for m in ("loss", "error")}
    masks = "masks of consecutive cycles differ: the pruned weights are interpolated as they are" \
        if not all(r.mask.shared for _, _, r in bset.pairs) else first.mask.describe()
    places = decimals_for(sparsity, significant=3, most=2)
    ticks = [f"{format_number(x, places)}\n(k = {j})" for x, (_, j, _) in zip(sparsity, bset.pairs, strict=True)]
    return line_panels(sparsity, panels, "sparsity of the solution of cycle k (%)", xticklabels=ticks,
                       ylabels={"loss barrier": "loss barrier", "error barrier": "error barrier (%)"}, ymin=0.0,
                       title=f"barriers between consecutive cycle solutions of {run}",
                       caption=f"Point k: barrier on the line from {run}/cycle_(k-1)/average (λ = 0) to "
                               f"{run}/cycle_k/average (λ = 1). BatchNorm: {first.bn}; {masks}.\n"
                               + BARRIER_DEFINITIONS[0])


def format_result(result: BarrierResult) -> str:
    """The curve as a table, then both barriers per split; with an aligned line, its columns beside the raw
    ones (after ``|``) and its barriers below."""
    splits = list(result.curves)
    line = result.aligned
    lines = [("", result)] if line is None else [("raw ", result), ("aligned ", line)]
    rows = [] if line is None else [f"{'':>6} {'raw (B as trained)':<{21 * len(splits)}} | B aligned to A "
                                    f"({METHOD_NAMES[line.alignment.method]})"]
    rows.append(f"{'lambda':>6}" + " |".join(split_header(splits) for _ in lines))
    for n, lam in enumerate(result.lambdas):
        cells = " |".join(split_cells([(x.curves[s].loss[n], x.curves[s].error[n]) for s in splits]) for _, x in lines)
        rows.append(f"{lam:>6.3f}{cells}")
    for prefix, x in lines:
        for name, values in (("barrier (Frankle et al. 2020)", x.barrier), ("barrier_max", x.barrier_max)):
            rows.append(f"{prefix}{name}: " + "; ".join(
                f"{s} loss {values[s].loss:.4f} error {100 * values[s].error:.2f}%" for s in splits))
    if line is not None:
        done = line.alignment
        rows.append(f"alignment: {METHOD_NAMES[done.method]}, objective {done.objectives[0]:.4f} -> "
                    f"{done.objectives[-1]:.4f} ({done.iterations} iterations); aligned B: {line.mask.describe()}")
    return "\n".join([*rows, *(f"  {text}" for text in BARRIER_DEFINITIONS)])


def format_endpoints(result: BarrierResult) -> str:
    """A's and B's own losses and errors (stored BatchNorm statistics), which the lambda = 0 and 1 rows are not
    when BatchNorm is recomputed at every point."""
    return "A and B as stored (their own BatchNorm statistics; the lambda = 0 and 1 rows are recomputed): " + "; ".join(
        f"{s} loss {c.loss[0]:.4f} / {c.loss[1]:.4f}, error {100 * c.error[0]:.2f}% / {100 * c.error[1]:.2f}%"
        for s, c in (result.endpoints or {}).items())


def format_set(bset: BarrierSet) -> str:
    """One line per pair: its checkpoints, their union density and Frankle barriers of each split."""
    splits = list(bset.pairs[0][2].barrier)
    rows = [f"{'i':>3} {'j':>3} {'density':>8}" + split_header(splits)]
    for i, j, r in bset.pairs:
        values = split_cells([(r.barrier[s].loss, r.barrier[s].error) for s in splits])
        rows.append(f"{i:>3d} {j:>3d} {r.mask.density:>8.4f}{values}")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m landscape.barrier",
        description="Loss barrier on the straight line between two checkpoints (linear mode connectivity, "
                    "Frankle et al. 2020), or between all particles of a cycle / consecutive cycle solutions.")
    parser.add_argument("checkpoints", nargs="*", metavar="CKPT", help="two checkpoints A and B")
    parser.add_argument("--points", type=int, default=11, metavar="K", help="lambdas in [0, 1] (default 11)")
    parser.add_argument("--run", default=None, metavar="DIR", help="a run directory (with --cycle or --consecutive)")
    parser.add_argument("--cycle", type=int, default=None, metavar="K", help="all particle pairs of cycle K")
    parser.add_argument("--consecutive", action="store_true",
                        help="solutions of cycles k and k + 1 (their masks differ: implies --allow-mask-union)")
    parser.add_argument("--allow-mask-union", action="store_true",
                        help="A and B may have different masks (their masked weights are interpolated as they are; "
                             "the union density is reported)")
    parser.add_argument("--align", action="store_true",
                        help="also measure the line after permuting B's hidden units to match A (Git Re-Basin, "
                             "Ainsworth et al. 2023) and report both barriers")
    parser.add_argument("--align-method", choices=METHODS, default="weights",
                        help="how --align matches units: weights or activations (default weights)")
    add_eval_arguments(parser, default_split="both")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = eval_options(args)
    check_outputs({"--json": args.json, "--plot": args.plot}, [*args.checkpoints, *([args.run] if args.run else [])],
                  {"--json": {"lambdas", "pairs"}})
    if args.run is None:
        if len(args.checkpoints) != 2 or args.cycle is not None or args.consecutive:
            raise UserError("give two checkpoints A B, or --run DIR with --cycle K or --consecutive")
        a, b = (open_checkpoint(p, args) for p in args.checkpoints)
        result = checkpoint_barrier(a, b, args.points, options, args.allow_mask_union,
                                    args.align_method if args.align else None)
        print(f"A: {a.path} ({describe_checkpoint(a)})\nB: {b.path} ({describe_checkpoint(b)})")
        print(f"BatchNorm: {result.bn}; {result.mask.describe()}")
        print(format_result(result))
        if result.bn.startswith("recalibrated"):
            print(format_endpoints(result))
        obj, make_figure = result.to_json(), lambda: plot_barrier(result)
    else:
        if args.align:
            raise UserError("--align compares two checkpoints A B; it does not work with --run")
        if args.checkpoints or (args.cycle is None) == (not args.consecutive):
            raise UserError("with --run give exactly one of --cycle K or --consecutive, and no checkpoint files")
        load = lambda path: open_checkpoint(path, args)  # noqa: E731  (--model/--dataset as for files)
        if args.consecutive:
            bset = consecutive_barriers(args.run, args.points, options, load)
        else:
            bset = cycle_barriers(args.run, args.cycle, args.points, options, load)
        first = bset.pairs[0][2]
        print(f"{bset.mode} barriers (Frankle et al. 2020) in {bset.run}; BatchNorm: {first.bn}")
        print("\n".join(f"{n:>3d}: {p}" for n, p in enumerate(bset.checkpoints)))
        print(format_set(bset))
        obj, make_figure = bset.to_json(), lambda: plot_barrier_set(bset)
    if args.json:
        write_json(args.json, obj)
    if args.plot:
        save_figure(make_figure(), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
