"""The pruning masks' numbers: which weights are masked, how many each cycle keeps, which ones, and the densities
the schedules give (core.pruning.masks and core.pruning.magnitude). Exact values and equivalences with
torch.nn.utils.prune, in milliseconds."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from core.pruning import (
    apply_masks,
    coverage,
    cycle_ratios,
    dense_masks,
    density,
    global_magnitude_mask,
    kept_per_cycle,
    layer_groups,
    layerwise_magnitude_mask,
    max_linear_cycles,
    prunable_names,
    random_mask,
    target_densities,
)


def _ones(weights):
    return {k: torch.ones_like(v) for k, v in weights.items()}


def test_biases_and_embeddings_are_masked_only_on_request():
    net = nn.Sequential(nn.Embedding(5, 3), nn.Conv1d(3, 2, 1), nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2))
    assert prunable_names(net) == ["1.weight", "2.weight"]
    assert prunable_names(net, biases=True) == ["1.weight", "1.bias", "2.weight"]
    assert prunable_names(net, embeddings=True, biases=True) == ["0.weight", "1.weight", "1.bias", "2.weight"]
    assert prunable_names(net, [r"^1\.", "nothing"], biases=True) == ["2.weight"]
    assert prunable_names(nn.GRU(2, 3), biases=True) == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    attention = nn.MultiheadAttention(4, 2)
    assert prunable_names(attention, biases=True) == ["in_proj_weight", "in_proj_bias", "out_proj.weight",
                                                      "out_proj.bias"]


def test_dense_masks_are_ones_like_each_weight():
    net = nn.Sequential(nn.Linear(3, 4).double(), nn.ReLU(), nn.Linear(4, 2))
    masks = dense_masks(net, biases=True)
    assert list(masks) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for name, p in net.named_parameters():
        assert masks[name].dtype == p.dtype and masks[name].shape == p.shape and bool((masks[name] == 1).all())
    assert list(dense_masks(net, [r"^2\."])) == ["0.weight"]
    embedded = nn.Sequential(nn.Embedding(3, 2), nn.Linear(2, 1))
    assert list(dense_masks(embedded)) == ["1.weight"]
    assert list(dense_masks(embedded, embeddings=True)) == ["0.weight", "1.weight"]


def test_coverage_counts_every_parameter_and_lists_the_unmasked_matrices():
    net = nn.Sequential(*[nn.Embedding(2, 3) for _ in range(6)], nn.Linear(3, 1))
    cov = coverage(net)
    assert (cov.pruned, cov.total) == (3, 6 * 6 + 3 + 1)
    assert list(cov.dense) == [f"{i}.weight" for i in range(6)]
    assert cov.describe() == ("not pruned: 0.weight, 1.weight, 2.weight, 3.weight and 2 more (36 weights in "
                              "matrices without a mask); the reported sparsity covers 3 of the model's 40 weights "
                              "(7.5%)")
    assert coverage(net, biases=True).pruned == 4
    for n, more in ((4, ""), (5, " and 1 more")):
        four = coverage(nn.Sequential(*[nn.Embedding(1, 1) for _ in range(n)])).describe()
        assert four.startswith(f"not pruned: 0.weight, 1.weight, 2.weight, 3.weight{more} ({n} weights")
    assert coverage(nn.Linear(1, 1, bias=False)).describe().endswith("covers 1 of the model's 1 weights (100.0%)")
    assert coverage(net, embeddings=True).dense == {}
    assert coverage(nn.Linear(3, 1), [r"weight"]).pruned == 0
    bare = nn.Module()
    bare.v = nn.Parameter(torch.zeros(4))  # a vector, not a matrix: not listed as dense
    assert (coverage(bare).dense, coverage(bare).total) == ({}, 4)


def test_density_is_the_kept_share_of_all_masked_weights():
    masks = {"a": torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "b": torch.zeros(3), "c": torch.ones(1)}
    assert density(masks) == 4 / 8
    assert density({"a": torch.ones(5)}) == 1.0


def test_schedules_exact_densities_and_ratios():
    assert target_densities("geometric", 0.5, 4) == [1.0, 0.5, 0.25, 0.125]
    assert target_densities("linear", 0.25, 4) == [1.0, 0.75, 0.5, 0.25]
    assert target_densities("linear", 0.25, 1) == [1.0]
    assert target_densities("linear", 0.75, 1) == [1.0]
    assert target_densities("geometric", 0.9, 0) == []
    assert cycle_ratios("geometric", 0.2, 4) == [0.2, 0.2, 0.2]
    assert cycle_ratios("linear", 0.25, 4) == [0.25, 1 - 0.5 / 0.75, 0.5]
    assert cycle_ratios("linear", 0.25, 1) == []
    assert [max_linear_cycles(r) for r in (0.25, 1 / 99, 0.3, 0.6, 0.99, 1 - 1e-10)] == [4, 99, 4, 2, 2, 1]


def test_schedules_refuse_what_they_cannot_give():
    with pytest.raises(ValueError, match="unknown pruning schedule 'cubic'; choose one of geometric, linear"):
        target_densities("cubic", 0.2, 3)
    for ratio in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=f"the pruning ratio must lie in \\(0, 1\\), got {ratio!r}"):
            target_densities("geometric", ratio, 3)
    with pytest.raises(ValueError, match="a linear schedule of ratio 0.25 reaches density 0 at cycle 4; at most 4 "
                                         "cycles"):
        target_densities("linear", 0.25, 5)
    with pytest.raises(ValueError, match="reaches density 0"):
        target_densities("linear", 0.5, 3)  # 1 - 2 x 0.5 = 0 exactly
    assert target_densities("linear", 0.5, 2) == [1.0, 0.5]
    with pytest.raises(ValueError, match="reaches density 0 at cycle 1"):
        target_densities("linear", 1 - 1e-13, 2)  # the second cycle's density, 1e-13, is 0 to the schedule


def test_kept_per_cycle_rounds_as_the_masks_do():
    assert kept_per_cycle([1000], 0.5, 4) == [1000, 500, 250, 125]
    assert kept_per_cycle([600, 400], 0.2, 3) == [1000, 800, 640]
    assert kept_per_cycle([10], 0.25, 3) == [10, 8, 6]  # round(2.5) = 2, round(2.0) = 2
    assert kept_per_cycle([3, 3], 0.5, 3, layerwise=True) == [6, 2, 2]  # round(1.5) = 2 per layer, then round(0.5) = 0
    assert kept_per_cycle([3, 3], 0.5, 3) == [6, 3, 1]
    assert kept_per_cycle([5, 7], [0.2, 0.5], 3) == [12, 10, 5]
    assert kept_per_cycle([5, 7], [0.2, 0.5], 3, layerwise=True) == [12, 10, 5]
    assert kept_per_cycle([8], 1, 2) == [8, 0]
    assert kept_per_cycle([4, 6], 0.5, 1) == [10]


def test_kept_per_cycle_counts_the_masks_of_both_methods():
    torch.manual_seed(0)
    weights = {"l.weight": torch.randn(9, 4), "l.bias": torch.randn(9), "m.weight": torch.randn(11)}
    for layerwise, step, sizes in ((False, global_magnitude_mask, [36 + 9 + 11]),
                                   (True, layerwise_magnitude_mask, [36 + 9, 11])):
        masks, counts = _ones(weights), []
        for _ in range(5):
            counts.append(int(sum(m.sum() for m in masks.values())))
            masks = step(weights, masks, 0.3)
        assert counts == kept_per_cycle(sizes, 0.3, 5, layerwise=layerwise)


def test_global_magnitude_selects_what_torch_global_unstructured_selects():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))
    weights = {n: p.detach().clone() for n, p in net.named_parameters() if n.endswith("weight")}
    ours = global_magnitude_mask(weights, _ones(weights), 0.37)
    prune.global_unstructured([(net[0], "weight"), (net[1], "weight")], prune.L1Unstructured, amount=0.37)
    assert torch.equal(ours["0.weight"], net[0].weight_mask) and torch.equal(ours["1.weight"], net[1].weight_mask)
    # a second cycle removes round(0.37 x kept) of the kept weights; the pruned ones stay pruned
    again = global_magnitude_mask(weights, ours, 0.37)
    kept = int(sum(m.sum() for m in ours.values()))
    assert int(sum(m.sum() for m in again.values())) == kept - round(0.37 * kept)
    assert all(bool((again[n] <= ours[n]).all()) for n in ours)


def test_layerwise_magnitude_is_torch_l1_unstructured_per_layer():
    torch.manual_seed(2)
    layers = [nn.Linear(7, 4, bias=False), nn.Linear(4, 3, bias=False)]
    weights = {f"{i}.weight": layer.weight.detach().clone() for i, layer in enumerate(layers)}
    ours = layerwise_magnitude_mask(weights, _ones(weights), 0.45)
    for i, layer in enumerate(layers):
        prune.l1_unstructured(layer, "weight", amount=0.45)
        assert torch.equal(ours[f"{i}.weight"], layer.weight_mask)


def test_pruned_weights_stay_pruned_and_are_not_counted_again():
    weights = {"a": torch.tensor([0.0, 0.01, 5.0, 4.0, 3.0, 2.0])}
    mask = {"a": torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0])}
    for step in (global_magnitude_mask, layerwise_magnitude_mask):
        new = step(weights, mask, 0.5)
        assert new["a"].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
        assert mask["a"].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]  # the argument is not modified
    assert global_magnitude_mask(weights, mask, 0.0)["a"].tolist() == mask["a"].tolist()
    assert global_magnitude_mask(weights, mask, 0.1)["a"].tolist() == mask["a"].tolist()  # round(0.4) = 0


def test_masks_keep_their_shape_and_dtype():
    weights = {"w": torch.tensor([[3.0, -1.0], [0.5, -4.0]], dtype=torch.float64), "v": torch.tensor([2.0, -0.1])}
    masks = {"w": torch.ones(2, 2, dtype=torch.float64), "v": torch.ones(2)}
    for new in (global_magnitude_mask(weights, masks, 0.5), layerwise_magnitude_mask(weights, masks, 0.5)):
        assert (new["w"].dtype, new["w"].shape, new["v"].dtype) == (torch.float64, (2, 2), torch.float32)
    assert global_magnitude_mask(weights, masks, 0.5)["w"].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert global_magnitude_mask(weights, masks, 0.5)["v"].tolist() == [1.0, 0.0]


def test_layer_groups_pair_each_bias_with_its_weight():
    names = ["weight", "bias", "a.bias", "b.weight", "b.bias", "r.weight_hh_l0", "r.bias_hh_l0", "r.bias_ih_l0",
             "m.in_proj_weight", "m.in_proj_bias", "m.out_proj.bias"]
    assert layer_groups(names) == [["weight", "bias"], ["a.bias"], ["b.weight", "b.bias"],
                                   ["r.weight_hh_l0", "r.bias_hh_l0"], ["r.bias_ih_l0"],
                                   ["m.in_proj_weight", "m.in_proj_bias"], ["m.out_proj.bias"]]
    assert layer_groups({"x.weight": torch.ones(1), "x.bias": torch.ones(1)}) == [["x.weight", "x.bias"]]


def test_random_mask_removes_the_count_from_the_kept_weights_repeatably():
    masks = {"a": torch.ones(6), "b": torch.tensor([1.0, 0.0, 1.0, 0.0])}
    first = random_mask(masks, 0.5, torch.Generator().manual_seed(3))
    assert int(sum(m.sum() for m in first.values())) == 8 - 4
    assert first["b"][1] == 0 and first["b"][3] == 0
    again = random_mask(masks, 0.5, torch.Generator().manual_seed(3))
    assert all(torch.equal(first[k], again[k]) for k in masks)
    assert masks["a"].tolist() == [1.0] * 6


def test_apply_masks_zeroes_exactly_the_masked_entries():
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        net.bias.copy_(torch.tensor([5.0, 6.0]))
    apply_masks(net, {"weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]])})
    assert net.weight.tolist() == [[1.0, 0.0], [0.0, 4.0]] and net.bias.tolist() == [5.0, 6.0]
