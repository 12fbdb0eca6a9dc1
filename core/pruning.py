"""Pruning masks as pure functions ``(weights, mask) -> new mask``.

Prunable parameters are the weight matrices of convolutional, linear and recurrent layers (RNN, LSTM,
GRU: every ``weight_ih_l*``, ``weight_hh_l*``) and of ``nn.MultiheadAttention`` (its input
projections; the output projection is linear), of any model (the toolkit's zoo, torchvision, timm or
the user's own); embeddings only on request (``embeddings=True``); biases and normalisation layers
never. No such layer is excluded by default (the first convolution and the classifier are pruned too,
as in SWAMP's and open_lth's global pruning); ``exclude`` patterns (``--prune-exclude``) keep the
weights whose names they match dense: those weights get no mask, and densities count only the masked
weights (:func:`coverage` says what share of all weights that is). A tensor shared by several layers
(tied weights) is one weight with one mask.

Every function removes ``round(ratio * remaining)`` of the weights that the current mask keeps
(Frankle & Carbin 2019; Frankle et al. 2020), so after k cycles the density is (1 - ratio)^k up to
rounding. The count follows torch.nn.utils.prune's rounding, and the global variant selects the
same weights as ``prune.global_unstructured(..., L1Unstructured, amount=ratio)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Masks = dict[str, Tensor]
PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


def _weights_of(module: nn.Module, embeddings: bool) -> list[str]:
    """The names (in ``module``'s own parameters) of the weight matrices of one module that are pruned:
    ``weight`` of conv and linear layers (and of embeddings when ``embeddings``), every ``weight_*`` of a
    recurrent layer (RNN/LSTM/GRU ``weight_ih_l*``, ``weight_hh_l*``, ``weight_hr_l*``) and the input
    projections of ``nn.MultiheadAttention`` (its output projection is an ``nn.Linear``)."""
    own = module._parameters
    if isinstance(module, PRUNABLE_TYPES) or (embeddings and isinstance(module, EMBEDDING_TYPES)):
        return ["weight"] if isinstance(own.get("weight"), nn.Parameter) else []
    if isinstance(module, nn.RNNBase):
        return [n for n, p in own.items() if n.startswith("weight_") and isinstance(p, nn.Parameter)]
    if isinstance(module, nn.MultiheadAttention):
        return [n for n, p in own.items() if n.endswith("proj_weight") and isinstance(p, nn.Parameter)]
    return []


def prunable_names(model: nn.Module, exclude: Sequence[str] = (), *, embeddings: bool = False) -> list[str]:
    """Names (as in ``named_parameters``) of the weight matrices of ``model`` that pruning masks: those of
    conv and linear layers, recurrent layers (RNN/LSTM/GRU) and ``nn.MultiheadAttention``, and of
    embeddings when ``embeddings``; but those that a regular expression of ``exclude`` matches
    (``re.search``). A tensor shared by several layers (tied weights) is one weight with one mask, under
    the name ``named_parameters`` gives it (its first).

    Example:
        >>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(8, 2))
        >>> prunable_names(net), prunable_names(net, exclude=[r"^2\\."])
        (['0.weight', '2.weight'], ['0.weight'])
        >>> prunable_names(nn.GRU(4, 8))
        ['weight_ih_l0', 'weight_hh_l0']
    """
    patterns = [re.compile(p) for p in exclude]
    canonical = {id(p): n for n, p in model.named_parameters()}
    names: list[str] = []
    for module in model.modules():
        for leaf in _weights_of(module, embeddings):
            name = canonical[id(module._parameters[leaf])]
            if name not in names:
                names.append(name)
    return [n for n in names if not any(p.search(n) for p in patterns)]


def dense_masks(model: nn.Module, exclude: Sequence[str] = (), *, embeddings: bool = False) -> Masks:
    """All-ones masks (float, on the parameters' device) for every prunable weight (see :func:`prunable_names`)."""
    params = dict(model.named_parameters())
    return {name: torch.ones_like(params[name]) for name in prunable_names(model, exclude, embeddings=embeddings)}


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


def coverage(model: nn.Module, exclude: Sequence[str] = (), *, embeddings: bool = False) -> Coverage:
    """:class:`Coverage` of the masks :func:`dense_masks` gives ``model``.

    Example:
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
        >>> cov = coverage(net)
        >>> cov.pruned, cov.total, cov.dense
        (8, 50, {'0.weight': 40})
    """
    params = dict(model.named_parameters())
    masked = prunable_names(model, exclude, embeddings=embeddings)
    dense = {n: p.numel() for n, p in params.items()
             if p.dim() >= 2 and n not in masked and not any(re.search(x, n) for x in exclude)}
    return Coverage(sum(params[n].numel() for n in masked), sum(p.numel() for p in params.values()), dense)


def density(masks: Mapping[str, Tensor]) -> float:
    """Fraction of prunable weights kept."""
    kept = sum(float(m.sum()) for m in masks.values())
    return kept / sum(m.numel() for m in masks.values())


def kept_per_cycle(sizes: Sequence[int], ratio: float, cycles: int, layerwise: bool = False) -> list[int]:
    """Prunable weights that cycles 0 .. ``cycles`` - 1 keep, for tensors of ``sizes`` weights: each cycle
    removes ``round(ratio * kept)`` of them (of each tensor's with ``layerwise``), as the masks do.

    Example:
        >>> kept_per_cycle([1000], 0.5, 4), kept_per_cycle([3, 3], 0.5, 3, layerwise=True)
        ([1000, 500, 250, 125], [6, 2, 2])
    """
    kept, counts = [list(sizes)], list(sizes)
    for _ in range(cycles - 1):
        if layerwise:
            counts = [n - round(ratio * n) for n in counts]
        else:
            total = sum(counts)
            counts = [total - round(ratio * total)]
        kept.append(counts)
    return [sum(k) for k in kept]


def _prune_smallest(scores: Tensor, mask: Tensor, ratio: float) -> Tensor:
    """Zero the ``round(ratio * kept)`` kept entries with the smallest score (flat tensors)."""
    n_prune = round(ratio * int(mask.sum()))
    new = mask.clone()
    if n_prune > 0:
        masked_scores = torch.where(mask.bool(), scores, torch.full_like(scores, float("inf")))
        new[torch.topk(masked_scores, n_prune, largest=False).indices] = 0
    return new


def _flat(tensors: Mapping[str, Tensor], names: list[str]) -> Tensor:
    return torch.cat([tensors[n].detach().reshape(-1).float() for n in names])


def _unflatten(flat: Tensor, like: Mapping[str, Tensor], names: list[str]) -> Masks:
    out, start = {}, 0
    for n in names:
        size = like[n].numel()
        out[n] = flat[start:start + size].view_as(like[n]).to(like[n].dtype)
        start += size
    return out


def global_magnitude_mask(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], ratio: float) -> Masks:
    """Prune the smallest-magnitude ``ratio`` of the remaining weights, ranked across all layers."""
    names = list(masks)
    new = _prune_smallest(_flat(weights, names).abs(), _flat(masks, names), ratio)
    return _unflatten(new, masks, names)


def layerwise_magnitude_mask(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], ratio: float) -> Masks:
    """Prune the smallest-magnitude ``ratio`` of the remaining weights of each layer separately."""
    return {n: _prune_smallest(weights[n].detach().reshape(-1).abs().float(), m.reshape(-1).float(), ratio)
            .view_as(m).to(m.dtype) for n, m in masks.items()}


def random_mask(masks: Mapping[str, Tensor], ratio: float, generator: torch.Generator) -> Masks:
    """Prune ``ratio`` of the remaining weights uniformly at random across all layers (a baseline)."""
    names = list(masks)
    flat = _flat(masks, names)
    scores = torch.rand(flat.shape, generator=generator).to(flat.device)
    return _unflatten(_prune_smallest(scores, flat, ratio), masks, names)


def next_masks(method: str, weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], ratio: float,
               generator: torch.Generator) -> Masks:
    """Dispatch on the ``--prune-method`` name."""
    if method == "global":
        return global_magnitude_mask(weights, masks, ratio)
    if method == "layerwise":
        return layerwise_magnitude_mask(weights, masks, ratio)
    if method == "random":
        return random_mask(masks, ratio, generator)
    raise ValueError(f"unknown pruning method {method!r}")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Multiply each prunable weight of ``model`` by its mask, in place."""
    params = dict(model.named_parameters())
    names = list(masks)
    torch._foreach_mul_([params[n] for n in names], [masks[n] for n in names])
