"""landscape.curvature: the Hessian operator and its estimators against exact Hessians (torch.func)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torchvision
from scipy.sparse.linalg import eigsh
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from landscape.batches import ArgumentError
from landscape.curvature import HessianOperator, hessian_trace, top_eigenvalue

F64 = {"dtype": torch.float64}


def mlp(inputs: int, outputs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, 8), nn.Tanh(), nn.Linear(8, outputs)).double()


def exact_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn) -> torch.Tensor:
    """The Hessian of ``loss_fn(model(x), y)`` over the flattened parameters, by ``torch.func.hessian``."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    shapes = [p.shape for p in params.values()]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = [t.reshape(s) for t, s in zip(flat.split([s.numel() for s in shapes]), shapes, strict=True)]
        return loss_fn(functional_call(model, dict(zip(params, parts, strict=True)), (x,)), y)

    return torch.func.hessian(loss)(torch.cat([p.reshape(-1) for p in params.values()]))


@pytest.fixture(scope="module", params=["cross_entropy", "mse"])
def problem(request) -> dict:
    """A small MLP (67 or 50 parameters, float64), its data, loss_fn and exact Hessian."""
    g = torch.Generator().manual_seed(0)
    if request.param == "cross_entropy":
        model, loss_fn = mlp(4, 3, 0), None
        x, y = torch.randn(24, 4, generator=g, **F64), torch.randint(0, 3, (24,), generator=g)
        hess = exact_hessian(model, x, y, nn.functional.cross_entropy)
    else:
        model, loss_fn = mlp(3, 2, 1), nn.MSELoss()
        x, y = torch.randn(24, 3, generator=g, **F64), torch.randn(24, 2, generator=g, **F64)
        hess = exact_hessian(model, x, y, loss_fn)
    return {"model": model, "data": (x, y), "loss_fn": loss_fn, "hess": hess}


def operator(problem: dict, **kw) -> HessianOperator:
    return HessianOperator(problem["model"], problem["data"], loss_fn=problem["loss_fn"], batch_size=10, **kw)


def test_products_equal_exact_hessian(problem):
    op, hess = operator(problem), problem["hess"]
    d = hess.shape[0]
    assert op.dim == d and op.shape == (d, d) and op.dtype == torch.float64 and op.device.type == "cpu"
    assert list(op.layers) == [n for n, _ in problem["model"].named_parameters()]
    assert sum(s.stop - s.start for s in op.layers.values()) == d
    v = torch.randn(d, generator=torch.Generator().manual_seed(2), **F64)
    rows = torch.randn(5, d, generator=torch.Generator().manual_seed(3), **F64)
    assert torch.allclose(op @ v, hess @ v, atol=1e-12, rtol=1e-10)
    assert torch.allclose(op.matvec(v), hess @ v, atol=1e-12, rtol=1e-10)
    assert torch.allclose(op.matmat(rows), rows @ hess, atol=1e-12, rtol=1e-10)
    assert torch.allclose(op @ rows.T, hess @ rows.T, atol=1e-12, rtol=1e-10)
    lin = op.to_scipy()
    assert lin.shape == (d, d) and lin.dtype == "float64"
    assert torch.allclose(torch.from_numpy(lin.matvec(v.numpy())), hess @ v, atol=1e-12, rtol=1e-10)
    assert torch.allclose(torch.from_numpy(lin.matmat(rows.T.numpy())), hess @ rows.T, atol=1e-12, rtol=1e-10)


def test_eigsh_and_lanczos_find_the_top_eigenvalue(problem):
    op, eig = operator(problem), torch.linalg.eigvalsh(problem["hess"])
    largest_magnitude = float(eig[eig.abs().argmax()])
    assert eigsh(op.to_scipy(), k=1, return_eigenvectors=False)[0] == pytest.approx(largest_magnitude, rel=1e-8)
    assert eigsh(op.to_scipy(), k=1, which="LA", return_eigenvectors=False)[0] == pytest.approx(float(eig[-1]),
                                                                                                 rel=1e-8)
    top = top_eigenvalue(problem["model"], problem["data"], loss_fn=problem["loss_fn"], steps=op.dim, tol=0)
    assert top.value == pytest.approx(float(eig[-1]), rel=1e-8) and top.steps == op.dim
    assert top.matvecs == op.dim + 1  # and one product for the true residual


@pytest.mark.parametrize("tol", [1e-2, 1e-4, 1e-6])
def test_top_eigenvalue_stops_at_tol_within_its_reported_bound(problem, tol):
    op, eig = operator(problem), torch.linalg.eigvalsh(problem["hess"])
    top = op.top_eigenvalue(tol=tol)
    assert top.converged and top.steps < op.dim and top.matvecs >= top.steps + 1
    assert top.residual <= tol * abs(top.value)
    assert float((eig - top.value).abs().min()) <= top.residual  # Weyl: some eigenvalue lies within r
    assert top.value <= float(eig[-1]) + 1e-12  # a Ritz value never exceeds the top eigenvalue
    if tol <= 1e-4:
        assert abs(top.value - float(eig[-1])) <= top.residual  # here the top one
    # the reported residual is the true one, of the returned unit vector
    y = top.vector
    assert float(y.norm()) == pytest.approx(1.0, rel=1e-12)
    assert float((problem["hess"] @ y - top.value * y).norm()) == pytest.approx(top.residual, rel=1e-6, abs=1e-14)
    assert top.value == pytest.approx(float(y @ problem["hess"] @ y), rel=1e-12)


def test_top_eigenvalue_stops_early_when_easy_and_says_so_when_it_cannot():
    from landscape.spectrum import lanczos_top_eigenpair

    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    easy = torch.diag(torch.cat([torch.tensor([10.0], **F64), torch.linspace(0, 1, 499, **F64)]))
    top = lanczos_top_eigenpair(lambda v: v @ easy, 500, g(), tol=1e-6, max_steps=400, dtype=torch.float64)
    assert top.converged and top.steps < 20 and top.matvecs == top.steps + 1
    assert abs(top.value - 10.0) <= top.residual <= 1e-5
    # a clustered top (1 and 1 - 1e-4, ...) cannot reach 1e-10 in 5 steps: the cap, and converged False
    hard = torch.diag(torch.linspace(0, 1, 500, **F64))
    capped = lanczos_top_eigenpair(lambda v: v @ hard, 500, g(), tol=1e-10, max_steps=5, dtype=torch.float64)
    assert not capped.converged and capped.steps == 5 and capped.matvecs == 6
    assert capped.residual > 1e-10 and abs(capped.value - 1.0) <= capped.residual
    # float32 rounding: a tolerance below it is never met, whatever the Ritz estimate says
    small = torch.diag(torch.linspace(1, 2, 40))
    floor = lanczos_top_eigenpair(lambda v: v @ small, 40, g(), tol=1e-12, max_steps=40)
    assert not floor.converged and floor.steps == 40 and floor.residual > 1e-12 * 2


def test_masks_give_the_principal_submatrix(problem):
    model, hess = problem["model"], problem["hess"]
    g = torch.Generator().manual_seed(4)
    masks = {"0.weight": (torch.rand(model[0].weight.shape, generator=g) > 0.5).double(),
             "2.weight": (torch.rand(model[2].weight.shape, generator=g) > 0.3).bool()}
    keep = torch.cat([masks.get(n, torch.ones_like(p)).reshape(-1) for n, p in model.named_parameters()]).bool()
    op = operator(problem, masks=masks)
    sub = hess[keep][:, keep]
    assert op.dim == int(keep.sum())
    v = torch.randn(op.dim, generator=g, **F64)
    assert torch.allclose(op @ v, sub @ v, atol=1e-12, rtol=1e-10)
    assert torch.allclose(op.matmat(torch.eye(op.dim, **F64)), sub, atol=1e-12, rtol=1e-10)
    est = hessian_trace(model, problem["data"], loss_fn=problem["loss_fn"], masks=masks, method="hutchpp",
                        probes=3 * op.dim)
    assert est.estimate == pytest.approx(float(sub.trace()), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp"])
def test_trace_within_three_stderr_of_exact(problem, method):
    exact = float(problem["hess"].trace())
    est = hessian_trace(problem["model"], problem["data"], loss_fn=problem["loss_fn"], method=method, probes=90,
                        seed=5, per_layer=True)
    assert est.method == method and est.matvecs == 90
    assert abs(est.estimate - exact) <= 3 * est.stderr
    assert sum(est.per_layer.values()) == pytest.approx(est.estimate, rel=1e-10)
    assert set(est.per_layer_stderr) == set(est.per_layer)
    again = hessian_trace(problem["model"], problem["data"], loss_fn=problem["loss_fn"], method=method, probes=90,
                          seed=5, per_layer=True)
    assert again == est  # a seed gives the same result


def test_stderr_small_with_many_probes(problem):
    exact, d = float(problem["hess"].trace()), problem["hess"].shape[0]
    est = hessian_trace(problem["model"], problem["data"], loss_fn=problem["loss_fn"], probes=20 * d, seed=6)
    assert abs(est.estimate - exact) <= 3 * est.stderr and est.stderr < 0.05 * abs(exact)
    exact_pp = hessian_trace(problem["model"], problem["data"], loss_fn=problem["loss_fn"], method="hutchpp",
                             probes=3 * d)
    assert exact_pp.estimate == pytest.approx(exact, rel=1e-9) and exact_pp.stderr == pytest.approx(0, abs=1e-12)
    obj = json.loads(json.dumps(exact_pp.to_json()))
    assert obj["estimate"] == exact_pp.estimate and obj["matvecs"] == 3 * d
    with pytest.raises(ArgumentError, match="probes must be >= 2"):  # one term: no standard error
        hessian_trace(problem["model"], problem["data"], loss_fn=problem["loss_fn"], probes=1)


@pytest.mark.parametrize("loss_fn", [None, nn.CrossEntropyLoss()])
def test_uneven_batches_weigh_by_size(loss_fn):
    model = mlp(4, 3, 0)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(17, 4, generator=g, **F64), torch.randint(0, 3, (17,), generator=g)
    eye = torch.eye(sum(p.numel() for p in model.parameters()), **F64)
    whole = HessianOperator(model, [(x, y)], loss_fn=loss_fn).matmat(eye)
    uneven = [(x[:7], y[:7]), (x[7:14], y[7:14]), (x[14:], y[14:])]
    loader = DataLoader(TensorDataset(x, y), batch_size=7)
    for data in (uneven, loader, (x, y)):
        op = HessianOperator(model, data, loss_fn=loss_fn, batch_size=7)
        assert op.samples == 17 and len(op.batches) == 3
        assert torch.allclose(op.matmat(eye), whole, atol=1e-13, rtol=1e-10)
    assert torch.allclose(whole, exact_hessian(model, x, y, nn.functional.cross_entropy), atol=1e-12)


def test_small_model_untouched_by_every_call(problem):
    model = problem["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    op = operator(problem, masks={"0.weight": torch.ones_like(model[0].weight)})
    op @ torch.ones(op.dim, **F64)
    eigsh(op.to_scipy(), k=1)
    op.trace(probes=3)
    op.spectrum(steps=3)
    hessian_trace(model, problem["data"], loss_fn=problem["loss_fn"], probes=2)
    top_eigenvalue(model, problem["data"], loss_fn=problem["loss_fn"], steps=2)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_resnet18_in_train_mode_runs_and_is_left_untouched():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    model.train()
    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    with torch.no_grad():
        model(x)  # running statistics that differ from the defaults
    before = {k: v.clone() for k, v in model.state_dict().items()}
    est = hessian_trace(model, (x, y), probes=2, per_layer=True)
    assert est.matvecs == 2 and math.isfinite(est.estimate) and math.isfinite(est.stderr)
    assert sum(est.per_layer.values()) == pytest.approx(est.estimate, rel=1e-4)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def _per_sample(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")  # not a mean loss


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda m, d: hessian_trace(m, d, probes=0), ValueError, "probes must be >= 2"),
    (lambda m, d: hessian_trace(m, d, probes=2.5), TypeError, "probes must be an integer"),
    (lambda m, d: hessian_trace(m, d, method="hutchpp", probes=0), ValueError, "probes must be >= 2"),
    (lambda m, d: hessian_trace(m, d, method="exact"), ValueError, "method must be one of hutchinson, hutchpp"),
    (lambda m, d: hessian_trace(m, d, target_rse=0), ValueError, "target_rse must be a positive"),
    (lambda m, d: hessian_trace(m, d, method="auto"), ValueError, "method 'auto' chooses the estimator for a"),
    (lambda m, d: hessian_trace(m, d, seed="a"), TypeError, "seed must be an integer"),
    (lambda m, d: hessian_trace(m, d, masks={"x": torch.ones(2)}), ValueError, "masks has no parameter 'x'"),
    (lambda m, d: hessian_trace(m, d, masks={"0.weight": torch.full((8, 4), 0.5)}), ValueError,
     "mask '0.weight' must hold only 0 and 1"),
    (lambda m, d: hessian_trace(m, d, masks={"0.weight": torch.ones(3)}), ValueError, "mask '0.weight' has shape"),
    (lambda m, d: hessian_trace(m, d, masks={"0.weight": [1.0]}), TypeError, "mask '0.weight' must be a tensor"),
    (lambda m, d: hessian_trace(m, d, masks=[1]), TypeError, "masks must be a mapping"),
    (lambda m, d: hessian_trace(m.requires_grad_(False), d), ValueError, "model has no trainable parameters"),
    (lambda m, d: hessian_trace("resnet", d), TypeError, "model must be a torch.nn.Module"),
    (lambda m, d: hessian_trace(m, []), ValueError, "data is empty"),
    (lambda m, d: hessian_trace(m, [(d[0][:0], d[1][:0])]), ValueError, "data is empty"),
    (lambda m, d: hessian_trace(m, d[0]), ValueError, "data must be"),
    (lambda m, d: hessian_trace(m, d, batch_size=0), ValueError, "batch_size must be a positive integer"),
    (lambda m, d: hessian_trace(m, d, loss_fn=3), TypeError, "loss_fn must be callable"),
    (lambda m, d: hessian_trace(m, d, loss_fn=_per_sample), ValueError, "loss_fn must return the mean loss"),
    (lambda m, d: top_eigenvalue(m, d, steps=0), ValueError, "steps must be >= 1"),
    (lambda m, d: top_eigenvalue(m, d, tol=-1e-3), ValueError, "tol must be a finite number >= 0"),
    (lambda m, d: top_eigenvalue(m, d, tol=math.nan), ValueError, "tol must be a finite number >= 0"),
    (lambda m, d: top_eigenvalue(m, d, tol="1e-3"), ValueError, "tol must be a finite number >= 0"),
    (lambda m, d: HessianOperator(m, d).matvec(torch.ones(3)), ValueError, "v must have shape (67,)"),
    (lambda m, d: HessianOperator(m, d).matvec([1.0]), TypeError, "v must be a torch tensor"),
    (lambda m, d: HessianOperator(m, d).matmat(torch.ones(67)), ValueError, "rows must have shape (k, 67)"),
])
def test_bad_inputs_name_the_argument(call, error, words):
    model = mlp(4, 3, 0)
    data = (torch.randn(6, 4, **F64), torch.randint(0, 3, (6,)))
    with pytest.raises(error, match="^" + words.replace("(", r"\(").replace(")", r"\)")) as info:
        call(model, data)
    assert "--" not in str(info.value)  # no CLI flag names


@pytest.mark.parametrize("batch", [1, 4])
def test_batchnorm_folded_or_not_gives_the_exact_hessian(batch):
    from landscape.hvp import ConvBatchNorm, double_backward_friendly

    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv1d(2, 6, 3, padding=1), nn.BatchNorm1d(6), nn.Tanh(), nn.Flatten(),
                          nn.Linear(24, 3)).double()
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    x, y = torch.randn(8, 2, 4, **F64), torch.randint(0, 3, (8,))
    # the convolution's output on a batch of 1 (24 numbers) is smaller than its weight (36): not folded
    net, _ = double_backward_friendly(model, x[:batch])
    assert any(isinstance(m, ConvBatchNorm) for m in net.modules()) == (batch > 1)
    op = HessianOperator(model, (x, y), batch_size=batch)
    hess = exact_hessian(model, x, y, nn.functional.cross_entropy)
    assert torch.allclose(op.matmat(torch.eye(op.dim, **F64)), hess, atol=1e-12, rtol=1e-10)
