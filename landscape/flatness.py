"""Flatness that BatchNorm cannot fake: the Hessian trace with BatchNorm-preceded layers normalised by their norm.

A convolution or linear layer whose output goes straight into BatchNorm is scale-invariant: BatchNorm
divides by the standard deviation of its input, so theta_l -> alpha theta_l (weight and bias, alpha > 0)
leaves the training-mode function unchanged, and the eval-mode one too once the running statistics
follow (mean -> alpha mean, variance -> alpha^2 variance: what BatchNorm recalibration after weight
averaging produces; exactly so as eps -> 0). The loss at theta_l / alpha' is the same function of a
rescaled argument, so the Hessian block of that layer scales as

    H_ll(alpha theta) = H_ll(theta) / alpha^2,        tr H_ll -> tr H_ll / alpha^2,

and any weight norm change (weight decay, averaging particles, which shrinks the norm of the average)
changes the raw trace without changing the function: sharpness can be reparametrised away (Dinh, Pascanu,
Bengio & Bengio 2017). :func:`normalized_trace` removes that freedom for the BatchNorm symmetry,

    normalized = sum over BatchNorm-preceded layers l of ||theta_l||^2 tr H_ll,

which is invariant to alpha_l, layer by layer (``granularity="channel"``: sum over output channels c of
||theta_lc||^2 tr H_lc,lc, invariant to each channel's own scale, the full symmetry of BatchNorm, which
normalises every channel separately). It is the Hessian trace in the coordinates u_l = theta_l /
||theta_l||, the per-layer (per-filter) normalisation of Tsuzuku, Sato & Sugiyama 2020 ("normalized
flatness"); Kwon et al. 2021 (ASAM) normalise element-wise by |theta_i| for the same reason. The other
parameters (BatchNorm's own affine weights, layers not followed by BatchNorm, the classifier) are not
scale-invariant this way; their raw traces are reported separately (``other``), never mixed into
``normalized``. What is not removed: the rescaling symmetry of consecutive ReLU layers (Dinh et al. 2017,
theta_1 -> alpha theta_1, theta_2 -> theta_2 / alpha), which no normalisation layer fixes.

Which layers count (from the model's ``torch.fx`` graph): an ``nn.Conv1d/2d/3d`` or ``nn.Linear`` module
every call of which has exactly one user, a BatchNorm module call (``nn.BatchNorm1d/2d/3d``, ``SyncBatchNorm``)
taking that output as its input: nothing in between, no other use (a residual branch would see the scale).
LayerNorm and GroupNorm are not counted (in the toolkit's Transformer they normalise the residual stream,
not one layer's output); nor is a functional ``F.batch_norm``.

Estimation (Hutchinson 1989): the same K Rademacher probes v give per-probe terms v^T H v (the raw trace,
exactly the probes of :func:`landscape.curvature.hessian_trace` with the same seed, so ``raw`` and
``raw_per_layer`` equal its ``estimate`` and ``per_layer``) and v^T S H S v, S = diag(||theta_l||) on the
normalised coordinates and 1 elsewhere, whose normalised-layer parts estimate ||theta_l||^2 tr H_ll and
whose other parts estimate the other parameters' raw traces. Both products of a probe share one forward
pass and gradient graph per batch (2K Hessian-vector products; K when nothing is normalised). Rescaling
theta_l by alpha maps H to A^-1 H A^-1 and S to A S, so S H S and every part of the second estimate are
unchanged *probe by probe*: a rescaled network gives the same ``normalized`` and ``other`` to rounding for
the same seed (the raw per-probe terms are not: their cross-layer parts scale by 1/alpha). The standard
errors are those of the per-probe sums (exact for every reported sum, covariances included).

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Conv1d(1, 4, 3, bias=False), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
    ...                       nn.Linear(24, 3)).eval()
    >>> X, y = torch.randn(64, 1, 8), torch.randint(0, 3, (64,))
    >>> flat = normalized_trace(model, (X, y), probes=16)
    >>> flat.layers, sorted(flat.other_per_layer)
    (('0',), ['1.bias', '1.weight', '4.bias', '4.weight'])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx, nn

from core.averaging import has_batchnorm
from landscape.batches import ArgumentError, LossFn, check_finite
from landscape.curvature import HessianOperator
from landscape.trace import rademacher

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
GRANULARITIES = ("layer", "channel")


@dataclass(frozen=True)
class NormalizedTrace:
    """The BatchNorm-invariant flatness of one model, beside its raw Hessian trace.

    ``normalized``: sum over the layers in ``layers`` of ||theta_l||^2 tr H_ll (per channel with
    ``granularity="channel"``); 0.0 when no layer is followed by BatchNorm. ``other``: the raw trace of all
    other trainable parameters (``other_per_layer`` by parameter name), estimated from the same normalised
    probes, so that it too is unchanged, probe by probe, when a normalised layer is rescaled;
    ``normalized + other`` is the Hutchinson estimate of tr(S H S). ``raw``: tr H of every trainable
    parameter (``raw_per_layer``), :func:`landscape.curvature.hessian_trace`'s estimate for the same seed;
    without normalised layers ``other`` equals ``raw``.
    ``normalized_per_layer``: each normalised parameter's part (weight, bias); ``squared_norms``: ||theta_l||^2
    of each normalised layer (weight and bias together). Each ``*_stderr`` is the standard error of the mean
    of the per-probe terms (NaN with one probe). ``matvecs``: Hessian-vector products spent; ``samples``:
    data samples in the loss.
    """

    normalized: float
    normalized_stderr: float
    other: float
    other_stderr: float
    raw: float
    raw_stderr: float
    layers: tuple[str, ...]
    granularity: str
    squared_norms: dict[str, float]
    normalized_per_layer: dict[str, float]
    other_per_layer: dict[str, float]
    raw_per_layer: dict[str, float]
    probes: int
    seed: int
    matvecs: int
    samples: int

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON-ready values (lists for tuples, None for NaN)."""
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["layers"] = list(self.layers)
        for key in ("normalized_stderr", "other_stderr", "raw_stderr"):
            out[key] = finite(out[key])
        return out


def _only_batchnorm_user(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    users = list(node.users)
    if len(users) != 1:
        return False
    user = users[0]
    return (user.op == "call_module" and isinstance(modules.get(user.target), nn.modules.batchnorm._BatchNorm)
            and len(user.args) >= 1 and user.args[0] is node)


def batchnorm_layers(model: nn.Module) -> tuple[str, ...]:
    """Names of the conv/linear modules of ``model`` whose output goes only and directly into BatchNorm.

    The rule (module docstring): every call of the module in the ``torch.fx`` graph has one user, a
    BatchNorm module taking it as input. Modules in graph order.

    A model without BatchNorm has none (and is not traced).

    Raises:
        ArgumentError: ``torch.fx`` cannot trace ``model`` (data-dependent control flow and the like), which
            has BatchNorm.

    Example:
        >>> from torch import nn
        >>> batchnorm_layers(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)))
        ('0',)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not has_batchnorm(model):
        return ()
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # torch.fx raises many types for untraceable code
        raise ArgumentError(f"cannot find the layers followed by BatchNorm: torch.fx cannot trace model "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    modules = dict(model.named_modules())
    found: dict[str, bool] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), LAYERS):
            found[node.target] = found.get(node.target, True) and _only_batchnorm_user(node, modules)
    return tuple(name for name, ok in found.items() if ok)


def _coordinate_scales(model: nn.Module, op: HessianOperator, layers: tuple[str, ...], granularity: str
                       ) -> tuple[Tensor, dict[str, float], tuple[str, ...]]:
    """Per coordinate of ``op``: ||theta_l|| (or the channel's norm) on the normalised layers, 1 elsewhere;
    the squared norms by layer; the normalised parameter names."""
    params = dict(model.named_parameters())
    scales = torch.ones(op.dim, dtype=torch.float64)
    squared_norms: dict[str, float] = {}
    names = []
    kept = dict(zip(op.subspace.names, op.subspace.kept, strict=True))
    for layer in layers:
        own = [f"{layer}.{p}" for p in ("weight", "bias") if f"{layer}.{p}" in op.layers]
        if not own:
            continue
        rows = [params[n].detach().double().reshape(params[n].shape[0], -1).cpu() for n in own]
        channel_sq = sum(r.pow(2).sum(1) for r in rows)
        squared_norms[layer] = float(channel_sq.sum())
        for name, row in zip(own, rows, strict=True):
            per_channel = channel_sq if granularity == "channel" else channel_sq.sum().expand(row.shape[0])
            coords = per_channel.sqrt().repeat_interleave(row.shape[1])
            idx = kept[name]
            scales[op.layers[name]] = coords if idx is None else coords[idx.cpu()]
            names.append(name)
    return scales, squared_norms, tuple(names)


def _mean_se(terms: np.ndarray) -> tuple[float, float]:
    se = float(terms.std(ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else math.nan
    return float(terms.mean()), se


def normalized_trace(model: nn.Module, data: Any, *, loss_fn: LossFn | None = None, probes: int = 64,
                     masks: Mapping[str, Tensor] | None = None, seed: int = 0, granularity: str = "layer",
                     batch_size: int | None = None, progress: bool = False) -> NormalizedTrace:
    """BatchNorm-invariant flatness: sum of ||theta_l||^2 tr H_ll over the layers followed by BatchNorm,
    with the raw Hessian trace and the raw traces of the other parameters (module docstring).

    The Hessian is that of :class:`landscape.curvature.HessianOperator` (mean loss over ``data``, the model
    in eval mode on a private copy; with ``masks`` the principal submatrix on the unpruned coordinates, the
    norms still those of the weights as stored, which a pruned checkpoint stores as zeros).

    Args:
        model, data, loss_fn, masks, batch_size, progress: as for :func:`landscape.curvature.hessian_trace`.
        probes: Rademacher probes K (>= 2: one probe gives no standard error); 2K Hessian-vector products when
            some layer is normalised.
        seed: seed of the probes (``torch.Generator().manual_seed(seed)``, as :func:`hessian_trace`).
        granularity: ``layer`` (||theta_l||^2 per layer, invariant to a layer's common scale) or ``channel``
            (each output channel by its own squared norm, invariant to per-channel scales).

    Returns:
        A frozen :class:`NormalizedTrace`. The caller's model is not modified.

    Raises:
        TypeError, ArgumentError: a bad argument (named), or a model ``torch.fx`` cannot trace.

    Example (a BatchNorm-preceded weight scaled by 2, running statistics following: same function, raw trace
    of that weight divided by about 4, the normalised measure unchanged):
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6, eps=0.0), nn.ReLU(), nn.Linear(6, 3)).eval()
        >>> _ = net[1].running_var.fill_(2.0)
        >>> X, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
        >>> before = normalized_trace(net, (X, y), probes=8)
        >>> with torch.no_grad():
        ...     for t in (net[0].weight, net[0].bias, net[1].running_mean):
        ...         _ = t.mul_(2.0)
        ...     _ = net[1].running_var.mul_(4.0)
        >>> after = normalized_trace(net, (X, y), probes=8)
        >>> abs(after.normalized - before.normalized) < 1e-4 * abs(before.normalized)
        True
    """
    if isinstance(probes, bool) or not isinstance(probes, numbers.Integral) or probes < 2:
        raise ArgumentError(f"probes must be an integer >= 2 (one probe gives no standard error), got {probes!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if granularity not in GRANULARITIES:
        raise ArgumentError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    layers = batchnorm_layers(model)
    op = HessianOperator(model, data, loss_fn=loss_fn, masks=masks, batch_size=batch_size, progress=progress)
    scales, squared_norms, normalised = _coordinate_scales(model, op, layers, granularity)
    v = rademacher(int(probes), op.dim, torch.Generator().manual_seed(int(seed)), op.dtype, op.device)
    if normalised:
        # S~ = S where S > 0, else 1: a zero-norm unit adds ||theta||^2 tr H = 0 and keeps its raw term
        safe = torch.where(scales > 0, scales, torch.ones_like(scales)).to(op.device, op.dtype)
        products = op.matmat(torch.cat([v, v * safe]))
        plain = (v * products[:probes]).double()
        scaled = (v * products[probes:] * safe).double() * (scales > 0).to(op.device, torch.float64)
    else:
        plain = scaled = (v * op.matmat(v)).double()
    raw_terms = {name: plain[:, s].sum(1).cpu().numpy() for name, s in op.layers.items()}
    scaled_terms = {name: scaled[:, s].sum(1).cpu().numpy() for name, s in op.layers.items()}
    other_names = [name for name in op.layers if name not in normalised]

    def total(parts: Mapping[str, np.ndarray], names: list[str] | tuple[str, ...]) -> tuple[float, float]:
        return _mean_se(sum((parts[n] for n in names), np.zeros(int(probes))))

    def means(parts: Mapping[str, np.ndarray], names: list[str] | tuple[str, ...]) -> dict[str, float]:
        return {n: float(parts[n].mean()) for n in names}

    sums = (*total(scaled_terms, normalised), *total(scaled_terms, other_names), *total(raw_terms, list(op.layers)))
    for value, what in zip(sums[::2], ("normalized", "other", "raw"), strict=True):
        check_finite(value, f"the {what} trace estimate")
    return NormalizedTrace(
        *sums,
        tuple(squared_norms), granularity, squared_norms, means(scaled_terms, normalised),
        means(scaled_terms, other_names), means(raw_terms, list(op.layers)), int(probes), int(seed),
        int(probes) * (2 if normalised else 1), op.samples)
