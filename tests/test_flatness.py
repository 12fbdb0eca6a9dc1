"""The BatchNorm-invariant flatness measure (landscape.flatness): invariance, consistency with hessian_trace."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from landscape import ArgumentError, HessianOperator, batchnorm_layers, hessian_trace, normalized_trace


def conv_bn_model() -> nn.Module:
    """Conv (no bias) -> BatchNorm (eps 0: the rescaling is an exact symmetry) -> ReLU -> linear, float64."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 3, 3, bias=False), nn.BatchNorm1d(3, eps=0.0), nn.ReLU(), nn.Flatten(),
                          nn.Linear(18, 4)).double()
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        model[1].running_var.copy_(torch.tensor([0.5, 1.5, 2.0]))
        model[1].weight.copy_(torch.tensor([1.2, 0.8, 1.1]))
    return model.eval()


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(48, 1, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (48,), generator=g)


def rescaled(model: nn.Module, alpha: torch.Tensor) -> nn.Module:
    """The same function: conv channel c times alpha_c, the BatchNorm statistics following."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out[0].weight.mul_(alpha[:, None, None])
        out[1].running_mean.mul_(alpha)
        out[1].running_var.mul_(alpha**2)
    return out


def exact_traces(model: nn.Module, batches) -> dict[str, float]:
    """Exact tr H_pp per parameter from the dense Hessian."""
    op = HessianOperator(model, batches)
    dense = op @ torch.eye(op.dim, dtype=op.dtype)
    return {name: float(dense.diagonal()[s].sum()) for name, s in op.layers.items()}


@pytest.mark.parametrize("granularity, alpha", [("layer", [2.5, 2.5, 2.5]), ("channel", [0.5, 3.0, 1.7])])
def test_rescaling_leaves_normalized_unchanged_and_divides_the_raw_trace(granularity, alpha):
    model, (X, y) = conv_bn_model(), data()
    alpha = torch.tensor(alpha, dtype=torch.float64)
    scaled = rescaled(model, alpha)
    assert torch.allclose(model(X), scaled(X), atol=1e-12)  # the function is unchanged
    before = normalized_trace(model, (X, y), probes=16, seed=3, granularity=granularity)
    after = normalized_trace(scaled, (X, y), probes=16, seed=3, granularity=granularity)
    assert before.layers == after.layers == ("0",)
    assert after.normalized == pytest.approx(before.normalized, rel=1e-9)
    assert after.normalized_stderr == pytest.approx(before.normalized_stderr, rel=1e-9)
    assert after.other == pytest.approx(before.other, rel=1e-9)  # BatchNorm affine and classifier: untouched
    # the exact block trace of the conv weight falls as 1/alpha^2 (per channel), the estimates follow it
    exact, exact_scaled = exact_traces(model, (X, y)), exact_traces(scaled, (X, y))
    op = HessianOperator(model, (X, y))
    diag = (op @ torch.eye(op.dim, dtype=op.dtype)).diagonal()[op.layers["0.weight"]].reshape(3, 3).sum(1)
    assert exact_scaled["0.weight"] == pytest.approx(float((diag / alpha**2).sum()), rel=1e-9)
    assert exact_scaled["0.weight"] != pytest.approx(exact["0.weight"], rel=0.05)
    many = normalized_trace(scaled, (X, y), probes=2000, seed=0, granularity=granularity)
    assert abs(many.raw - sum(exact_scaled.values())) < 4 * many.raw_stderr


def test_normalized_is_the_norm_weighted_block_trace():
    """sum_l ||theta_l||^2 tr H_ll against the dense Hessian; raw is hessian_trace's estimate, probe for probe."""
    model, batches = conv_bn_model(), data()
    exact = exact_traces(model, batches)
    flat = normalized_trace(model, batches, probes=3000, seed=0)
    norm2 = float(model[0].weight.detach().pow(2).sum())
    assert flat.squared_norms == {"0": pytest.approx(norm2)}
    assert abs(flat.normalized - norm2 * exact["0.weight"]) < 4 * flat.normalized_stderr
    assert flat.other_per_layer.keys() == {"1.weight", "1.bias", "4.weight", "4.bias"}
    reference = hessian_trace(model, batches, probes=3000, seed=0, per_layer=True)
    assert flat.raw == pytest.approx(reference.estimate, rel=1e-9)
    assert flat.raw_stderr == pytest.approx(reference.stderr, rel=1e-9)
    assert flat.raw_per_layer == pytest.approx(reference.per_layer, rel=1e-9)
    other = sum(exact[n] for n in flat.other_per_layer)
    assert abs(flat.other - other) < 4 * flat.other_stderr
    assert flat.matvecs == 6000


def test_without_batchnorm_nothing_is_normalized_and_other_is_the_raw_trace():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    X, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    flat = normalized_trace(model, (X, y), probes=12, seed=5)
    reference = hessian_trace(model, (X, y), probes=12, seed=5, per_layer=True)
    assert flat.layers == () and flat.squared_norms == {} and flat.normalized_per_layer == {}
    assert flat.normalized == 0.0 and flat.normalized_stderr == 0.0
    assert flat.other == flat.raw == pytest.approx(reference.estimate, rel=1e-6)
    assert flat.other_per_layer == pytest.approx(reference.per_layer, rel=1e-6)
    assert flat.matvecs == 12


def test_masks_and_zero_channels_keep_the_raw_trace_of_hessian_trace():
    model, batches = conv_bn_model(), data()
    with torch.no_grad():
        model[0].weight[0].zero_()  # a dead channel: ||theta_c||^2 tr H_cc = 0
    masks = {"0.weight": (torch.arange(9).reshape(3, 1, 3) % 2).double(), "4.weight": torch.ones(4, 18).double()}
    flat = normalized_trace(model, batches, probes=20, masks=masks, granularity="channel")
    reference = hessian_trace(model, batches, probes=20, masks=masks)
    assert flat.raw == pytest.approx(reference.estimate, rel=1e-9)
    assert flat.normalized > 0.0 and flat.normalized_per_layer.keys() == {"0.weight"}


def test_the_callers_model_is_not_modified():
    model, batches = conv_bn_model(), data()
    model.train()
    model[4].bias.requires_grad_(False)
    state = copy.deepcopy(model.state_dict())
    flat = normalized_trace(model, batches, probes=4)
    assert model.training and not model[4].bias.requires_grad
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert "4.bias" not in flat.raw_per_layer  # frozen parameters are not in the Hessian
    assert flat.to_json()["layers"] == ["0"]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn_a = nn.Linear(4, 4), nn.BatchNorm1d(4)
        self.b, self.bn_b = nn.Linear(4, 4), nn.BatchNorm1d(4)
        self.c, self.bn_c = nn.Linear(4, 4), nn.BatchNorm1d(4)

    def forward(self, x):
        h = self.bn_a(self.a(x))  # counts
        z = self.b(h)
        h = self.bn_b(z) + z  # b's output is also used outside BatchNorm: not invariant
        return self.bn_c(torch.relu(self.c(h)))  # a ReLU between: not invariant


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else -self.conv(x)


def test_batchnorm_layers_rule():
    assert batchnorm_layers(Residual()) == ("a",)
    assert batchnorm_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(),
                                          nn.Conv2d(2, 2, 3), nn.ReLU(), nn.BatchNorm2d(2))) == ("0",)
    assert batchnorm_layers(Branchy()) == ()  # no BatchNorm: nothing to find, and not traced (issue 27 item 11)
    with pytest.raises(ArgumentError, match="torch.fx cannot trace model"):
        batchnorm_layers(nn.Sequential(Branchy(), nn.BatchNorm1d(2)))


def test_bad_arguments_are_named():
    model, batches = conv_bn_model(), data()
    with pytest.raises(ArgumentError, match="granularity must be one of layer, channel"):
        normalized_trace(model, batches, granularity="filter")
    for probes in (0, 1):  # one probe gives no standard error (issue 27: it returned NaN errors)
        with pytest.raises(ArgumentError, match=r"probes must be an integer >= 2 \(one probe gives no standard error"):
            normalized_trace(model, batches, probes=probes)
