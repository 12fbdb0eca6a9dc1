"""The registry of pruning criteria: one function and one entry per criterion.

A criterion is called as

    criterion(model, masks, ratio, *, data=None, loss_fn=None, generator=None) -> new masks

with ``model`` the network to judge (an ``nn.Module``; criteria that read only the weights also accept a
mapping name -> tensor, e.g. a state dict), ``masks`` the current masks (only weights they keep are
ranked, and ``round(ratio * kept)`` of them are removed), ``data`` an iterable of batches (any structure
of :mod:`core.batch`) and ``loss_fn(outputs, targets)`` for data-dependent criteria, and ``generator``
for random ones. It returns new masks and modifies nothing. :data:`CRITERIA` maps a name to a
:class:`Criterion`; :func:`next_masks` calls one by name and checks that what it needs was given.
The runner's ``--prune-method`` offers the criteria that need no data (:func:`runner_methods`).

Adding a criterion: write the function, add one :class:`Criterion` entry to :data:`CRITERIA`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from core.batch import apply_model, batch_parts, to_device
from core.pruning.magnitude import global_magnitude_mask, layerwise_magnitude_mask, prune_by_scores, random_mask
from core.pruning.masks import Masks

LossFn = Callable[[Any, Tensor], Tensor]
Weights = nn.Module | Mapping[str, Tensor]


def weights_of(model: Weights) -> Mapping[str, Tensor]:
    """name -> tensor of ``model``: its named parameters, or the mapping itself."""
    return dict(model.named_parameters()) if isinstance(model, nn.Module) else model


def default_loss(outputs: Any, targets: Tensor) -> Tensor:
    """Cross-entropy of the outputs' logits (the outputs, or their ``logits`` entry or attribute)."""
    logits = outputs["logits"] if isinstance(outputs, Mapping) else getattr(outputs, "logits", outputs)
    return nn.functional.cross_entropy(logits, targets)


def snip_scores(model: nn.Module, masks: Mapping[str, Tensor], data: Iterable[Any],
                loss_fn: LossFn | None = None) -> Masks:
    """Connection sensitivity |g_j * theta_j| of every masked weight (Lee et al. 2019), g = dL/dtheta.

    L is the mean over the batches of ``data`` of ``loss_fn(model(inputs), targets)`` (default: cross-entropy).
    The model is copied first, so its BatchNorm statistics and gradients stay as they are; it is run in the
    mode it is in (``model.eval()`` for a deterministic score of a model with dropout).

    Args:
        model, masks, data, loss_fn: as in :func:`snip_mask`.

    Returns:
        name -> the scores, shaped like the weight (0 where the weight is 0).

    Example:
        >>> net = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.tensor([[2.0, -1.0]]))
        >>> batch = (torch.tensor([[1.0, 3.0]]), torch.zeros(1, 1))  # out = -1, dL/dw = 2 * out * x
        >>> snip_scores(net, {"weight": torch.ones(1, 2)}, [batch], nn.functional.mse_loss)["weight"].tolist()
        [[4.0, 6.0]]
    """
    net = copy.deepcopy(model)
    params = dict(net.named_parameters())
    device = next(iter(params.values())).device
    loss_fn = loss_fn or default_loss
    names = list(masks)
    grads = [torch.zeros_like(params[n]) for n in names]
    count = 0
    for batch in data:
        inputs, targets = batch_parts(batch)
        if targets is None:
            raise ValueError("SNIP needs batches with targets: (inputs, targets) tuples or mappings with 'labels'")
        loss = loss_fn(apply_model(net, to_device(inputs, device)), to_device(targets, device))
        for total, g in zip(grads, torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True),
                            strict=True):
            if g is not None:
                total += g
        count += 1
    if count == 0:
        raise ValueError("SNIP needs at least one batch of data")
    return {n: (g / count * params[n].detach()).abs() for n, g in zip(names, grads, strict=True)}


def snip_mask(model: nn.Module, masks: Mapping[str, Tensor], ratio: float, *, data: Iterable[Any],
              loss_fn: LossFn | None = None, generator: torch.Generator | None = None) -> Masks:
    """SNIP (Lee et al. 2019, "SNIP: single-shot network pruning based on connection sensitivity"): remove
    the ``ratio`` of the kept weights of smallest connection sensitivity s_j = |g_j * theta_j|, ranked
    across all layers, where g = dL/dtheta is the gradient of the loss on ``data`` (Lee et al. score one
    batch at initialisation; the normalisation s_j / sum_k s_k does not change the ranking).

    Args:
        model: the network (not modified: scored on a copy, in the mode it is in).
        masks: name -> current mask; pruned weights (theta_j = 0) score 0 and stay pruned.
        ratio: the fraction of the kept weights to remove.
        data: an iterable of batches with targets (``(inputs, targets)`` tuples or mappings with
            ``"labels"``; one batch for the paper's criterion).
        loss_fn: ``loss_fn(outputs, targets)``, a scalar; default cross-entropy.
        generator: unused (the criteria's common signature).

    Returns:
        The new masks.

    Example:
        >>> net = nn.Linear(3, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.tensor([[3.0, 1.0, 2.0]]))
        >>> x, y = torch.tensor([[1.0, 4.0, 0.1]]), torch.zeros(1, 1)
        >>> snip_mask(net, {"weight": torch.ones(1, 3)}, 1 / 3, data=[(x, y)],
        ...           loss_fn=nn.functional.mse_loss)["weight"].tolist()
        [[1.0, 1.0, 0.0]]
    """
    return prune_by_scores(snip_scores(model, masks, data, loss_fn), masks, ratio)


def _global(model: Weights, masks: Mapping[str, Tensor], ratio: float, **_: Any) -> Masks:
    return global_magnitude_mask(weights_of(model), masks, ratio)


def _layerwise(model: Weights, masks: Mapping[str, Tensor], ratio: float, **_: Any) -> Masks:
    return layerwise_magnitude_mask(weights_of(model), masks, ratio)


def _random(model: Weights, masks: Mapping[str, Tensor], ratio: float, *,
            generator: torch.Generator | None = None, **_: Any) -> Masks:
    return random_mask(masks, ratio, generator)


@dataclass(frozen=True)
class Criterion:
    """One pruning criterion: its function (the module's signature), a line of description, whether it needs
    ``data`` (and then an ``nn.Module``), and whether it prunes each layer separately (``layerwise``: the
    runner's schedule check counts per layer, :func:`core.pruning.kept_per_cycle`).

    Example:
        >>> [(name, c.needs_data) for name, c in CRITERIA.items()]
        [('global', False), ('layerwise', False), ('random', False), ('snip', True)]
    """

    fn: Callable[..., Masks]
    description: str
    needs_data: bool = False
    layerwise: bool = False


CRITERIA: dict[str, Criterion] = {
    "global": Criterion(_global, "global magnitude: smallest |w| across all layers (Frankle & Carbin 2019)"),
    "layerwise": Criterion(_layerwise, "layer-wise magnitude: smallest |w| of each layer (a weight with its masked "
                           "bias)", layerwise=True),
    "random": Criterion(_random, "uniformly random across all layers (a baseline)"),
    "snip": Criterion(snip_mask, "SNIP: smallest |g * w| on data (Lee et al. 2019)", needs_data=True),
}


def runner_methods() -> tuple[str, ...]:
    """The criteria the runner's ``--prune-method`` offers: those that need no data."""
    return tuple(name for name, c in CRITERIA.items() if not c.needs_data)


def next_masks(method: str, model: Weights, masks: Mapping[str, Tensor], ratio: float,
               generator: torch.Generator | None = None, *, data: Iterable[Any] | None = None,
               loss_fn: LossFn | None = None) -> Masks:
    """The masks after one pruning step of the criterion ``method`` of :data:`CRITERIA`.

    Args:
        method: a name of :data:`CRITERIA` (``global``, ``layerwise``, ``random``, ``snip``).
        model: the network (an ``nn.Module``), or name -> weight for criteria that need no data.
        masks: name -> current mask.
        ratio: the fraction of the kept weights to remove, in [0, 1).
        generator: for ``random``: a CPU ``torch.Generator`` (None: torch's global random state).
        data, loss_fn: for data-dependent criteria (``snip``): batches and ``loss_fn(outputs, targets)``.

    Returns:
        The new masks; nothing is modified.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> masks = {n: torch.ones_like(p) for n, p in net.named_parameters() if n.endswith("weight")}
        >>> for _ in range(3):
        ...     masks = next_masks("global", net, masks, 0.2)
        >>> sum(int(m.sum()) for m in masks.values())  # 48 -> 38 -> 30 -> 24
        24
    """
    if method not in CRITERIA:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(CRITERIA)}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"the pruning ratio must lie in [0, 1), got {ratio!r}")
    criterion = CRITERIA[method]
    if criterion.needs_data and (data is None or not isinstance(model, nn.Module)):
        raise ValueError(f"pruning method {method!r} needs data= (batches) and the model as an nn.Module")
    return criterion.fn(model, masks, ratio, data=data, loss_fn=loss_fn, generator=generator)
