"""Mode connectivity on any ``torch.nn.Module``: the loss along a line, over a convex hull, on a plane.

Each function takes models of one architecture (modules; they are never modified), ``data`` (any
iterable of ``(inputs, targets)`` batches or an ``(X, y)`` pair, :mod:`landscape.batches`) and a
``loss_fn(outputs, targets) -> mean loss`` (default: cross-entropy of class logits), and evaluates the
mean loss over all samples of ``data`` at weight combinations theta(c) = sum_i c_i theta_i
(:mod:`landscape.combination`). When the outputs are class logits the error (1 - accuracy) is reported
too.

BatchNorm statistics are recomputed at every point on ``bn_data`` (default: the first 2048 samples of
``data``; ``bn_data=()`` or ``False`` combines the stored statistics like the weights); a model without
BatchNorm skips this at no cost. ``masks`` (``{parameter name: 0/1 tensor}``) are kept by every combined
point. The device is the models' (that of the first model's parameters).

* :func:`linear_barrier`: theta(lambda) = (1 - lambda) theta_a + lambda theta_b; the barrier of
  Frankle et al. 2020 (height above the chord) and ``barrier_max`` (above the higher endpoint).
  :func:`linear_barriers` measures that line on several named data sets (``{"train": ..., "test": ...}``)
  in one scan.
* :func:`hull_losses`: uniform Dirichlet(1, ..., 1) samples of the models' convex hull (the claim of
  SWAMP, Choi et al. 2024, that the particles' hull is low-loss).
* :func:`loss_plane`: the plane through three models (Garipov et al. 2018), Gram-Schmidt coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from core.evaluate import Evaluation
from landscape.batches import (
    MAX_HULL_SAMPLES,
    MAX_POINTS,
    MAX_RESOLUTION,
    ArgumentError,
    LossFn,
    batches,
    bn_batches,
    check_model,
)
from landscape.combination import Combination, even_batches, model_device

if TYPE_CHECKING:
    from landscape.matching import Alignment

HULL_STREAM = 0x4855  # keeps the hull's random stream apart from any other use of the same seed


def frankle_barrier(lambdas: Sequence[float], values: Sequence[float]) -> float:
    """max_lambda v(lambda) - ((1 - lambda) v(0) + lambda v(1))  (Frankle et al. 2020)."""
    lam, v = np.asarray(lambdas, dtype=float), np.asarray(values, dtype=float)
    return float(np.max(v - (v[0] + lam * (v[-1] - v[0]))))


def max_barrier(values: Sequence[float]) -> float:
    """max_lambda v(lambda) - max(v(0), v(1))."""
    v = np.asarray(values, dtype=float)
    return float(v.max() - max(v[0], v[-1]))


def simplex_samples(n: int, samples: int, seed: int) -> np.ndarray:
    """``samples`` x ``n`` rows drawn uniformly from the simplex (Dirichlet(1, ..., 1)), each summing to 1."""
    rng = np.random.default_rng([seed, HULL_STREAM])
    rows = rng.dirichlet(np.ones(n), size=samples)
    return rows / rows.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class PlaneGeometry:
    """Plane coordinates of the three models (P_1 = origin, P_2 on the first axis)."""

    vertices: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]

    def coefficients(self, x: float, y: float) -> tuple[float, float, float]:
        """Barycentric coordinates (c_1, c_2, c_3) of (x, y); one-hot exactly at the vertices."""
        (p2x, _), (p3x, p3y) = self.vertices[1], self.vertices[2]
        c3 = y / p3y
        c2 = (x - c3 * p3x) / p2x
        return 1.0 - c2 - c3, c2, c3

    def grid(self, resolution: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """``resolution`` evenly spaced x and y values over the bounding box widened by ``margin``."""
        xy = np.array(self.vertices)
        lo, hi = xy.min(0), xy.max(0)
        pad = margin * (hi - lo)
        return (np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution),
                np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution))


def plane_geometry(gram: np.ndarray) -> PlaneGeometry:
    """Gram-Schmidt coordinates from the 2 x 2 Gram matrix of u = theta_2 - theta_1, w = theta_3 - theta_1."""
    uu, uw, ww = float(gram[0, 0]), float(gram[0, 1]), float(gram[1, 1])
    norm_u = math.sqrt(max(uu, 0.0))
    along = uw / norm_u if norm_u > 0 else 0.0
    height = math.sqrt(max(ww - along * along, 0.0))
    if norm_u == 0.0 or height <= 1e-6 * max(norm_u, math.sqrt(ww)):
        raise ArgumentError("the three models are (nearly) collinear or equal, so no plane passes through them; "
                            "choose three that differ")
    return PlaneGeometry(((0.0, 0.0), (norm_u, 0.0), (along, height)))


def _count(value: Any, name: str, least: int, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ArgumentError(f"{name} must be an integer >= {least}, got {value!r}")
    if most is not None and value > most:
        raise ArgumentError(f"{name} must be at most {most:,} (each is one evaluation of the whole data), got "
                            f"{value:,}")
    return int(value)


class _Scan:
    """What every function shares: the combination, the named data sets on the models' device and the BN batches."""

    def __init__(self, models: Sequence[nn.Module], data: Mapping[str, Any], loss_fn: LossFn | None, bn_data: Any,
                 masks: Any, batch_size: int | None, least: int, exactly: int | None = None):
        if isinstance(models, nn.Module) or not isinstance(models, Sequence):
            raise ArgumentError(f"models must be a sequence of torch.nn.Module, got {type(models).__name__}")
        if exactly is not None and len(models) != exactly:
            raise ArgumentError(f"models must be exactly {exactly} modules, got {len(models)}")
        if len(models) < least:
            raise ArgumentError(f"models must be at least {least} modules, got {len(models)}")
        for n, m in enumerate(models):
            if not isinstance(m, nn.Module):
                raise ArgumentError(f"models[{n}] must be a torch.nn.Module, got {type(m).__name__}")
            check_model(m, f"models[{n}]")
        if loss_fn is not None and not callable(loss_fn):
            raise ArgumentError(f"loss_fn must be callable(outputs, targets) -> mean loss, got {loss_fn!r}")
        self.combination = Combination(models[0], [m.state_dict() for m in models], masks)
        self.device = model_device(models[0])
        self.data = {name: batches(d, batch_size, name, self.device) for name, d in data.items()}
        self.loss_fn = loss_fn
        self.bn = None
        if self.combination.has_batchnorm:
            chosen = bn_batches(bn_data, next(iter(self.data.values())), batch_size)
            self.bn = None if chosen is None else even_batches(list(chosen))
            if self.bn is not None and not self.bn:
                raise ArgumentError("bn_data is empty: it yielded no batch")
        self.bn_note = ("no BatchNorm layers: nothing to recalibrate" if not self.combination.has_batchnorm else
                        "stored BatchNorm statistics combined like the weights" if self.bn is None else
                        f"recalibrated on {sum(len(y) for _, y in self.bn)} samples")

    def own(self, count: int) -> list[dict[str, Evaluation]]:
        """Every model's own losses: its weights and its stored BatchNorm statistics (no recomputation)."""
        return self.combination.evaluate(np.eye(count).tolist(), self.data, self.loss_fn, progress=False)

    def points(self, rows: Sequence[Sequence[float]], desc: str, progress: bool | None) -> list[dict[str, Evaluation]]:
        return self.combination.evaluate(rows, self.data, self.loss_fn, self.bn, desc=desc, progress=progress)


def _errors(points: Sequence[Evaluation]) -> tuple[float, ...] | None:
    return None if points[0].acc is None else tuple(1.0 - p.acc for p in points)


def _accuracies(points: Sequence[Evaluation]) -> tuple[float, ...] | None:
    return None if points[0].acc is None else tuple(p.acc for p in points)


def _one(data: Any) -> dict[str, Any]:
    """``data`` as the one named data set of a scan: ``data`` is its name in every message."""
    return {"data": data}


@dataclass(frozen=True)
class LinearBarrier:
    """The loss (and error, for class logits) along theta(lambda) = (1 - lambda) theta_a + lambda theta_b.

    ``barrier``: max_lambda L(lambda) - ((1 - lambda) L(0) + lambda L(1)) (Frankle et al. 2020);
    ``barrier_max``: max_lambda L(lambda) - max(L(0), L(1)); both >= 0 and 0 for a = b. ``errors`` and
    ``error_barrier`` / ``error_barrier_max`` (fractions) are None unless the outputs are class logits;
    ``accuracies`` are then the accuracies the errors are 1 minus (as measured, not recomputed from them).

    The endpoints of the line are a and b with BatchNorm recomputed like every other point, so
    ``losses[0]`` is a's loss after recomputation, which differs from a's own loss when a has BatchNorm.
    ``endpoint_losses`` (``endpoint_errors``, ``endpoint_accuracies``) are a's and b's own: their weights with
    their stored statistics (equal to ``losses[0]`` and ``losses[-1]`` when nothing is recomputed).
    """

    lambdas: tuple[float, ...]
    losses: tuple[float, ...]
    barrier: float
    barrier_max: float
    errors: tuple[float, ...] | None
    error_barrier: float | None
    error_barrier_max: float | None
    bn: str
    alignment: Alignment | None = None
    endpoint_losses: tuple[float, float] | None = None
    endpoint_errors: tuple[float, float] | None = None
    accuracies: tuple[float, ...] | None = None
    endpoint_accuracies: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        def listed(values: tuple[float, ...] | None) -> list[float] | None:
            return None if values is None else list(values)

        out = {"lambdas": list(self.lambdas), "losses": list(self.losses), "barrier": self.barrier,
               "barrier_max": self.barrier_max, "errors": listed(self.errors),
               "error_barrier": self.error_barrier, "error_barrier_max": self.error_barrier_max, "bn": self.bn,
               "endpoint_losses": listed(self.endpoint_losses), "endpoint_errors": listed(self.endpoint_errors),
               "accuracies": listed(self.accuracies), "endpoint_accuracies": listed(self.endpoint_accuracies)}
        return out if self.alignment is None else {**out, "alignment": self.alignment.to_json()}


def _line(lambdas: tuple[float, ...], values: Sequence[Evaluation], ends: Sequence[Evaluation], bn: str,
          alignment: Alignment | None) -> LinearBarrier:
    """Both barriers of the loss (and error) at ``lambdas``, with a's and b's own ``ends``."""
    losses, errors = tuple(p.loss for p in values), _errors(values)
    end_errors, end_accuracies = _errors(ends), _accuracies(ends)
    return LinearBarrier(lambdas, losses, frankle_barrier(lambdas, losses), max_barrier(losses), errors,
                         None if errors is None else frankle_barrier(lambdas, errors),
                         None if errors is None else max_barrier(errors), bn, alignment,
                         (ends[0].loss, ends[1].loss), end_errors, _accuracies(values), end_accuracies)


def linear_barrier(a: nn.Module, b: nn.Module, data: Any, *, loss_fn: LossFn | None = None, points: int = 11,
                   bn_data: Any = None, masks: Any = None, batch_size: int | None = None,
                   progress: bool | None = None, align: bool | str = False) -> LinearBarrier:
    """Loss barrier on the straight line between two models (linear mode connectivity, Frankle et al. 2020).

    Evaluates theta(lambda) = (1 - lambda) theta_a + lambda theta_b at ``points`` evenly spaced lambda in
    [0, 1] (both ends included, each the model itself bit for bit) and measures
    ``barrier = max_lambda [L(lambda) - ((1 - lambda) L(0) + lambda L(1))]``. With ``align``, b's hidden
    units are first permuted to match a's (:func:`landscape.matching.align`; Entezari et al. 2022, Ainsworth
    et al. 2023), which leaves b's function unchanged, and the line runs from a to the aligned b.
    :func:`linear_barriers` measures the same line on several data sets at once.

    Args:
        a, b: modules of one architecture (same state_dict names, shapes, dtypes); never modified.
        data: iterable of ``(inputs, targets)`` batches, or an ``(X, y)`` pair cut into ``batch_size``.
        loss_fn: ``loss_fn(outputs, targets)`` -> mean loss of a batch; default cross-entropy.
        points: number of lambdas, >= 2.
        bn_data: batches that recompute BatchNorm at every lambda (default: first 2048 samples of
            ``data``; ``()`` or ``False``: combine the stored statistics).
        masks: ``{parameter name: 0/1 tensor}`` kept by every point.
        batch_size: batch size when ``data`` is an ``(X, y)`` pair (default 1000).
        progress: progress bar (None: only on a terminal).
        align: False; True or ``"weights"`` (weight matching) or ``"activations"`` (activation matching on
            ``data``). ``masks`` are then taken as a's: every point keeps their union with b's permuted ones.

    Returns:
        :class:`LinearBarrier` (with ``alignment`` when aligned): ``losses[0]`` and ``losses[-1]`` are the
        endpoints with BatchNorm recomputed as at every lambda; ``endpoint_losses`` are a's and b's own.

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> result = linear_barrier(a, b, (X, y), points=5)
        >>> len(result.losses), result.barrier >= 0, linear_barrier(a, a, (X, y)).barrier
        (5, True, 0.0)
    """
    return linear_barriers(a, b, _one(data), loss_fn=loss_fn, points=points, bn_data=bn_data, masks=masks,
                           batch_size=batch_size, progress=progress, align=align)["data"]


def linear_barriers(a: nn.Module, b: nn.Module, data: Mapping[str, Any], *, loss_fn: LossFn | None = None,
                    points: int = 11, bn_data: Any = None, masks: Any = None, batch_size: int | None = None,
                    progress: bool | None = None, align: bool | str = False) -> dict[str, LinearBarrier]:
    """:func:`linear_barrier` on several named data sets at once (e.g. ``{"train": ..., "test": ...}``): one
    :class:`LinearBarrier` per name, from one scan of the line, where each point is loaded and its BatchNorm
    recomputed once for all data sets.

    Args:
        data: ``{name: data}``, each as ``data`` of :func:`linear_barrier` (the name stands for it in messages);
            at least one. ``bn_data`` defaults to the first 2048 samples of the first, and activation
            matching (``align="activations"``) runs on the first.
        a, b, loss_fn, points, bn_data, masks, batch_size, progress, align: as in :func:`linear_barrier`.

    Returns:
        ``{name: LinearBarrier}``, in the order of ``data``.

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> both = linear_barriers(a, b, {"train": (X[:48], y[:48]), "test": (X[48:], y[48:])}, points=3)
        >>> both["test"] == linear_barrier(a, b, (X[48:], y[48:]), points=3)
        True
    """
    points = _count(points, "points", 2, MAX_POINTS)
    if not isinstance(data, Mapping) or not data:
        raise ArgumentError(f"data must be a non-empty mapping of names to data sets, got {type(data).__name__}")
    if align not in (False, True, "weights", "activations"):
        raise ArgumentError(f"align must be False, True, 'weights' or 'activations', got {align!r}")
    alignment = None
    if align:
        from landscape.matching import align as align_models  # permutations: loaded only when aligning

        alignment = align_models(a, b, method="weights" if align is True else align,
                                 data=next(iter(data.values())), masks=masks, batch_size=batch_size)
        b = alignment.model
        if masks is not None:
            masks = {k: alignment.masks[k].maximum(m.to(alignment.masks[k])) for k, m in masks.items()}
    scan = _Scan([a, b], data, loss_fn, bn_data, masks, batch_size, 2, exactly=2)
    lambdas = tuple(round(float(x), 12) for x in np.linspace(0.0, 1.0, points))
    values = scan.points([(1.0 - lam, lam) for lam in lambdas], "lambda", progress)
    ends = [values[0], values[-1]] if scan.bn is None else scan.own(2)
    return {name: _line(lambdas, [v[name] for v in values], [e[name] for e in ends], scan.bn_note, alignment)
            for name in scan.data}


@dataclass(frozen=True)
class HullLosses:
    """Losses at uniform samples of the convex hull of N models: ``coefficients[s]`` (summing to 1) gives
    sample s, whose mean loss is ``losses[s]``; ``vertex_losses[i]`` is model i evaluated as every sample is,
    with BatchNorm recomputed (so it differs from model i's own loss, ``mean_loss(models[i], data)``, when the
    models have BatchNorm; equal to it when nothing is recomputed). Errors (fractions) as well when the
    outputs are class logits, else None."""

    coefficients: tuple[tuple[float, ...], ...]
    losses: tuple[float, ...]
    vertex_losses: tuple[float, ...]
    errors: tuple[float, ...] | None
    vertex_errors: tuple[float, ...] | None
    seed: int
    bn: str

    def to_json(self) -> dict[str, Any]:
        return {"coefficients": [list(c) for c in self.coefficients], "losses": list(self.losses),
                "vertex_losses": list(self.vertex_losses),
                "errors": None if self.errors is None else list(self.errors),
                "vertex_errors": None if self.vertex_errors is None else list(self.vertex_errors),
                "seed": self.seed, "bn": self.bn}


def hull_losses(models: Sequence[nn.Module], data: Any, *, samples: int = 32, seed: int = 0,
                loss_fn: LossFn | None = None, bn_data: Any = None, masks: Any = None,
                batch_size: int | None = None, progress: bool | None = None) -> HullLosses:
    """Mean loss over uniform samples of the convex hull of ``models`` (Dirichlet(1, ..., 1) weights).

    SWAMP (Choi et al. 2024) claims its particles' hull is low-loss; compare ``max(losses)`` with
    ``max(vertex_losses)``. Sampling is seeded (NumPy ``default_rng([seed, HULL_STREAM])``).

    Args:
        models: at least two modules of one architecture; never modified.
        data, loss_fn, bn_data, masks, batch_size, progress: as in :func:`linear_barrier`.
        samples: hull samples, >= 1.
        seed: seed of the samples.

    Returns:
        :class:`HullLosses`.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(4, 3)
        >>> X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> hull = hull_losses([net, net, net], (X, y), samples=4)
        >>> len(set(hull.losses)), len(hull.coefficients[0])  # identical models: a flat hull
        (1, 3)
    """
    samples = _count(samples, "samples", 1, MAX_HULL_SAMPLES)
    seed = _count(seed, "seed", 0)
    scan = _Scan(models, _one(data), loss_fn, bn_data, masks, batch_size, 2)
    n = len(models)
    coefficients = tuple(tuple(float(x) for x in row) for row in simplex_samples(n, samples, seed))
    values = [v["data"] for v in scan.points([tuple(np.eye(n)[i]) for i in range(n)] + list(coefficients), "hull",
                                             progress)]
    vertices, hull = values[:n], values[n:]
    return HullLosses(coefficients, tuple(p.loss for p in hull), tuple(p.loss for p in vertices), _errors(hull),
                      _errors(vertices), seed, scan.bn_note)


@dataclass(frozen=True)
class PlaneLosses:
    """Losses on the R x R grid of the plane through three models: ``losses[iy][ix]`` at ``(xs[ix], ys[iy])``;
    ``vertices[i]`` are model i's plane coordinates; ``errors`` likewise for class logits, else None."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    losses: tuple[tuple[float, ...], ...]
    errors: tuple[tuple[float, ...], ...] | None
    vertices: tuple[tuple[float, float], ...]
    margin: float
    bn: str

    def to_json(self) -> dict[str, Any]:
        return {"xs": list(self.xs), "ys": list(self.ys), "losses": [list(r) for r in self.losses],
                "errors": None if self.errors is None else [list(r) for r in self.errors],
                "vertices": [list(v) for v in self.vertices], "margin": self.margin, "bn": self.bn}


def loss_plane(models: Sequence[nn.Module], data: Any, *, resolution: int = 21, margin: float = 0.2,
               loss_fn: LossFn | None = None, bn_data: Any = None, masks: Any = None,
               batch_size: int | None = None, progress: bool | None = None) -> PlaneLosses:
    """Mean loss on the plane through exactly three models (Garipov et al. 2018, section 2).

    With u = theta_2 - theta_1 and w = theta_3 - theta_1 over the parameters, Gram-Schmidt gives the
    orthonormal e_1 = u/|u|, e_2 = w_perp/|w_perp|; the point (x, y) is theta_1 + x e_1 + y e_2, evaluated
    as the affine combination with its barycentric coordinates, so each model's vertex gives it back
    exactly. The grid spans the triangle's bounding box widened by ``margin`` times its extent.

    Args:
        models: exactly three modules of one architecture, not collinear; never modified.
        resolution: grid points per axis, >= 2.
        margin: finite, >= 0.
        data, loss_fn, bn_data, masks, batch_size, progress: as in :func:`linear_barrier`.

    Returns:
        :class:`PlaneLosses`.

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> nets = [torch.nn.Linear(4, 3) for _ in range(3)]
        >>> X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> plane = loss_plane(nets, (X, y), resolution=3)
        >>> len(plane.losses), len(plane.losses[0]), plane.vertices[0]
        (3, 3, (0.0, 0.0))
    """
    resolution = _count(resolution, "resolution", 2, MAX_RESOLUTION)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin) or margin < 0:
        raise ArgumentError(f"margin must be a finite number >= 0, got {margin!r}")
    scan = _Scan(models, _one(data), loss_fn, bn_data, masks, batch_size, 3, exactly=3)
    geometry = plane_geometry(scan.combination.displacement_gram())
    xs, ys = geometry.grid(resolution, float(margin))
    values = [v["data"] for v in scan.points([geometry.coefficients(x, y) for y in ys for x in xs], "plane",
                                             progress)]
    losses = tuple(tuple(values[iy * resolution + ix].loss for ix in range(resolution)) for iy in range(resolution))
    errors = _errors(values)
    grid_errors = None if errors is None else tuple(
        tuple(errors[iy * resolution + ix] for ix in range(resolution)) for iy in range(resolution))
    return PlaneLosses(tuple(float(x) for x in xs), tuple(float(y) for y in ys), losses, grid_errors,
                       geometry.vertices, float(margin), scan.bn_note)
