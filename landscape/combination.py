"""Weight combinations of models of one architecture, evaluated on a private copy of the model.

Every landscape quantity is the loss of an affine combination of weights theta_1..theta_n,

    theta(c) = sum_i c_i theta_i = theta_1 + sum_{i>1} c_i (theta_i - theta_1),   sum_i c_i = 1,

a line (Frankle et al. 2020), a simplex (the convex hull of SWAMP's particles) or a plane (Garipov et
al. 2018). The second form is the one computed: where the models agree the combination equals them
exactly (identical models give a perfectly flat landscape, and a shared mask's zeros stay exactly zero),
and a one-hot c returns that model bit for bit. Integer buffers (BatchNorm's batch counters) are
taken from the first model.

BatchNorm: combined weights match no model's running statistics, so they are recomputed at every point
(:func:`core.averaging.recalibrate_batchnorm`) on the same batches for every point, which keeps
the landscape smooth; without those batches the stored statistics are combined like the weights.
A scan (:meth:`Combination.evaluate`) reads those batches once and keeps them for all its points, so a
data set that is streamed, collated or indexed per iteration is read once, and a one-shot iterable
(a generator) recomputes every point, not the first only.

What recomputation costs, and how close its statistics are: it is one training-mode forward pass over the
BatchNorm samples per point, on top of the evaluation of every data set. The tools' default, 2,048 training
samples (:data:`landscape.batches.DEFAULT_BN_SAMPLES`), measured against all 4,000 training samples on the
BatchNorm cnn1d of MNIST-1D (two particles of a 2-epoch SWAMP cycle, 41 points of their line, four seeded
subsamples; the largest deviation over points, layers and channels): running means within 0.01 standard
deviations, running variances within 4.2 % and test losses within 1.4 % (relative). With 1,024 samples:
0.03 standard deviations, 8 % and 3.7 %; with 512: 0.04, 16 % and 10 %.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.averaging import apply_model, has_batchnorm, recalibrate_batchnorm
from core.evaluate import Evaluation
from core.progress import tqdm
from landscape.batches import (
    ArgumentError,
    Batch,
    LossFn,
    check_finite,
    check_model,
    cross_entropy_sum,
    logits_of,
    mean_loss_terms,
    model_applied_to,
    slice_samples,
)
from landscape.batches import batches as make_batches


def is_class_logits(outputs: Tensor, targets: Tensor) -> bool:
    return (isinstance(outputs, Tensor) and outputs.dim() == 2 and targets.dim() == 1
            and not targets.is_floating_point() and not targets.is_complex() and len(outputs) == len(targets))


@torch.no_grad()
def mean_loss(model: nn.Module, data: Iterable[Batch], loss_fn: LossFn | None = None, name: str = "data") -> Evaluation:
    """Mean of ``loss_fn`` over every sample of ``data`` (each batch weighted by its size), model in eval mode:
    an :class:`core.evaluate.Evaluation` (``acc`` None unless the outputs are class logits).

    ``data``: batches as :mod:`landscape.batches` describes them (pairs, mappings with ``labels``, an
    ``(X, y)`` pair).

    ``loss_fn`` None is the cross-entropy of class logits, summed in float32 as
    :func:`core.evaluate.evaluate` does (the same numbers to the bit). The model's train/eval mode
    is restored afterwards. A loss that is not finite (NaN, infinity) is refused
    (:func:`landscape.batches.check_finite`), as every landscape result is.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 2)
        >>> X, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
        >>> point = mean_loss(net, [(X[:5], y[:5]), (X[5:], y[5:])])
        >>> 0 <= point.acc <= 1, net.training
        (True, True)
    """
    return check_finite_loss(_eval_mode_loss(model, data, loss_fn, name), f"the {name} loss of model")


def _check_running_variances(state: Mapping[str, Tensor], coefficients: Sequence[float]) -> None:
    """Refuse (:class:`ArgumentError`) a combination whose BatchNorm running variances (combined like the weights:
    no batches to recompute them on) turned negative, as they can outside the hull; the normalisation would give
    NaN, which the loss check would then blame on the weights or the data."""
    for key, value in state.items():
        if key.endswith("running_var") and value.is_floating_point() and bool((value < 0).any()):
            raise ArgumentError(
                f"the BatchNorm running variance {key!r} combined at coefficients {[float(c) for c in coefficients]} "
                f"is negative ({float(value.min()):.3g}): stored statistics combined like the weights do not extend "
                "outside the hull (a negative coefficient); recompute BatchNorm at every point (bn batches; "
                "--bn-recal N in the tools) or stay inside the hull (--margin 0)")


def check_finite_loss(point: Evaluation, what: str) -> Evaluation:
    """``point`` if its loss is a finite number, else :class:`ArgumentError` (``what`` names it)."""
    check_finite(point.loss, what)
    return point


@torch.no_grad()
def _eval_mode_loss(model: nn.Module, data: Iterable[Batch], loss_fn: LossFn | None, name: str) -> Evaluation:
    """:func:`mean_loss` before its loss is checked: the model in eval mode, its mode restored afterwards."""
    check_model(model)
    was_training = model.training
    model.eval()
    try:
        return _mean_loss(model, make_batches(data, name=name), loss_fn, name)
    finally:
        model.train(was_training)


def _mean_loss(model: nn.Module, data: Iterable[Batch], loss_fn: LossFn | None, name: str) -> Evaluation:
    total, correct, count, classify = 0.0, 0, 0, None
    for x, y in data:
        with model_applied_to(x, name):
            outputs = apply_model(model, x)
        if loss_fn is None:
            total += float(cross_entropy_sum(outputs, y))
        else:
            total += float(mean_loss_terms(outputs, y, loss_fn))
        logits = logits_of(outputs)
        classify = is_class_logits(logits, y) if classify is None else classify
        if classify:
            correct += int((logits.argmax(1) == y).sum())
        count += len(y)
    if count == 0:
        raise ArgumentError(f"{name} is empty: it yielded no samples")
    return Evaluation(total / count, correct / count if classify else None)


def _joined(inputs: Sequence[Any]) -> Any:
    """Batches' inputs as one: tensors concatenated, or mappings of tensors key by key; None if they are neither."""
    if all(isinstance(x, Tensor) for x in inputs):
        return torch.cat(list(inputs))
    if all(isinstance(x, Mapping) and x.keys() == inputs[0].keys() and all(isinstance(v, Tensor) for v in x.values())
           for x in inputs):
        return {k: torch.cat([x[k] for x in inputs]) for k in inputs[0]}
    return None


def even_batches(batches: Sequence[Batch]) -> list[Batch]:
    """The same samples in batches of near-equal size: BatchNorm's cumulative average weighs batches, not
    samples, so a short last batch would count as much as a full one. Inputs that are neither tensors nor
    mappings of tensors are kept as they are."""
    xs = _joined([x for x, _ in batches]) if len(batches) > 1 else None
    if xs is None:
        return list(batches)
    ys = torch.cat([y for _, y in batches])
    size = math.ceil(len(ys) / math.ceil(len(ys) / max(len(y) for _, y in batches)))
    return [(slice_samples(xs, i, i + size), ys[i:i + size]) for i in range(0, len(ys), size)]


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters (or buffers) live; the CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _check_same_architecture(template: Mapping[str, Tensor], states: Sequence[Mapping[str, Tensor]],
                             name: str) -> None:
    for n, state in enumerate(states):
        where = f"{name}[{n}] is not the architecture of {name}[0]"
        odd = sorted(set(state) ^ set(template))
        if odd:
            raise ArgumentError(f"{where}: tensor {odd[0]!r} is in only one of them")
        for key, value in template.items():
            other = state[key]
            if other.shape != value.shape:
                raise ArgumentError(f"{where}: {key!r} has shape {tuple(other.shape)} vs {tuple(value.shape)}")
            if other.dtype != value.dtype:
                raise ArgumentError(f"{where}: {key!r} has dtype {other.dtype} vs {value.dtype}")


def check_masks(masks: Mapping[str, Tensor] | None, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``masks`` as float 0/1 tensors, each on a tensor of ``state`` with its shape."""
    if masks is None:
        return {}
    if not isinstance(masks, Mapping):
        raise ArgumentError(f"masks must be a mapping of parameter names to 0/1 tensors, got {type(masks).__name__}")
    out = {}
    for key, mask in masks.items():
        if key not in state:
            raise ArgumentError(f"masks has an entry {key!r} that is not a parameter of the model")
        if not isinstance(mask, Tensor) or mask.shape != state[key].shape:
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ArgumentError(f"mask {key!r} must be a tensor of the parameter's shape {tuple(state[key].shape)}, "
                                f"got {shape}")
        m = mask.detach().to(torch.float32)
        if not bool(((m == 0) | (m == 1)).all()):
            raise ArgumentError(f"mask {key!r} must hold only 0 and 1")
        out[key] = m
    return out


class _FlatLine:
    """theta_1 + c (theta_2 - theta_1) for every floating tensor, computed on one flat vector per dtype and
    device: the same arithmetic, element by element, as the per-tensor ``tensordot`` of :meth:`Combination.state`
    (one product, rounded, then one sum), so the numbers are identical; returned as views of that vector."""

    def __init__(self, stacks: Mapping[str, Tensor]):
        self._groups: list[tuple[list[str], list[torch.Size], Tensor, Tensor]] = []
        by_kind: dict[tuple[torch.dtype, torch.device], list[str]] = {}
        for key, stack in stacks.items():
            by_kind.setdefault((stack.dtype, stack.device), []).append(key)
        for keys in by_kind.values():
            first = torch.cat([stacks[k][0].flatten() for k in keys])
            second = torch.cat([stacks[k][1].flatten() for k in keys])
            self._groups.append((keys, [stacks[k].shape[1:] for k in keys], first, second - first))

    def point(self, c: float) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for keys, shapes, first, diff in self._groups:
            flat = first + diff * torch.tensor(c, dtype=torch.float64).to(diff.dtype)
            for key, shape, part in zip(keys, shapes, flat.split([s.numel() for s in shapes]), strict=True):
                out[key] = part.view(shape)
        return out


def _direct_targets(model: nn.Module) -> dict[str, Tensor] | None:
    """``{state_dict key: the parameter or buffer it is loaded into}`` where loading a state is a plain copy into
    each (every module loads its state as ``nn.Module`` or BatchNorm does, no load hooks, every key a distinct
    tensor); None otherwise, and :meth:`Combination.load` then calls ``load_state_dict``."""
    from torch.nn.modules.batchnorm import _NormBase

    plain = (nn.Module._load_from_state_dict, _NormBase._load_from_state_dict)
    for module in model.modules():
        if type(module)._load_from_state_dict not in plain or module._load_state_dict_pre_hooks \
                or module._load_state_dict_post_hooks or getattr(module, "_state_dict_pre_hooks", None) \
                or module._state_dict_hooks:
            return None
    state = model.state_dict(keep_vars=True)
    targets = {k: t.data if isinstance(t, nn.Parameter) else t for k, t in state.items()}
    if len({t.data_ptr() for t in targets.values()}) != len(targets) or any(t.numel() == 0 for t in targets.values()):
        return None
    return targets


class Combination:
    """Loss of theta(c) = sum_i c_i theta_i for fixed states of one architecture (see the module doc).

    Args:
        template: a module of the architecture; a deep copy of it is what is evaluated.
        states: the ``state_dict`` of every model (at least one), on any device.
        masks: optional ``{parameter name: 0/1 tensor}``; every combined weight is multiplied by it.
        name: the argument's name in error messages.
    """

    def __init__(self, template: nn.Module, states: Sequence[Mapping[str, Tensor]],
                 masks: Mapping[str, Tensor] | None = None, name: str = "models"):
        if not isinstance(template, nn.Module):
            raise ArgumentError(f"{name} must be torch.nn.Module instances, got {type(template).__name__}")
        if not states:
            raise ArgumentError(f"{name} must not be empty")
        self.model = copy.deepcopy(template)
        self.device = model_device(template)
        reference = self.model.state_dict()
        _check_same_architecture(reference, states, name)
        first = states[0]
        self.count = len(states)
        self.parameter_names = tuple(n for n, _ in self.model.named_parameters())
        self._stacks = {k: torch.stack([s[k].detach().to(self.device) for s in states])
                        for k, v in first.items() if v.is_floating_point()}
        self._fixed = {k: v.detach().to(self.device).clone() for k, v in first.items() if not v.is_floating_point()}
        self._masks = {k: m.to(self.device) for k, m in check_masks(masks, first).items()}
        self.has_batchnorm = has_batchnorm(self.model)
        # a line (two models): theta_2 - theta_1 once, flat per dtype, so that a point costs two vector operations
        self._line = _FlatLine(self._stacks) if self.count == 2 else None
        self._targets = _direct_targets(self.model)

    def state(self, coefficients: Sequence[float]) -> dict[str, Tensor]:
        """The combined state_dict; ``coefficients`` must sum to 1 (any signs: planes extrapolate)."""
        c = [float(x) for x in coefficients]
        if len(c) != self.count or abs(sum(c) - 1.0) > 1e-6:
            raise ArgumentError(f"need {self.count} coefficients summing to 1, got {c}")
        nonzero = [i for i, x in enumerate(c) if x != 0.0]
        if len(nonzero) == 1:
            floats = {k: s[nonzero[0]] for k, s in self._stacks.items()}
        elif self._line is not None:
            floats = self._line.point(c[1])
        else:
            w = torch.tensor(c[1:], dtype=torch.float64)
            floats = {k: s[0] + torch.tensordot(w.to(s.device, s.dtype), s[1:] - s[0], dims=1)
                      for k, s in self._stacks.items()}
        for key, mask in self._masks.items():
            floats[key] = floats[key] * mask.to(floats[key].dtype)
        return {**floats, **self._fixed}

    def load(self, coefficients: Sequence[float], bn: Iterable[Batch] | None = None) -> nn.Module:
        """The private module holding theta(c), BatchNorm recomputed on ``bn`` if given; in eval mode."""
        state = self.state(coefficients)
        if self._targets is None:
            self.model.load_state_dict(state)
        else:  # what load_state_dict does for plain modules, without its per-module bookkeeping
            with torch.no_grad():
                for key, target in self._targets.items():
                    target.copy_(state[key])
        if bn is not None and self.has_batchnorm:
            with model_applied_to(lambda: next(iter(bn))[0], "bn_data"):
                recalibrate_batchnorm(self.model, bn)
        elif min(coefficients) < 0:  # outside the hull the stored statistics extrapolate, and can turn invalid
            _check_running_variances(state, coefficients)
        return self.model.eval()

    def evaluate(self, rows: Sequence[Sequence[float]], data: Mapping[str, Iterable[Batch]],
                 loss_fn: LossFn | None = None, bn: Iterable[Batch] | None = None, *, desc: str = "points",
                 progress: bool | None = None, results: dict[int, dict[str, Evaluation]] | None = None,
                 on_point: Callable[[dict[int, dict[str, Evaluation]]], None] | None = None
                 ) -> list[dict[str, Evaluation]]:
        """:func:`mean_loss` of theta(c) on each named data set, for every row c of ``rows`` (coefficients
        summing to 1): the one evaluation of the library's scans.

        At each row BatchNorm is recomputed once on ``bn`` (if given, for a model with BatchNorm; its batches are
        read once, before the first row, and the same batches serve every row), then every data set is iterated
        once; every loss passes :func:`landscape.batches.check_finite`. ``results``
        (row index -> evaluations) is filled in place and rows already in it are skipped, so that a caller can
        keep and continue a partial scan; ``on_point(results)`` is called after each new row. A progress bar
        named ``desc`` shows on a terminal (``progress`` None) or when asked.

        Returns:
            ``{name: Evaluation}`` of every row, in the order of ``rows``.

        Example:
            >>> import torch
            >>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
            >>> X, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
            >>> line = Combination(a, [a.state_dict(), b.state_dict()])
            >>> ends = line.evaluate([(1.0, 0.0), (0.0, 1.0)], {"data": [(X, y)]})
            >>> ends[0]["data"] == mean_loss(a, [(X, y)]), ends[1]["data"] == mean_loss(b, [(X, y)])
            (True, True)
        """
        results = {} if results is None else results
        bn = self._staged(bn)
        with tqdm(total=len(rows), desc=desc, unit="point", leave=False,
                  disable=None if progress is None else not progress) as bar:
            bar.update(len(results))
            for i, c in enumerate(rows):
                if i in results:
                    continue
                model = self.load(c, bn)
                results[i] = {name: check_finite_loss(_eval_mode_loss(model, batches, loss_fn, name),
                                                      f"the {name} loss at coefficients {[float(x) for x in c]}")
                              for name, batches in data.items()}
                bar.update()
                if on_point is not None:
                    on_point(results)
        return [results[i] for i in range(len(rows))]

    def _staged(self, bn: Iterable[Batch] | None) -> list[Batch] | None:
        """``bn``'s batches read once (a list) for every point of a scan; None where nothing is recomputed."""
        if bn is None or not self.has_batchnorm:
            return None
        return bn if isinstance(bn, list) else list(bn)

    def displacement_gram(self) -> np.ndarray:
        """G[i, j] = <theta_{i+2} - theta_1, theta_{j+2} - theta_1> over the parameters (not buffers)."""
        diffs = torch.stack([torch.cat([(s[i] - s[0]).double().flatten() for k, s in self._stacks.items()
                                        if k in self.parameter_names]) for i in range(1, self.count)])
        return (diffs @ diffs.T).cpu().numpy()
