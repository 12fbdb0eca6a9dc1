"""Permutation alignment of two networks of one architecture (Git Re-Basin, Ainsworth et al. 2023).

Two networks trained from different seeds compute similar features in different orders. Entezari et al.
(2022) conjecture that, once the hidden units of one are permuted to match the other, the two are linearly
mode-connected; Ainsworth et al. (2023) find the permutations in two ways:

* **weight matching** (their Algorithm 1, :func:`weight_matching`): maximise
  sum_l <W_l^ref, P_l W_l^other P_{l-1}^T> over permutations P (every parameter tensor, biases and
  BatchNorm included) by coordinate descent: visit the groups of units in a seeded random order and solve
  each P_l with the others fixed, a linear assignment problem (``scipy.optimize.linear_sum_assignment``),
  until no P_l changes;
* **activation matching** (:func:`activation_matching`): for each group, the assignment that maximises the
  sum of the Pearson correlations of the matched units' activations on data (after the nonlinearity).

The groups come from the model's graph (:mod:`landscape.permutations`). The aligned network is a new module
that computes the same function as ``other``; the inputs are never modified. The checkpoint layer and the
command-line tool are :mod:`landscape.tools.align`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import Tensor, nn

from landscape.batches import ArgumentError, batches, check_model, peek
from landscape.combination import check_masks, model_device
from landscape.permutations import PermutationSpec, permutation_spec, permute_state

METHODS = ("weights", "activations")  # the ways :func:`align` finds the permutations
METHOD_NAMES = {"weights": "weight matching", "activations": "activation matching"}

__all__ = ["METHODS", "METHOD_NAMES", "Alignment", "activation_matching", "align", "weight_matching"]
ALIGN_STREAM = 0x414C  # keeps the order of the groups apart from any other use of the same seed


@dataclass(frozen=True)
class Alignment:
    """``other`` with its hidden units permuted to match ``reference``.

    ``model``: the permuted copy (the same function as ``other``); ``permutations[g][i]``: the unit of
    ``other`` that is unit i of group g in ``model``; ``masks``: ``other``'s masks permuted alike (or None);
    ``objectives``: sum over parameters of <theta_ref, P theta_other> before alignment, then after each
    iteration (weight matching; activation matching has one); ``spec``: the groups.
    """

    model: nn.Module
    permutations: dict[str, tuple[int, ...]]
    masks: dict[str, Tensor] | None
    objectives: tuple[float, ...]
    iterations: int
    method: str
    seed: int
    spec: PermutationSpec

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "seed": self.seed, "iterations": self.iterations,
                "objective_before": self.objectives[0], "objective_after": self.objectives[-1]}

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "objectives": list(self.objectives),
                "permutations": {g: list(p) for g, p in self.permutations.items()}}


def _check_pair(reference: nn.Module, other: nn.Module, masks: Any) -> tuple[PermutationSpec, dict | None]:
    """The permutation spec of ``other`` and its checked masks; refuses models of two architectures."""
    for name, model in (("reference", reference), ("other", other)):
        if not isinstance(model, nn.Module):
            raise ArgumentError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
        check_model(model, name)
        for key, tensor in model.state_dict().items():  # no loss is computed that would show a NaN
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ArgumentError(f"{name}'s '{key}' is not finite (it holds NaN or infinity); alignment compares "
                                    "weights, which must be finite numbers")
    ref, oth = reference.state_dict(), other.state_dict()
    odd = sorted(set(ref) ^ set(oth)) or [k for k, v in ref.items() if v.shape != oth[k].shape]
    if odd:
        raise ArgumentError(f"reference and other are not one architecture: tensor {odd[0]!r} differs")
    checked = None if masks is None else check_masks(masks, oth)
    return permutation_spec(other), checked


class _Objective:
    """J(P) = sum over parameters of <theta_ref, P theta_other>, and its linear part in one group."""

    def __init__(self, reference: nn.Module, other: nn.Module, spec: PermutationSpec):
        self.ref = {k: v.detach() for k, v in reference.named_parameters()}
        self.other = {k: v.detach().to(self.ref[k].device) for k, v in other.named_parameters()}
        self.spec = spec

    def value(self, perms: Mapping[str, Tensor]) -> float:
        return float(sum((self.ref[k].double() * self.spec.permute(k, v, perms).double()).sum()
                         for k, v in self.other.items()))

    def cost(self, group: Any, perms: Mapping[str, Tensor]) -> np.ndarray:
        """C[i, j] = the part of J that pairs unit i of the reference with unit j of ``other`` in ``group``."""
        cost = torch.zeros(group.size, group.size, dtype=torch.float64, device=next(iter(self.ref.values())).device)
        for axis in group.axes:
            if axis.key in self.ref:
                b = self.spec.permute(axis.key, self.other[axis.key], perms, skip=axis)
                cost += (_units(self.ref[axis.key], axis) @ _units(b, axis).T).double()
        return cost.cpu().numpy()


def _units(tensor: Tensor, axis: Any) -> Tensor:
    """(units, everything else): row c holds the entries of unit c of ``axis``."""
    return tensor.float().movedim(axis.dim, 0).reshape(tensor.shape[axis.dim] // axis.block, -1)


def _assignment(cost: np.ndarray) -> Tensor:
    from scipy.optimize import linear_sum_assignment  # SciPy only when aligning: the tools start without it

    _, columns = linear_sum_assignment(cost, maximize=True)
    return torch.as_tensor(columns, dtype=torch.long)


def _finish(other: nn.Module, spec: PermutationSpec, perms: Mapping[str, Tensor], masks: dict | None,
            objectives: list[float], iterations: int, method: str, seed: int) -> Alignment:
    model = copy.deepcopy(other)
    model.load_state_dict(permute_state(other.state_dict(), spec, perms))
    return Alignment(model, {g: tuple(int(i) for i in p) for g, p in perms.items()},
                     None if masks is None else permute_state(masks, spec, perms), tuple(objectives), iterations,
                     method, seed, spec)


def weight_matching(reference: nn.Module, other: nn.Module, *, masks: Any = None, max_iter: int = 100,
                    seed: int = 0) -> Alignment:
    """Permute ``other``'s hidden units to maximise its inner product with ``reference`` (Git Re-Basin,
    Ainsworth et al. 2023, Algorithm 1).

    Maximises J(P) = sum_l <W_l^ref, P_l W_l^other P_{l-1}^T> over every parameter tensor by coordinate
    descent: each iteration visits the groups in a random order (NumPy ``default_rng([seed, ALIGN_STREAM])``)
    and replaces P_l by the solution of the linear assignment max_P <P, C_l> with the other groups fixed; it
    stops when no P_l improves J, or after ``max_iter`` iterations. J never decreases (J is linear in each
    P_l while no tensor has two axes in one group, as in every model of the toolkit). A permuted copy of
    ``reference`` is recovered exactly (J is then |theta_ref|^2, its maximum by Cauchy-Schwarz).

    Args:
        reference, other: modules of one architecture (same state_dict names and shapes); never modified.
        masks: ``other``'s ``{parameter name: 0/1 tensor}``, permuted with its weights.
        max_iter: the most iterations, >= 1.
        seed: seed of the order in which the groups are visited.

    Returns:
        :class:`Alignment`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> a = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> b = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> result = weight_matching(a, b)
        >>> x = torch.randn(5, 4)
        >>> result.objectives[-1] > result.objectives[0], torch.allclose(result.model(x), b(x), atol=1e-6)
        (True, True)
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ArgumentError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ArgumentError(f"seed must be an integer >= 0, got {seed!r}")
    spec, masks = _check_pair(reference, other, masks)
    objective = _Objective(reference, other, spec)
    perms = spec.identity()
    objectives, iterations = [objective.value(perms)], 0
    rng = np.random.default_rng([seed, ALIGN_STREAM])
    while iterations < max_iter:
        iterations += 1
        improved = False
        for index in rng.permutation(len(spec.groups)):
            group = spec.groups[index]
            cost = objective.cost(group, perms)
            rows = np.arange(group.size)
            best = _assignment(cost)
            old, new = cost[rows, perms[group.name].numpy()].sum(), cost[rows, best.numpy()].sum()
            if new > old + 1e-9 * abs(old):
                perms[group.name], improved = best, True
        objectives.append(objective.value(perms))
        if not improved:
            break
    return _finish(other, spec, perms, masks, objectives, iterations, "weights", seed)


class _Recorder(torch.fx.Interpreter):
    """Runs a traced model and keeps the values of the nodes named in ``wanted``."""

    def __init__(self, model: nn.Module, wanted: set[str]):
        super().__init__(torch.fx.symbolic_trace(model))
        self.wanted, self.values = wanted, {}

    def run_node(self, n: torch.fx.Node) -> Any:
        value = super().run_node(n)
        if n.name in self.wanted:
            self.values[n.name] = value
        return value

    def feed(self, inputs: Any) -> Any:
        """Run on a batch's inputs: a tensor, or a mapping of the forward's arguments by name (``model(**inputs)``;
        arguments left out take their defaults)."""
        if not isinstance(inputs, Mapping):
            return self.run(inputs)
        names = [n.target for n in self.graph.nodes if n.op == "placeholder"]
        unknown = sorted(set(inputs) - set(names))
        given = [name in inputs for name in names]
        gap = False in given and True in given[given.index(False):]  # positional: only trailing ones may default
        if unknown or gap:
            raise ArgumentError(f"data: the inputs {', '.join(sorted(inputs))} do not fit the arguments "
                                f"{', '.join(names)} of the model's forward (unknown names, or one left out before "
                                "one given)")
        return self.run(*(inputs[name] for name in names if name in inputs))


class _Moments:
    """Running sums that give the Pearson correlation of every unit of one network with every unit of another."""

    def __init__(self) -> None:
        self.n, self.sums = 0, None

    def add(self, x: Tensor, y: Tensor) -> None:
        x, y = (t.detach().double().movedim(1, -1).reshape(-1, t.shape[1]) for t in (x, y))
        parts = (x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0), x.T @ y)
        self.sums = parts if self.sums is None else tuple(a + b for a, b in zip(self.sums, parts, strict=True))
        self.n += len(x)

    def correlation(self) -> Tensor:
        sx, sy, sxx, syy, sxy = (s / self.n for s in self.sums)
        sdx, sdy = (sxx - sx**2).clamp_min(0).sqrt(), (syy - sy**2).clamp_min(0).sqrt()
        return torch.nan_to_num((sxy - sx[:, None] * sy[None, :]) / (sdx[:, None] * sdy[None, :]), 0.0, 0.0, 0.0)


@torch.no_grad()
def activation_matching(reference: nn.Module, other: nn.Module, data: Any, *, masks: Any = None,
                        batch_size: int | None = None) -> Alignment:
    """Permute ``other``'s hidden units to match ``reference``'s by the correlation of their activations
    (Ainsworth et al. 2023, section 3.1; Li et al. 2016).

    For every group, with a_i the activation of reference unit i and b_j that of unit j of ``other`` (after
    the nonlinearity; every position of a feature map is a sample), solves max_P sum_i corr(a_i, b_{P(i)})
    summed over the group's nodes (a residual stream has several), one linear assignment per group, on
    both models in eval mode. ``objectives`` holds J (as in :func:`weight_matching`) before and after.

    Args:
        reference, other: modules of one architecture; never modified (copies are run in eval mode).
        data: ``(inputs, targets)`` batches or an ``(X, y)`` pair (:mod:`landscape.batches`); targets unused.
        masks: ``other``'s masks, permuted with its weights.
        batch_size: batch size for an ``(X, y)`` pair.

    Returns:
        :class:`Alignment` (``iterations`` 1).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> a, b = (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(2))
        >>> result = activation_matching(a, b, (torch.randn(256, 4), torch.zeros(256)))
        >>> sorted(result.permutations["0"]) == list(range(8))
        True
    """
    spec, masks = _check_pair(reference, other, masks)
    wanted = {name for group in spec.groups for name in group.activations}
    runs = [_Recorder(copy.deepcopy(m).eval(), wanted) for m in (reference, other)]
    moments = {name: _Moments() for name in wanted}
    source = batches(data, batch_size, "data", model_device(other))
    peek(source)
    for x, _ in source:
        for run in runs:
            run.feed(x)
        for name, m in moments.items():
            m.add(runs[0].values[name], runs[1].values[name])
    perms = {g.name: _assignment(sum(moments[n].correlation() for n in g.activations).cpu().numpy())
             for g in spec.groups}
    objective = _Objective(reference, other, spec)
    return _finish(other, spec, perms, masks, [objective.value(spec.identity()), objective.value(perms)], 1,
                   "activations", 0)


def align(reference: nn.Module, other: nn.Module, *, method: str = "weights", data: Any = None, masks: Any = None,
          max_iter: int = 100, seed: int = 0, batch_size: int | None = None) -> Alignment:
    """Permute ``other``'s hidden units to match ``reference`` (Git Re-Basin, Ainsworth et al. 2023):
    :func:`weight_matching` (``method="weights"``) or :func:`activation_matching` (``"activations"``, on
    ``data``). This is ``from landscape import align``; ``python -m landscape.align`` is the command-line tool
    for checkpoint files (:mod:`landscape.tools.align`).

    Args:
        reference, other: modules of one architecture; never modified.
        method: one of :data:`METHODS`.
        data: batches for activation matching (as in :func:`activation_matching`); unused by weight matching.
        masks: ``{parameter name: 0/1 tensor}`` of ``other``, permuted with its weights.
        max_iter, seed: of weight matching; batch_size: of activation matching's ``(X, y)`` pair.

    Returns:
        :class:`Alignment`: the aligned copy of ``other`` (``model``), its permuted masks and the objective.

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> ref, other = (torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        ...               for _ in range(2))
        >>> done = align(ref, other)
        >>> x = torch.randn(5, 4)
        >>> torch.allclose(done.model(x), other(x), atol=1e-6), done.method
        (True, 'weights')
    """
    if method == "weights":
        return weight_matching(reference, other, masks=masks, max_iter=max_iter, seed=seed)
    if method == "activations":
        if data is None:
            raise ArgumentError("method 'activations' needs data")
        return activation_matching(reference, other, data, masks=masks, batch_size=batch_size)
    raise ArgumentError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
