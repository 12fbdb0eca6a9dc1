"""Randomised trace estimators for a symmetric operator given only through matrix products.

Both estimators take the same budget, the number of matrix-vector products (``probes``), so they
can be compared fairly, draw their random signs from an explicit ``torch.Generator`` (on the CPU, so
a seed gives the same probes on every device), and return a frozen :class:`TraceEstimate`.

Vectors are rows: ``matmat(V)`` maps a block V (m, d) to V A (= (A V^T)^T for symmetric A).

Per-layer parts: with P_l the coordinate projector of layer l, tr(A) = sum_l tr(P_l A), and every
estimate below is split into unbiased estimates of the tr(P_l A) that add up to the total exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

Matmat = Callable[[Tensor], Tensor]
Stop = Callable[[np.ndarray], bool]


@dataclass(frozen=True)
class TraceEstimate:
    """A trace estimate with its standard error and the matrix-vector products it cost.

    ``samples`` are the Hutchinson terms v^T A v (for Hutch++ those of the deflated residual);
    ``stderr`` is NaN when it cannot be estimated (fewer than two terms).
    """

    method: str
    estimate: float
    stderr: float
    matvecs: int
    per_layer: dict[str, float] = field(default_factory=dict)
    per_layer_stderr: dict[str, float] = field(default_factory=dict)
    samples: tuple[float, ...] = ()

    @property
    def relative_stderr(self) -> float:
        return self.stderr / abs(self.estimate) if self.estimate else math.inf

    def to_json(self) -> dict[str, Any]:
        """The fields (and ``relative_stderr``) as JSON-ready values; NaN and infinities become None."""
        obj = {"method": self.method, "estimate": self.estimate, "stderr": self.stderr,
               "relative_stderr": self.relative_stderr, "matvecs": self.matvecs, "per_layer": dict(self.per_layer),
               "per_layer_stderr": dict(self.per_layer_stderr), "samples": list(self.samples)}
        return _json_floats(obj)


def _json_floats(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_floats(v) for v in obj]
    return obj


def rademacher(m: int, dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> Tensor:
    """m rows of independent random signs (+1 or -1 with probability 1/2), drawn on the CPU."""
    signs = torch.randint(0, 2, (m, dim), generator=generator, dtype=torch.int8)
    return (2 * signs - 1).to(device=device, dtype=dtype)


def _stderr(terms: np.ndarray) -> np.ndarray:
    """Standard error of the mean of each column (NaN with fewer than two rows)."""
    if terms.shape[0] < 2:
        return np.full(terms.shape[1:], math.nan)
    return terms.std(axis=0, ddof=1) / math.sqrt(terms.shape[0])


def _stop_at(target_rse: float | None, offset: float = 0.0) -> Stop | None:
    """Stop once the standard error of ``offset + mean(terms)`` is at most target_rse of its size."""
    if target_rse is None:
        return None

    def stop(terms: np.ndarray) -> bool:
        total = terms.sum(1)
        return len(total) > 1 and _stderr(total[:, None])[0] <= target_rse * abs(offset + total.mean())

    return stop


def _probe_terms(matmat: Matmat, dim: int, probes: int, generator: torch.Generator, layers: Mapping[str, slice],
                 block: int, stop: Stop | None, dtype: torch.dtype, device: torch.device | str) -> np.ndarray:
    """Per-probe, per-layer Hutchinson terms v_l^T (A v)_l, probing block by block until ``stop``."""
    rows: list[np.ndarray] = []
    done = 0
    while done < probes:
        v = rademacher(min(block, probes - done), dim, generator, dtype, device)
        prod = (v * matmat(v)).double()
        rows.append(torch.stack([prod[:, s].sum(1) for s in layers.values()], 1).cpu().numpy())
        done += v.shape[0]
        if stop is not None and stop(np.concatenate(rows)):
            break
    return np.concatenate(rows)


def hutchinson_trace(matmat: Matmat, dim: int, probes: int, generator: torch.Generator, *,
                     layers: Mapping[str, slice] | None = None, target_rse: float | None = None,
                     block: int | None = None, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> TraceEstimate:
    """Hutchinson's estimator (Hutchinson 1989) with Rademacher probes.

    tr(A) ~ (1/K) sum_k v_k^T A v_k, v_k with i.i.d. random signs: E[v v^T] = I, so each term is
    unbiased, with variance 2 (||A||_F^2 - sum_i A_ii^2). The standard error is the sample standard
    deviation of the K terms over sqrt(K). Per layer, v_l^T (A v)_l is unbiased for tr(P_l A) and
    these sum to v^T A v.

    ``target_rse``: stop early, after the first block of ``block`` probes (default 16) at which
    stderr / |estimate| <= target_rse; ``probes`` is then the maximum. Without a target all probes
    go in one block (one pass over the data for all of them).
    """
    if probes < 1:
        raise ValueError("Hutchinson needs at least one probe")
    groups = dict(layers) if layers else {"total": slice(0, dim)}
    size = block or (16 if target_rse is not None else probes)
    terms = _probe_terms(matmat, dim, probes, generator, groups, size, _stop_at(target_rse), dtype, device)
    total = terms.sum(1)
    per_layer = dict(zip(groups, terms.mean(0).tolist(), strict=True)) if layers else {}
    per_layer_se = dict(zip(groups, _stderr(terms).tolist(), strict=True)) if layers else {}
    return TraceEstimate("hutchinson", float(total.mean()), float(_stderr(total[:, None])[0]), len(total),
                         per_layer, per_layer_se, tuple(total.tolist()))


def orthonormal_rows(y: Tensor) -> Tensor:
    """Orthonormal rows spanning the rows of y (thin QR); min(m, d) of them."""
    q, _ = torch.linalg.qr(y.T)
    return q.T


def hutchpp_trace(matmat: Matmat, dim: int, probes: int, generator: torch.Generator, *,
                  layers: Mapping[str, slice] | None = None, target_rse: float | None = None,
                  block: int | None = None, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> TraceEstimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): exact trace of a sketched top subspace plus
    Hutchinson on the rest, with the same budget of ``probes`` matrix-vector products.

    With s = probes // 3 random-sign rows S: Q = orth(S A) (r = min(s, d) rows),

        tr(A) = tr(Q A Q^T) + tr((I - Q^T Q) A (I - Q^T Q)),

    the first term computed exactly from A Q (r products), the second by Hutchinson on the deflated
    operator with the remaining probes - s - r products. Its error is O(1/m) instead of Hutchinson's
    O(1/sqrt(m)) when A has a decaying spectrum, and it is exact once r = d. The standard error is that
    of the residual Hutchinson terms (conditional on the sketch).

    Per layer: tr(P_l A) = tr(P_l A Q^T Q) + tr(P_l Q^T Q A (I - Q^T Q)) + tr(P_l (I - Q^T Q) A (I - Q^T Q)).
    The first two are computed exactly from A Q (the second sums to zero over layers), the third is
    the residual's per-layer Hutchinson term, so the parts add up to the total.

    ``target_rse`` applies to the residual phase: it stops once stderr / |estimate| <= target_rse.
    """
    if probes < 3:
        raise ValueError("Hutch++ needs at least 3 probes (a third each for sketch, subspace and residual)")
    groups = dict(layers) if layers else {"total": slice(0, dim)}
    s = probes // 3
    q = orthonormal_rows(matmat(rademacher(s, dim, generator, dtype, device)))
    aq = matmat(q)
    r = aq - (aq @ q.T) @ q
    exact = ((q * aq) + (q * r)).double().sum(0)
    exact_parts = np.array([exact[sl].sum().item() for sl in groups.values()])
    low_rank = float(exact_parts.sum())

    def deflated(v: Tensor) -> Tensor:
        w = matmat(v - (v @ q.T) @ q)
        return w - (w @ q.T) @ q

    remaining = probes - s - q.shape[0]
    if remaining > 0:
        size = block or (16 if target_rse is not None else remaining)
        terms = _probe_terms(deflated, dim, remaining, generator, groups, size, _stop_at(target_rse, low_rank),
                             dtype, device)
    else:
        terms = np.zeros((0, len(groups)))
    total = terms.sum(1)
    mean_parts = terms.mean(0) if len(total) else np.zeros(len(groups))
    per_layer = dict(zip(groups, (exact_parts + mean_parts).tolist(), strict=True)) if layers else {}
    per_layer_se = dict(zip(groups, _stderr(terms).tolist(), strict=True)) if layers else {}
    return TraceEstimate("hutchpp", low_rank + float(mean_parts.sum()), float(_stderr(total[:, None])[0]),
                         s + q.shape[0] + len(total), per_layer, per_layer_se, tuple(total.tolist()))


ESTIMATORS = {"hutchinson": hutchinson_trace, "hutchpp": hutchpp_trace}
