"""Magnitude and random pruning as pure functions ``(weights, masks, ratio) -> new masks``.

Every function removes ``round(ratio * remaining)`` of the weights that the current mask keeps
(Frankle & Carbin 2019; Frankle et al. 2020), so after k cycles the density is (1 - ratio)^k up to
rounding. The count follows torch.nn.utils.prune's rounding, and the global variant selects the
same weights as ``prune.global_unstructured(..., L1Unstructured, amount=ratio)``. Nothing is modified:
the arguments are read, new masks returned.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from core.pruning.masks import Masks


def prune_smallest(scores: Tensor, mask: Tensor, ratio: float) -> Tensor:
    """Zero the ``round(ratio * kept)`` kept entries of the flat ``mask`` with the smallest ``scores``."""
    n_prune = round(ratio * int(mask.sum()))
    new = mask.clone()
    if n_prune > 0:
        masked_scores = torch.where(mask.bool(), scores, torch.full_like(scores, float("inf")))
        new[torch.topk(masked_scores, n_prune, largest=False).indices] = 0
    return new


def flat(tensors: Mapping[str, Tensor], names: list[str]) -> Tensor:
    """The tensors ``names`` of ``tensors``, detached, as one flat float32 vector."""
    return torch.cat([tensors[n].detach().reshape(-1).float() for n in names])


def unflatten(vector: Tensor, like: Mapping[str, Tensor], names: list[str]) -> Masks:
    """The flat ``vector`` cut back into tensors shaped (and typed) like ``like[name]``."""
    out, start = {}, 0
    for n in names:
        size = like[n].numel()
        out[n] = vector[start:start + size].view_as(like[n]).to(like[n].dtype)
        start += size
    return out


def prune_by_scores(scores: Mapping[str, Tensor], masks: Mapping[str, Tensor], ratio: float) -> Masks:
    """Remove the ``round(ratio * kept)`` kept weights of lowest score, ranked across all masked tensors."""
    names = list(masks)
    return unflatten(prune_smallest(flat(scores, names), flat(masks, names), ratio), masks, names)


def global_magnitude_mask(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], ratio: float) -> Masks:
    """Prune the ``ratio`` of the remaining weights of smallest magnitude |theta_j|, ranked across all layers
    (global magnitude pruning; Frankle & Carbin 2019, as SWAMP prunes).

    Args:
        weights: name -> weight tensor (a state dict or ``dict(model.named_parameters())``).
        masks: name -> current mask; only these weights are ranked.
        ratio: the fraction of the kept weights to remove, in [0, 1).

    Returns:
        The new masks (a pruned weight stays pruned).

    Example:
        >>> w = {"a": torch.tensor([0.1, -3.0, 0.2]), "b": torch.tensor([2.0, -0.05, 1.0])}
        >>> m = global_magnitude_mask(w, {k: torch.ones(3) for k in w}, 0.5)
        >>> m["a"].tolist(), m["b"].tolist()
        ([0.0, 1.0, 0.0], [1.0, 0.0, 1.0])
    """
    return prune_by_scores({n: weights[n].abs() for n in masks}, masks, ratio)


def layer_groups(names: list[str] | tuple[str, ...] | Mapping[str, Tensor]) -> list[list[str]]:
    """The masked tensors grouped by layer: a bias with its layer's weight (``P.bias`` with ``P.weight``, a
    recurrent layer's ``P.bias_ih_l0`` with ``P.weight_ih_l0``, ``in_proj_bias`` with ``in_proj_weight``), every
    other tensor alone; in the order of ``names``.

    Example:
        >>> layer_groups(["0.weight", "0.bias", "2.weight", "gru.weight_ih_l0", "gru.bias_ih_l0", "3.bias"])
        [['0.weight', '0.bias'], ['2.weight'], ['gru.weight_ih_l0', 'gru.bias_ih_l0'], ['3.bias']]
    """
    names = list(names)
    present = set(names)
    groups: dict[str, list[str]] = {}
    for name in names:
        prefix, _, last = name.rpartition(".")
        lead = f"{prefix}." if prefix else ""
        partner = {"bias": "weight", "in_proj_bias": "in_proj_weight"}.get(last)
        if partner is None and last.startswith("bias_"):
            partner = "weight_" + last[len("bias_"):]
        key = lead + partner if partner is not None and lead + partner in present else name
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def layerwise_magnitude_mask(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], ratio: float) -> Masks:
    """Prune the ``ratio`` of the remaining weights of smallest magnitude of each layer separately (layer-wise
    magnitude pruning, as the MNIST-1D paper's lottery tickets; Greydanus & Kobak 2024): a layer is each masked
    tensor, together with its bias where the bias is masked too (:func:`layer_groups`), ranked jointly as the
    paper ranks a layer's weights and biases.

    Args:
        weights, masks, ratio: as in :func:`global_magnitude_mask`.

    Returns:
        The new masks: every layer keeps ``kept - round(ratio * kept)`` of its weights.

    Example:
        >>> w = {"a": torch.tensor([0.1, -3.0, 0.2, 4.0]), "b": torch.tensor([2.0, -0.05, 1.0, 3.0])}
        >>> m = layerwise_magnitude_mask(w, {k: torch.ones(4) for k in w}, 0.5)
        >>> m["a"].tolist(), m["b"].tolist()
        ([0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0])
        >>> w = {"l.weight": torch.tensor([0.1, -0.3, 0.2, 0.4]), "l.bias": torch.tensor([2.0, 0.05])}
        >>> m = layerwise_magnitude_mask(w, {k: torch.ones_like(v) for k, v in w.items()}, 0.5)
        >>> m["l.weight"].tolist(), m["l.bias"].tolist()  # the large bias survives the layer's ranking
        ([0.0, 1.0, 0.0, 1.0], [1.0, 0.0])
    """
    out: Masks = {}
    for group in layer_groups(masks):
        out.update(prune_by_scores({n: weights[n].abs() for n in group}, {n: masks[n] for n in group}, ratio))
    return out


def random_mask(masks: Mapping[str, Tensor], ratio: float, generator: torch.Generator | None = None) -> Masks:
    """Prune the ``ratio`` of the remaining weights uniformly at random across all layers (the random-pruning
    baseline of Frankle & Carbin 2019).

    Args:
        masks, ratio: as in :func:`global_magnitude_mask`.
        generator: a CPU ``torch.Generator`` for repeatable masks (None: torch's global random state).

    Returns:
        The new masks.

    Example:
        >>> m = random_mask({"a": torch.ones(10)}, 0.3, torch.Generator().manual_seed(0))
        >>> int(m["a"].sum())
        7
    """
    names = list(masks)
    vector = flat(masks, names)
    scores = torch.rand(vector.shape, generator=generator).to(vector.device)
    return unflatten(prune_smallest(scores, vector, ratio), masks, names)
