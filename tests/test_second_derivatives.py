"""Hessians of models whose layers PyTorch cannot differentiate twice as they are (issue 27 item 7), the plain
trace of models torch.fx cannot trace and the paper's spelling ``hutch++`` (item 11)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from core.artifacts.checkpoint import save_checkpoint
from core.models import build_model, model_spec
from landscape import ArgumentError, HessianOperator, hessian_trace, normalized_trace
from landscape.hvp import twice_differentiable
from landscape.tools.hessian import main as hessian_main


def _by_hand(model: nn.Sequential):
    """The model's function with hardsigmoid and hardswish written out: relu6(x + 3) / 6 and x relu6(x + 3) / 6."""
    def forward(params, x):
        for i, layer in enumerate(model):
            if isinstance(layer, nn.Linear):
                x = nn.functional.linear(x, params[f"{i}.weight"], params[f"{i}.bias"])
            elif isinstance(layer, nn.Hardsigmoid):
                x = nn.functional.relu6(x + 3) / 6
            elif isinstance(layer, nn.Hardswish):
                x = x * nn.functional.relu6(x + 3) / 6
        return x
    return forward


def _exact_hessian(model: nn.Sequential, x, y) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    shapes = [p.shape for p in model.parameters()]
    forward = _by_hand(model)

    def loss(flat):
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split(sizes), shapes, strict=True)), strict=True))
        return nn.functional.cross_entropy(forward(parts, x), y)

    return hessian(loss)(torch.cat([p.detach().flatten() for p in model.parameters()]))


@pytest.fixture
def hard_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Hardsigmoid(), nn.Linear(5, 4), nn.Hardswish(), nn.Linear(4, 3)).double()
    x, y = 2 * torch.randn(40, 3, dtype=torch.float64), torch.randint(0, 3, (40,))
    return model, x, y


def test_the_hessian_of_hardsigmoid_and_hardswish_layers_is_that_of_their_written_out_forms(hard_net):
    """aten::hardsigmoid_backward has no derivative: the products run relu6(x + 3) / 6 instead, the same numbers."""
    model, x, y = hard_net
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op = HessianOperator(model, (x, y))
    exact = _exact_hessian(model, x, y)
    assert exact.abs().max() > 1e-3  # the activations' curvature is really in it
    torch.testing.assert_close(op @ torch.eye(op.dim, dtype=torch.float64), exact, rtol=1e-10, atol=1e-12)
    # Hutch++ is exact once probes >= 3 dim
    trace = hessian_trace(model, (x, y), method="hutchpp", probes=3 * op.dim)
    assert trace.estimate == pytest.approx(float(exact.trace()), rel=1e-9)
    # the caller's model and torch are untouched: outside the products hardsigmoid has no double backward again
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert isinstance(model[1], nn.Hardsigmoid) and isinstance(model[3], nn.Hardswish)
    w = torch.randn(3, requires_grad=True)
    grad, = torch.autograd.grad(nn.functional.hardsigmoid(w).pow(2).sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="hardsigmoid_backward is not implemented"):
        torch.autograd.grad(grad.sum(), w)


def test_inside_the_context_hardsigmoid_is_the_same_function_to_the_bit():
    x = 4 * torch.randn(10_000)
    with twice_differentiable():
        inside = nn.Hardsigmoid()(x)
    assert torch.equal(inside, nn.functional.hardsigmoid(x))


def test_an_operation_without_second_derivative_is_refused_in_one_line():
    """No rewrite exists for aten::multilabel_margin_loss_backward: one ArgumentError naming the operation."""
    x, y = torch.randn(8, 3), torch.tensor([[0, 1, -1]] * 8)
    with pytest.raises(ArgumentError, match=r"^model or loss_fn: PyTorch has no second derivative of "
                                            r"aten::multilabel_margin_loss, which one of them calls"):
        hessian_trace(nn.Linear(3, 3), (x, y), loss_fn=nn.MultiLabelMarginLoss(), probes=2)


def test_the_hessian_command_analyses_a_torchvision_mobilenet_v3_checkpoint(tmp_path, capsys):
    """The issue's 46-line traceback: mobilenet_v3_small's squeeze-excitation uses nn.Hardsigmoid."""
    spec = model_spec("torchvision:mobilenet_v3_small", 4)
    torch.manual_seed(0)
    net = build_model(spec)
    assert any(isinstance(m, nn.Hardsigmoid) for m in net.modules())
    path = tmp_path / "mobilenet.safetensors"
    dataset = {"name": "torchvision:FakeData", "kwargs": {"size": 16, "image_size": [3, 32, 32], "num_classes": 4}}
    save_checkpoint(path, net.state_dict(), {}, kind="average", model=spec, dataset=dataset, config={})
    out = tmp_path / "hessian.json"
    code = hessian_main([str(path), "--samples", "8", "--batch-size", "8", "--probes", "3", "--method", "hutch++",
                         "--data-dir", str(tmp_path / "data"), "--json", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    report = json.loads(out.read_text())
    assert report["method"] == "hutchpp" and report["probes"] == 3 and report["samples"] == 8
    assert math.isfinite(report["trace"])


# --- item 11 ---------------------------------------------------------------------------------------------

class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it; no BatchNorm."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return self.fc(-x)


def test_normalized_trace_of_an_untraceable_model_without_batchnorm_is_the_plain_trace():
    torch.manual_seed(0)
    model, x, y = Untraceable(), torch.randn(32, 4), torch.randint(0, 3, (32,))
    flat = normalized_trace(model, (x, y), probes=8, seed=3)
    plain = hessian_trace(model, (x, y), probes=8, seed=3)
    assert flat.layers == () and flat.normalized == 0.0
    assert flat.raw == pytest.approx(plain.estimate, rel=1e-12) and flat.other == pytest.approx(plain.estimate)


def test_an_untraceable_model_with_batchnorm_is_still_refused():
    class WithBatchNorm(Untraceable):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x):
            return self.bn(super().forward(x))

    with pytest.raises(ArgumentError, match="torch.fx cannot trace model"):
        normalized_trace(WithBatchNorm(), (torch.randn(8, 4), torch.randint(0, 3, (8,))), probes=2)


@pytest.mark.parametrize("spelling", ["hutch++", "Hutch++", "HUTCHPP"])
def test_the_papers_spelling_of_hutchpp_is_the_same_estimator(spelling):
    torch.manual_seed(0)
    model, x, y = nn.Linear(3, 2), torch.randn(16, 3), torch.randint(0, 2, (16,))
    named = hessian_trace(model, (x, y), method=spelling, probes=6)
    assert named == hessian_trace(model, (x, y), method="hutchpp", probes=6)
    assert named.method == "hutchpp"


def test_an_unknown_method_still_names_the_choices():
    with pytest.raises(ArgumentError,
                       match=r"method must be one of hutchinson, hutchpp, auto \(or hutch\+\+\), got 'hutch'"):
        hessian_trace(nn.Linear(3, 2), (torch.randn(4, 3), torch.zeros(4, dtype=torch.long)), method="hutch")


class Negate(nn.Module):
    """Conv + BatchNorm (what the Hessian folds through a torch.fx graph) and an ``is None`` branch, which torch.fx
    fixes at trace time: its graph always negates the logits."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.Linear(12, 3)

    def forward(self, x, negate=None):
        logits = self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))
        return logits if negate is None else -logits


def test_the_hessian_is_that_of_the_model_not_of_a_traced_graph_that_computes_another_function():
    """A silent wrong result found for issue 27: the folded graph's Hessian differed from the model's by 0.32 (the
    largest entry of the exact Hessian is 0.23). The graph is now used only where it gives the model's outputs."""
    torch.manual_seed(0)
    net = Negate().double().eval()
    x, y = torch.randn(64, 1, 8, dtype=torch.float64), torch.randint(0, 3, (64,))
    names, shapes = [n for n, _ in net.named_parameters()], [p.shape for p in net.parameters()]

    def loss(flat):
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split([s.numel() for s in shapes]), shapes,
                                                                 strict=True)), strict=True))
        return nn.functional.cross_entropy(functional_call(net, parts, (x,)), y)

    exact = hessian(loss)(torch.cat([p.detach().flatten() for p in net.parameters()]))
    op = HessianOperator(net, (x, y))
    torch.testing.assert_close(op @ torch.eye(op.dim, dtype=torch.float64), exact, rtol=1e-10, atol=1e-12)


def test_the_pyhessian_cross_check_runs_on_hardsigmoid_layers_too(hard_net):
    """``--backend pyhessian`` runs the package under the same twice-differentiable forms."""
    from landscape.tools.pyhessian_backend import pyhessian_trace

    model, x, y = hard_net
    exact = float(_exact_hessian(model, x, y).trace())
    check = pyhessian_trace(model, [(x, y)], probes=200, seed=0)
    assert abs(check.estimate - exact) < 4 * check.stderr
