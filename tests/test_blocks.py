"""The public building blocks of SWAMP (``training``'s masks, criteria, optimizer hooks, SWA, averaging and
BatchNorm recalibration) on plain modules, optimizers and batches."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

import training
from core.pruning import CRITERIA, next_masks
from training.config import PRUNE_METHODS

W = torch.tensor([[1.0, -2.0, 0.5], [0.25, 3.0, -1.5]])
X, Y = torch.tensor([[1.0, 0.5, -1.0]]), torch.zeros(1, 2)


def _linear() -> nn.Linear:
    net = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(W)
    return net


def test_snip_mask_is_the_hand_computed_one():
    """L = mean((W x - y)^2) over 2 outputs, so dL/dW = (W x) x^T; out = (-0.5, 3.25), scores |g w| =
    [[.5, .5, .25], [.8125, 4.875, 4.875]]: the 3 smallest go. Magnitude pruning would keep other weights."""
    net = _linear()
    masks = {"weight": torch.ones(2, 3)}
    snip = training.next_masks("snip", net, masks, 0.5, data=[(X, Y)], loss_fn=nn.functional.mse_loss)
    assert snip["weight"].tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert training.next_masks("global", net, masks, 0.5)["weight"].tolist() == [[0.0, 1.0, 0.0], [0.0, 1.0, 1.0]]
    scores = training.snip_scores(net, masks, [(X, Y)], nn.functional.mse_loss)["weight"]
    torch.testing.assert_close(scores, torch.tensor([[0.5, 0.5, 0.25], [0.8125, 4.875, 4.875]]))
    # a pruned weight (w = 0 under the mask) stays pruned and the ratio counts what remains
    pruned = {"weight": torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])}
    with torch.no_grad():
        net.weight.mul_(pruned["weight"])
    again = training.snip_mask(net, pruned, 0.4, data=[{"input": X, "labels": Y}],
                               loss_fn=lambda out, y: nn.functional.mse_loss(out, y))
    assert again["weight"][1, 1] == 0 and int(again["weight"].sum()) == 3


def test_snip_leaves_the_model_and_its_batchnorm_alone_and_needs_data():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    before = copy.deepcopy(net.state_dict())
    masks = training.dense_masks(net)
    new = training.next_masks("snip", net, masks, 0.25, data=[(torch.randn(8, 3), torch.randint(0, 2, (8,)))])
    assert training.density(new) == pytest.approx(0.75, abs=0.02)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="needs data"):
        training.next_masks("snip", net, masks, 0.25)
    with pytest.raises(ValueError, match="unknown pruning method 'magic'"):
        training.next_masks("magic", net, masks, 0.25)


def test_the_registry_is_the_one_list_of_criteria():
    assert set(CRITERIA) >= {"global", "layerwise", "random", "snip"}
    assert PRUNE_METHODS == tuple(n for n, c in CRITERIA.items() if not c.needs_data)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    masks = training.dense_masks(net)
    for method in ("global", "layerwise", "random"):  # a module and its state dict give the same masks
        a = next_masks(method, net, masks, 0.3, torch.Generator().manual_seed(1))
        b = next_masks(method, net.state_dict(), masks, 0.3, torch.Generator().manual_seed(1))
        assert all(torch.equal(a[k], b[k]) for k in masks), method


def test_biases_are_pruned_on_request():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2, bias=False))
    assert training.prunable_names(net) == ["0.weight", "2.weight"]
    assert training.prunable_names(net, biases=True) == ["0.weight", "0.bias", "2.weight"]
    masks = training.dense_masks(net, biases=True)
    params = dict(net.named_parameters())
    new = training.layerwise_magnitude_mask(params, masks, 1 / 3)
    # layer 0's weight and bias are ranked together (15 entries, 5 pruned), as the MNIST-1D paper ranks a layer
    layer = torch.cat([params["0.weight"].detach().flatten(), params["0.bias"].detach().flatten()]).abs()
    kept = torch.cat([new["0.weight"].flatten(), new["0.bias"].flatten()]).bool()
    assert int(kept.sum()) == 10 and bool(layer[kept].min() >= layer[~kept].max())
    assert int(new["2.weight"].sum()) == 6 - round(6 / 3)


def _train(opt_fn, masks_after: int, weights: bool = True, steps: int = 12):
    """Train a small net whose pruning happens after ``masks_after`` dense steps (moments already built up)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = opt_fn(net.parameters())
    masks = training.dense_masks(net)
    hooks = training.mask_optimizer(opt, net, masks, weights=weights)
    for step in range(steps):
        if step == masks_after:
            masks = training.next_masks("global", net, masks, 0.5)
            training.apply_masks(net, masks)
            hooks.masks = masks
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.randn(32, 6)), torch.randint(0, 3, (32,))).backward()
        opt.step()
    return net, masks


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("masks_after", [0, 4])
def test_pruned_weights_stay_exactly_zero_under_any_optimizer(name, masks_after):
    net, masks = _train(OPTIMIZERS[name], masks_after)
    params = dict(net.named_parameters())
    for n, m in masks.items():
        assert torch.all(params[n][m == 0] == 0), (name, n)
        assert torch.all(params[n][m == 1] != 0), "kept weights train"
    assert training.density(masks) == pytest.approx(0.5, abs=0.01)


def test_adam_moments_would_revive_pruned_weights_without_the_step_hook():
    """Masking gradients alone is not enough for Adam once moments exist: the post-step hook is what holds 0."""
    net, masks = _train(OPTIMIZERS["adam"], masks_after=4, weights=False)
    params = dict(net.named_parameters())
    assert any(bool((params[n][m == 0] != 0).any()) for n, m in masks.items())


def test_gradient_masking_is_bit_identical_to_masking_by_hand_for_sgd():
    """The runner's SGD (masked gradients, momentum, weight decay) through the hook equals the inline version."""
    def run(hook: bool):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        masks = training.next_masks("random", net, training.dense_masks(net), 0.6, torch.Generator().manual_seed(0))
        training.apply_masks(net, masks)
        opt = OPTIMIZERS["sgd"](net.parameters())
        if hook:
            training.mask_optimizer(opt, net, masks)
        params = dict(net.named_parameters())
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(net(torch.randn(16, 6)), torch.randint(0, 3, (16,))).backward()
            if not hook:
                for n, m in masks.items():
                    params[n].grad.mul_(m)
            opt.step()
        return net.state_dict()

    a, b = run(True), run(False)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))


class Named(nn.Module):
    """A model with keyword inputs (the Hugging Face convention)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, features):
        return self.net(features)


def test_batchnorm_recalibration_on_dicts_tuples_and_tensors_agrees():
    x, y = torch.randn(96, 4), torch.randint(0, 2, (96,))
    chunks = [slice(0, 32), slice(32, 64), slice(64, 96)]
    results = []
    for batches in ([(x[s], y[s]) for s in chunks], [x[s] for s in chunks],
                    [{"features": x[s], "labels": y[s]} for s in chunks]):
        net = _bn_net()
        model = Named(net) if isinstance(batches[0], dict) else net
        training.recalibrate_batchnorm(model, batches, device="cpu")
        assert not model.training
        results.append((net[1].running_mean.clone(), net[1].running_var.clone()))
    for mean, var in results[1:]:
        torch.testing.assert_close(mean, results[0][0], rtol=0, atol=0)
        torch.testing.assert_close(var, results[0][1], rtol=0, atol=0)
    torch.testing.assert_close(results[0][0], _bn_net()[0](x).mean(0).detach(), rtol=1e-5, atol=1e-6)


def test_recalibration_works_on_torch_averaged_models_as_update_bn_does():
    from torch.optim.swa_utils import update_bn

    x = torch.randn(64, 4)
    ours, theirs = AveragedModel(_bn_net()), AveragedModel(_bn_net())
    training.recalibrate_batchnorm(ours, [(x[:32], None), (x[32:], None)])
    update_bn([x[:32], x[32:]], theirs)
    for a, b in zip(ours.module[1].state_dict().values(), theirs.module[1].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_swa_is_the_mean_of_the_window_and_matches_torch_averaged_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    masks = training.next_masks("global", net, training.dense_masks(net), 0.5)
    swa = training.SWA(total=8, fraction=0.25, masks=masks)
    reference = AveragedModel(net)
    snapshots = []
    for t in range(8):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        training.apply_masks(net, masks)
        took = swa.update(net)
        assert took == (t >= 6)
        if took:
            snapshots.append(copy.deepcopy(net.state_dict()))
            reference.update_parameters(net)
    assert swa.count == 2
    state = swa.state()
    expected = training.average_states(snapshots)
    for k in state:
        torch.testing.assert_close(state[k], expected[k])
    averaged = swa.averaged_model(net)
    for (_, mine), (_, theirs) in zip(averaged.module.named_parameters(), reference.module.named_parameters(),
                                      strict=True):
        torch.testing.assert_close(mine, theirs)
    assert int(averaged.n_averaged) == int(reference.n_averaged) == 2
    model = swa.load_into(copy.deepcopy(net))
    for n, m in masks.items():
        assert torch.all(dict(model.named_parameters())[n][m == 0] == 0)
    with pytest.raises(ValueError, match="no snapshot yet"):
        training.SWA(total=4).state()


def test_averaging_identical_particles_returns_them():
    net = _bn_net()
    net(torch.randn(8, 4))  # a BN batch count of 1 (an integer buffer)
    state = net.state_dict()
    four = training.average_states([copy.deepcopy(state) for _ in range(4)])  # (4x)/4 is exact in floating point
    assert all(torch.equal(four[k], v) for k, v in state.items())
    three = training.average_states([copy.deepcopy(state) for _ in range(3)])  # (3x)/3 within one rounding
    for k, v in state.items():
        torch.testing.assert_close(three[k], v, rtol=2**-22, atol=0)
        assert three[k].dtype == v.dtype
    running = training.RunningAverage()
    for _ in range(3):
        running.update(state)
    assert all(torch.equal(running.state[k], v) for k, v in state.items())


def test_every_block_is_exported_with_an_example():
    """Each public block is in ``training.__all__`` and its docstring shows it in use (test_doctests runs them)."""
    for name in (*training.PRUNING, *training.AVERAGING, *training.MASKED, *training.TICKETS):
        assert name in training.__all__
        value = getattr(training, name)
        if callable(value):
            assert ">>>" in (value.__doc__ or ""), f"{name} has no example"
