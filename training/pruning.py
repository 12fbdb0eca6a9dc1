"""Pruning masks as pure functions ``(weights, mask) -> new mask``.

Prunable parameters are the weights of convolutional and linear layers, of any model (the toolkit's
zoo, torchvision, timm or the user's own); biases, normalisation layers and embeddings are never
pruned. No conv/linear layer is excluded by default (the first convolution and the classifier are
pruned too, as in SWAMP's and open_lth's global pruning); ``exclude`` patterns (``--prune-exclude``)
keep the weights whose names they match dense: those weights get no mask, and densities count only
the masked weights.

Every function removes ``round(ratio * remaining)`` of the weights that the current mask keeps
(Frankle & Carbin 2019; Frankle et al. 2020), so after k cycles the density is (1 - ratio)^k up to
rounding. The count follows torch.nn.utils.prune's rounding, and the global variant selects the
same weights as ``prune.global_unstructured(..., L1Unstructured, amount=ratio)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

Masks = dict[str, Tensor]
PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_names(model: nn.Module, exclude: Sequence[str] = ()) -> list[str]:
    """Names (as in ``named_parameters``) of the conv and linear weights of ``model``, but those that a
    regular expression of ``exclude`` matches (``re.search``).

    Example:
        >>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(8, 2))
        >>> prunable_names(net), prunable_names(net, exclude=[r"^2\\."])
        (['0.weight', '2.weight'], ['0.weight'])
    """
    patterns = [re.compile(p) for p in exclude]
    names = [f"{mod_name}.weight" if mod_name else "weight"
             for mod_name, module in model.named_modules()
             if isinstance(module, PRUNABLE_TYPES) and isinstance(getattr(module, "weight", None), nn.Parameter)]
    return [n for n in names if not any(p.search(n) for p in patterns)]


def dense_masks(model: nn.Module, exclude: Sequence[str] = ()) -> Masks:
    """All-ones masks (float, on the parameters' device) for every prunable weight (see :func:`prunable_names`)."""
    params = dict(model.named_parameters())
    return {name: torch.ones_like(params[name]) for name in prunable_names(model, exclude)}


def density(masks: Mapping[str, Tensor]) -> float:
    """Fraction of prunable weights kept."""
    kept = sum(float(m.sum()) for m in masks.values())
    return kept / sum(m.numel() for m in masks.values())


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
