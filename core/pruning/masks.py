"""Which weights are pruned, their masks, density and :func:`apply_masks`.

Prunable parameters are the weight matrices of convolutional, linear and recurrent layers (RNN, LSTM,
GRU: every ``weight_ih_l*``, ``weight_hh_l*``) and of ``nn.MultiheadAttention`` (its input
projections; the output projection is linear), of any model (the toolkit's zoo, torchvision, timm or
the user's own); embeddings only on request (``embeddings=True``), the biases of those layers only on
request (``biases=True``, as the MNIST-1D paper's lottery-ticket experiment prunes them; Greydanus 2020),
normalisation layers never. No such layer is excluded by default (the first convolution and the
classifier are pruned too, as in SWAMP's and open_lth's global pruning); ``exclude`` patterns
(``--prune-exclude``) keep the weights whose names they match dense: those weights get no mask, and
densities count only the masked weights (:func:`coverage` says what share of all weights that is). A
tensor shared by several layers (tied weights) is one weight with one mask.

A mask is a float tensor of 0s and 1s shaped like its weight; ``Masks`` maps parameter names (as
``named_parameters`` gives them) to masks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Masks = dict[str, Tensor]
PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


def _weights_of(module: nn.Module, embeddings: bool, biases: bool) -> list[nn.Parameter]:
    """The weights among ``module``'s own parameters that are pruned:
    ``weight`` of conv and linear layers (and of embeddings when ``embeddings``), every ``weight_*`` of a
    recurrent layer (RNN/LSTM/GRU ``weight_ih_l*``, ``weight_hh_l*``, ``weight_hr_l*``) and the input
    projections of ``nn.MultiheadAttention`` (its output projection is an ``nn.Linear``); with ``biases``
    the biases of those layers too (``bias``, ``bias_*``, ``in_proj_bias``)."""
    own = dict(module.named_parameters(recurse=False))
    if isinstance(module, PRUNABLE_TYPES) or (embeddings and isinstance(module, EMBEDDING_TYPES)):
        keep = ("weight", "bias") if biases else ("weight",)
        return [own[n] for n in keep if n in own]
    if isinstance(module, nn.RNNBase):
        return [p for n, p in own.items() if n.startswith("weight_") or (biases and n.startswith("bias_"))]
    if isinstance(module, nn.MultiheadAttention):
        return [p for n, p in own.items() if n.endswith("proj_weight") or (biases and n == "in_proj_bias")]
    return []


def prunable_names(model: nn.Module, exclude: Sequence[str] = (), *, embeddings: bool = False,
                   biases: bool = False) -> list[str]:
    """Names (as in ``named_parameters``) of the weights of ``model`` that pruning masks.

    Args:
        model: any module.
        exclude: regular expressions (``re.search``); a weight whose name one matches stays dense.
        embeddings: also the weights of ``nn.Embedding``/``nn.EmbeddingBag``.
        biases: also the biases of the pruned layers (the MNIST-1D paper's lottery tickets prune them).

    Returns:
        The weights of conv and linear layers, recurrent layers (RNN/LSTM/GRU) and
        ``nn.MultiheadAttention`` (and what ``embeddings``/``biases`` add), in module order. A tensor
        shared by several layers (tied weights) is one weight with one mask, under the name
        ``named_parameters`` gives it (its first).

    Example:
        >>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(8, 2))
        >>> prunable_names(net), prunable_names(net, exclude=[r"^2\\."])
        (['0.weight', '2.weight'], ['0.weight'])
        >>> prunable_names(net, biases=True)
        ['0.weight', '0.bias', '2.weight', '2.bias']
        >>> prunable_names(nn.GRU(4, 8))
        ['weight_ih_l0', 'weight_hh_l0']
    """
    patterns = [re.compile(p) for p in exclude]
    canonical = {id(p): n for n, p in model.named_parameters()}
    names: list[str] = []
    for module in model.modules():
        for weight in _weights_of(module, embeddings, biases):
            name = canonical[id(weight)]
            if name not in names:
                names.append(name)
    return [n for n in names if not any(p.search(n) for p in patterns)]


def dense_masks(model: nn.Module, exclude: Sequence[str] = (), *, embeddings: bool = False,
                biases: bool = False) -> Masks:
    """All-ones masks for every prunable weight of ``model``: the masks of the dense network.

    Args:
        model, exclude, embeddings, biases: which weights, as :func:`prunable_names` chooses them.

    Returns:
        name -> float tensor of ones, shaped like the weight and on its device.

    Example:
        >>> masks = dense_masks(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
        >>> {name: tuple(m.shape) for name, m in masks.items()}, density(masks)
        ({'0.weight': (4, 3), '2.weight': (2, 4)}, 1.0)
    """
    params = dict(model.named_parameters())
    names = prunable_names(model, exclude, embeddings=embeddings, biases=biases)
    return {name: torch.ones_like(params[name]) for name in names}


@dataclass(frozen=True)
class Coverage:
    """What the masks of a model cover: ``pruned`` of its ``total`` weights (every parameter entry, each shared
    tensor once); ``dense`` the weight matrices (2 or more dimensions) left without a mask that no
    ``--prune-exclude`` pattern chose (embeddings, a model's own ``nn.Parameter`` matrices), name -> size."""

    pruned: int
    total: int
    dense: dict[str, int]

    def describe(self) -> str:
        """One line: the dense matrices and the share of all weights that the reported sparsity counts."""
        names = list(self.dense)
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        return (f"not pruned: {shown} ({sum(self.dense.values()):,} weights in matrices without a mask); the "
                f"reported sparsity covers {self.pruned:,} of the model's {self.total:,} weights "
                f"({100 * self.pruned / max(self.total, 1):.1f}%)")


def coverage(model: nn.Module, exclude: Sequence[str] = (), *, embeddings: bool = False,
             biases: bool = False) -> Coverage:
    """:class:`Coverage` of the masks :func:`dense_masks` gives ``model``.

    Example:
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
        >>> cov = coverage(net)
        >>> cov.pruned, cov.total, cov.dense
        (8, 50, {'0.weight': 40})
    """
    params = dict(model.named_parameters())
    masked = prunable_names(model, exclude, embeddings=embeddings, biases=biases)
    dense = {n: p.numel() for n, p in params.items()
             if p.dim() >= 2 and n not in masked and not any(re.search(x, n) for x in exclude)}
    return Coverage(sum(params[n].numel() for n in masked), sum(p.numel() for p in params.values()), dense)


def density(masks: Mapping[str, Tensor]) -> float:
    """The fraction of masked weights kept, d = sum_l |m_l|_1 / sum_l numel(m_l).

    Args:
        masks: name -> mask of 0s and 1s.

    Returns:
        The density in [0, 1] (1 - sparsity); after k cycles of pruning a fraction P it is (1 - P)^k up
        to rounding (:func:`kept_per_cycle`).

    Example:
        >>> density({"a": torch.tensor([1.0, 0.0, 1.0, 1.0]), "b": torch.zeros(4)})
        0.375
    """
    kept = sum(float(m.sum()) for m in masks.values())
    return kept / sum(m.numel() for m in masks.values())


PRUNE_SCHEDULES = ("geometric", "linear")


def target_densities(schedule: str, ratio: float, cycles: int) -> list[float]:
    """The density each cycle k = 0 .. ``cycles`` - 1 trains at.

    * ``geometric`` (IMP, SWAMP): d_k = (1 - P)^k, removing the fraction P of the remaining weights per cycle;
    * ``linear``: d_k = 1 - k P, removing the fraction P of all prunable weights per cycle (the MNIST-1D paper's
      lottery tickets: ``np.linspace(0, 1, 100)``, P = 1/99; Greydanus & Kobak 2024).

    Args:
        schedule: one of :data:`PRUNE_SCHEDULES`.
        ratio: P, in (0, 1).
        cycles: how many densities (cycle 0 is dense).

    Returns:
        ``[d_0, ..., d_{cycles-1}]``, with d_0 = 1.

    Raises:
        ValueError: an unknown schedule, a ratio outside (0, 1), or a linear schedule that reaches density 0.

    Example:
        >>> target_densities("geometric", 0.5, 3), target_densities("linear", 0.25, 4)
        ([1.0, 0.5, 0.25], [1.0, 0.75, 0.5, 0.25])
    """
    if schedule not in PRUNE_SCHEDULES:
        raise ValueError(f"unknown pruning schedule {schedule!r}; choose one of {', '.join(PRUNE_SCHEDULES)}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"the pruning ratio must lie in (0, 1), got {ratio!r}")
    if schedule == "geometric":
        return [(1.0 - ratio) ** k for k in range(cycles)]
    if cycles > 1 and 1.0 - (cycles - 1) * ratio <= 1e-12:
        raise ValueError(f"a linear schedule of ratio {ratio} reaches density 0 at cycle "
                         f"{max_linear_cycles(ratio)}; at most {max_linear_cycles(ratio)} cycles")
    return [1.0 - k * ratio for k in range(cycles)]


def max_linear_cycles(ratio: float) -> int:
    """The most cycles a linear schedule of ``ratio`` allows (the last one at a density above 0).

    Example:
        >>> max_linear_cycles(0.25), max_linear_cycles(1 / 99)
        (4, 99)
    """
    return max(1, math.ceil(1.0 / ratio - 1e-9))


def cycle_ratios(schedule: str, ratio: float, cycles: int) -> list[float]:
    """The fraction of the remaining weights each pruning step removes: after cycle k, 1 - d_{k+1} / d_k of
    :func:`target_densities` (``cycles`` - 1 steps, one between consecutive cycles); P itself for ``geometric``.

    Example:
        >>> cycle_ratios("geometric", 0.2, 3), cycle_ratios("linear", 0.25, 4)
        ([0.2, 0.2], [0.25, 0.33333333333333337, 0.5])
    """
    d = target_densities(schedule, ratio, cycles)
    if schedule == "geometric":
        return [ratio] * (cycles - 1)
    return [1.0 - d[k + 1] / d[k] for k in range(cycles - 1)]


def kept_per_cycle(sizes: Sequence[int], ratio: float | Sequence[float], cycles: int,
                   layerwise: bool = False) -> list[int]:
    """Prunable weights that cycles 0 .. ``cycles`` - 1 keep, for tensors of ``sizes`` weights: each cycle k
    removes ``round(r_k * kept)`` of them (of each
    layer's with ``layerwise``, ``sizes`` then per layer), as the masks do; ``ratio`` is
    one r for every cycle or the sequence r_0, r_1, ... (:func:`cycle_ratios`).

    Example:
        >>> kept_per_cycle([1000], 0.5, 4), kept_per_cycle([3, 3], 0.5, 3, layerwise=True)
        ([1000, 500, 250, 125], [6, 2, 2])
        >>> kept_per_cycle([1000], cycle_ratios("linear", 0.25, 4), 4)
        [1000, 750, 500, 250]
    """
    ratios = [ratio] * max(0, cycles - 1) if isinstance(ratio, (int, float)) else list(ratio)
    kept, counts = [list(sizes)], list(sizes)
    for k in range(cycles - 1):
        if layerwise:
            counts = [n - round(ratios[k] * n) for n in counts]
        else:
            total = sum(counts)
            counts = [total - round(ratios[k] * total)]
        kept.append(counts)
    return [sum(k) for k in kept]


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Set the pruned weights of ``model`` to 0, in place: theta_l <- m_l * theta_l for every masked l.

    Args:
        model: the module to prune (modified in place; the one function here that modifies its argument).
        masks: name -> mask (on the weight's device); names as ``model.named_parameters()`` gives them.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> apply_masks(net, {"weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]])})
        >>> int((net.weight == 0).sum())
        2
    """
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask)
