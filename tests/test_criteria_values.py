"""The masks the pruning criteria publish (core.pruning.criteria): SNIP scores |g * w| by hand, the mean gradient
over several batches, the default cross-entropy of logits in any output structure, next_masks' densities and the
weights it keeps for every criterion of the registry, and its refusals. Each test runs in milliseconds."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from core.pruning import CRITERIA, density, next_masks, random_mask, runner_methods, snip_mask, snip_scores
from core.pruning.criteria import default_loss, weights_of
from tests.conftest import linear_net


def test_snip_scores_are_the_mean_gradient_over_the_batches_times_the_weight():
    """L = (w . x - y)^2, dL/dw = 2 (w . x - y) x. w = (2, -1): batch 1, x = (1, 3), y = 0: w . x = -1, g = (-2, -6);
    batch 2, x = (2, 1), y = 1: w . x - y = 2, g = (8, 4). Mean g = (3, -1), scores |g w| = (6, 1) (a sum would
    give (12, 2), the last batch alone (16, 4))."""
    net = linear_net([[2.0, -1.0]])
    data = [(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 1)), (torch.tensor([[2.0, 1.0]]), torch.ones(1, 1))]
    scores = snip_scores(net, {"weight": torch.ones(1, 2)}, data, nn.functional.mse_loss)
    assert list(scores) == ["weight"] and scores["weight"].tolist() == [[6.0, 1.0]]
    one = snip_scores(net, {"weight": torch.ones(1, 2)}, data[1:], nn.functional.mse_loss)
    assert one["weight"].tolist() == [[16.0, 4.0]]
    # the same batches as mappings with "labels" give the same scores
    mapped = [{"input": x, "labels": y} for x, y in data]
    assert snip_scores(net, {"weight": torch.ones(1, 2)}, mapped,
                       lambda out, y: nn.functional.mse_loss(out, y))["weight"].tolist() == [[6.0, 1.0]]
    assert net.weight.grad is None


def test_snip_scores_with_the_default_cross_entropy():
    """Logits z = W x = (8, 8) for W = [[1, 2], [4, 0]], x = (2, 3): softmax (1/2, 1/2); with class 1,
    dL/dz = (1/2, -1/2) and dL/dW = dL/dz x^T = [[1, 1.5], [-1, -1.5]], so |g W| = [[1, 3], [4, 0]]."""
    net = linear_net([[1.0, 2.0], [4.0, 0.0]])
    scores = snip_scores(net, {"weight": torch.ones(2, 2)}, [(torch.tensor([[2.0, 3.0]]), torch.tensor([1]))])
    assert scores["weight"].tolist() == [[1.0, 3.0], [4.0, 0.0]]


def test_default_loss_reads_the_logits_of_a_tensor_a_mapping_or_an_output_object():
    z, y = torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([1, 0])
    expected = (math.log(2.0) + math.log1p(math.exp(-2.0))) / 2  # -log softmax: log 2, log(1 + e^-2)
    for outputs in (z, {"logits": z, "hidden": torch.zeros(3)}, SimpleNamespace(logits=z, loss=torch.tensor(9.0))):
        assert default_loss(outputs, y).item() == pytest.approx(expected, rel=1e-6)


def test_a_weight_the_loss_does_not_reach_scores_zero():
    """A masked parameter outside the loss's graph (autograd gives no gradient) scores 0 and the others as by hand."""

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = linear_net([[2.0, -1.0]]), linear_net([[5.0, 7.0]])

        def forward(self, x):
            return self.used(x)

    data = [(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 1))]
    scores = snip_scores(TwoHeads(), {"used.weight": torch.ones(1, 2), "spare.weight": torch.ones(1, 2)}, data,
                         nn.functional.mse_loss)
    assert scores["used.weight"].tolist() == [[4.0, 6.0]] and scores["spare.weight"].tolist() == [[0.0, 0.0]]


def test_snip_refuses_batches_without_targets_and_empty_data():
    net, masks = linear_net([[2.0, -1.0]]), {"weight": torch.ones(1, 2)}
    message = "SNIP needs batches with targets: (inputs, targets) tuples or mappings with 'labels'"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        snip_scores(net, masks, [torch.ones(1, 2)])
    with pytest.raises(ValueError, match="^SNIP needs at least one batch of data$"):
        snip_scores(net, masks, [])


def test_snip_mask_removes_the_smallest_scores_across_layers():
    """out = v (w . x) with v = 1: w scores (6, 1) as in the mean-gradient test; dL/dv = 2 (out - y) (w . x) is
    2 and 12 on the two batches, so v scores 7. Removing 1/3 of the 3 kept weights drops the score 1."""
    net = nn.Sequential(linear_net([[2.0, -1.0]]), linear_net([[1.0]]))
    masks = {"0.weight": torch.ones(1, 2), "1.weight": torch.ones(1, 1)}
    data = [(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 1)), (torch.tensor([[2.0, 1.0]]), torch.ones(1, 1))]
    scores = snip_scores(net, masks, data, nn.functional.mse_loss)
    assert scores["0.weight"].tolist() == [[6.0, 1.0]] and scores["1.weight"].tolist() == [[7.0]]
    new = snip_mask(net, masks, 1 / 3, data=data, loss_fn=nn.functional.mse_loss)
    assert new["0.weight"].tolist() == [[1.0, 0.0]] and new["1.weight"].tolist() == [[1.0]]
    again = next_masks("snip", net, masks, 1 / 3, data=data, loss_fn=nn.functional.mse_loss)
    assert all(torch.equal(again[k], new[k]) for k in masks)


def test_next_masks_snip_uses_the_given_data_and_loss():
    """The hand example of the mean-gradient test through the registry: scores (6, 1) keep the first weight, one
    batch's scores (4, 6) the second. (The default cross-entropy over one logit has gradient 0, so it would keep
    the same weight on both data sets.)"""
    net = linear_net([[2.0, -1.0]])
    masks = {"weight": torch.ones(1, 2)}
    data = [(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 1)), (torch.tensor([[2.0, 1.0]]), torch.ones(1, 1))]
    by_mse = next_masks("snip", net, masks, 0.5, data=data, loss_fn=nn.functional.mse_loss)
    assert by_mse["weight"].tolist() == [[1.0, 0.0]]
    other = [(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 1))]  # w . x = -1: scores (2 * 1 * 2, 2 * 3 * 1) = (4, 6)
    assert next_masks("snip", net, masks, 0.5, data=other, loss_fn=nn.functional.mse_loss)["weight"].tolist() == [
        [0.0, 1.0]]


def test_next_masks_magnitude_keeps_the_largest_weights_globally_or_per_layer():
    weights = {"a.weight": torch.tensor([[0.1, -0.2], [0.3, 0.4]]), "a.bias": torch.tensor([0.05, 9.0]),
               "b.weight": torch.tensor([5.0, -6.0, 7.0, 8.0])}
    masks = {k: torch.ones_like(v) for k, v in weights.items()}
    glob = next_masks("global", weights, masks, 0.5)  # the 5 smallest of 10 go
    assert glob["a.weight"].tolist() == [[0.0, 0.0], [0.0, 0.0]] and glob["a.bias"].tolist() == [0.0, 1.0]
    assert glob["b.weight"].tolist() == [1.0, 1.0, 1.0, 1.0] and density(glob) == 0.5
    layer = next_masks("layerwise", weights, masks, 0.5)  # a.weight with its bias: 3 of 6; b.weight: 2 of 4
    assert layer["a.weight"].tolist() == [[0.0, 0.0], [1.0, 1.0]] and layer["a.bias"].tolist() == [0.0, 1.0]
    assert layer["b.weight"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert all(torch.equal(next_masks(m, weights, masks, 0.0)[k], masks[k]) for m in CRITERIA if m != "snip"
               for k in masks)


def test_next_masks_random_draws_from_the_given_generator():
    masks, weights = {"w": torch.ones(40)}, {"w": torch.arange(40.0)}
    torch.manual_seed(123)
    drawn = next_masks("random", weights, masks, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(drawn["w"], random_mask(masks, 0.5, torch.Generator().manual_seed(7))["w"])
    assert int(drawn["w"].sum()) == 20
    torch.manual_seed(123)  # torch's global random state would have kept other weights
    assert not torch.equal(drawn["w"], random_mask(masks, 0.5, None)["w"])


def test_next_masks_accepts_ratios_in_zero_one_and_refuses_the_rest():
    weights = {"w": torch.tensor([1.0, -2.0, 3.0, -4.0])}
    masks = {"w": torch.ones(4)}
    assert next_masks("global", weights, masks, 0.0)["w"].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert next_masks("global", weights, masks, 0.75)["w"].tolist() == [0.0, 0.0, 0.0, 1.0]
    for ratio in (1.0, 1.5, -0.25):
        with pytest.raises(ValueError, match=f"^the pruning ratio must lie in \\[0, 1\\), got {ratio!r}$"):
            next_masks("global", weights, masks, ratio)
    with pytest.raises(ValueError, match="^unknown pruning method 'magic'; choose one of global, layerwise, random, "
                                         "snip$"):
        next_masks("magic", weights, masks, 0.5)


def test_next_masks_snip_refuses_a_state_dict_or_no_data():
    net = linear_net([[2.0, -1.0]])
    masks = {"weight": torch.ones(1, 2)}
    data = [(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 1))]
    message = "^pruning method 'snip' needs data= \\(batches\\) and the model as an nn.Module$"
    with pytest.raises(ValueError, match=message):
        next_masks("snip", net.state_dict(), masks, 0.5, data=data)
    with pytest.raises(ValueError, match=message):
        next_masks("snip", net, masks, 0.5)
    assert next_masks("global", net, masks, 0.5)["weight"].tolist() == [[1.0, 0.0]]  # no data needed


def test_the_registry_flags_and_the_runner_methods():
    assert [(n, c.needs_data, c.layerwise) for n, c in CRITERIA.items()] == [
        ("global", False, False), ("layerwise", False, True), ("random", False, False), ("snip", True, False)]
    assert runner_methods() == ("global", "layerwise", "random")
    net = linear_net([[2.0, -1.0]])
    params = weights_of(net)
    assert list(params) == ["weight"] and params["weight"] is net.weight
    state = {"w": torch.ones(2)}
    assert weights_of(state) is state


def test_snip_scores_a_copy_and_leaves_the_model_s_batchnorm_statistics_alone():
    """The model in train mode: the scoring pass updates BatchNorm's running statistics of a copy only."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    masks = {"0.weight": torch.ones(4, 3), "2.weight": torch.ones(2, 4)}
    scores = snip_scores(net, masks, [(torch.randn(8, 3) + 5.0, torch.randint(0, 2, (8,)))])
    assert set(scores) == set(masks) and net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
