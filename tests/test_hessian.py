"""landscape.tools.hessian estimators against exact Hessians of tiny models (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.hvp import hessian_matmat, make_subspace, trainable_parameters
from landscape.spectrum import lanczos_spectrum
from landscape.tools.hessian import HessianOptions, hessian_analysis
from landscape.tools.pyhessian_backend import pyhessian_trace
from landscape.trace import TraceEstimate, auto_trace, hutchinson_trace, hutchpp_trace

F64 = {"dtype": torch.float64}


class Tiny(nn.Module):
    """Conv -> BatchNorm (fused into the conv) and Linear -> BatchNorm (kept affine): both rewrites."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm1d(3)
        self.fc1 = nn.Linear(12, 4)
        self.bn2 = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.bn1(self.conv(x.unsqueeze(1)))).flatten(1)
        return self.fc2(torch.tanh(self.bn2(self.fc1(h))))


@pytest.fixture(scope="module")
def problem() -> tuple[nn.Module, list, torch.Tensor, dict]:
    """Model, batches of unequal size, exact Hessian of the mean loss, masks."""
    torch.manual_seed(0)
    model = Tiny().double()
    for bn in (model.bn1, model.bn2):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_()
    model.eval()
    x, y = torch.randn(40, 8, **F64), torch.randint(0, 3, (40,))
    params = trainable_parameters(model)
    names, shapes = list(params), [p.shape for p in params.values()]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split([s.numel() for s in shapes]), shapes,
                                                               strict=True)), strict=True))
        return nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    g = torch.Generator().manual_seed(1)
    masks = {"conv.weight": (torch.rand(3, 1, 3, generator=g) > 0.4).double(),
             "fc1.weight": (torch.rand(4, 12, generator=g) > 0.5).double()}
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)
    hess = torch.autograd.functional.hessian(loss, torch.cat([p.detach().reshape(-1) for p in params.values()]))
    return model, [(x[:16], y[:16]), (x[16:], y[16:])], hess, masks


def kept(model: nn.Module, masks: dict) -> torch.Tensor:
    return torch.cat([masks.get(n, torch.ones_like(p)).reshape(-1) for n, p in model.named_parameters()]).bool()


def test_products_equal_exact_hessian(problem):
    model, batches, hess, masks = problem
    matmat = hessian_matmat(model, batches)
    assert torch.allclose(matmat(torch.eye(hess.shape[0], **F64)), hess, atol=1e-12)
    space = make_subspace(trainable_parameters(model), masks)
    keep = kept(model, masks)
    sub = hessian_matmat(model, batches, space)(torch.eye(space.dim, **F64))
    assert space.dim == int(keep.sum())
    assert torch.allclose(sub, hess[keep][:, keep], atol=1e-12)


def test_model_is_left_untouched(problem):
    model, batches, _, _ = problem
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hessian_analysis(model, batches, options=HessianOptions(probes=3, backend="pyhessian"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert isinstance(model.bn1, nn.BatchNorm1d)


def test_hutchinson_within_three_stderr_and_converges():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(60, 60, generator=g, **F64)
    a = a + a.T
    exact = float(a.trace())
    # Rademacher probes: Var(v^T A v) = 2 (||A||_F^2 - sum_i A_ii^2)
    sigma = math.sqrt(2 * (float((a**2).sum()) - float((a.diagonal() ** 2).sum())))
    for probes in (64, 1024, 4096):
        est = hutchinson_trace(lambda v: v @ a, 60, probes, torch.Generator().manual_seed(probes), **F64)
        assert est.matvecs == probes and len(est.samples) == probes
        assert abs(est.estimate - exact) <= 3 * est.stderr
        assert 0.7 < est.stderr * math.sqrt(probes) / sigma < 1.3  # stderr shrinks like 1/sqrt(K)


def test_native_trace_within_three_stderr_of_exact(problem):
    model, batches, hess, masks = problem
    for subspace, matrix in (("full", hess), ("mask", hess[kept(model, masks)][:, kept(model, masks)])):
        result = hessian_analysis(model, batches, masks, HessianOptions(probes=300, subspace=subspace, seed=3))
        assert result.subspace == subspace and result.dim == matrix.shape[0] and result.samples == 40
        assert abs(result.trace.estimate - float(matrix.trace())) <= 3 * result.trace.stderr


def test_hutchpp_exact_once_sketch_covers_dimension(problem):
    model, batches, hess, masks = problem
    keep = kept(model, masks)
    for subspace, matrix in (("full", hess), ("mask", hess[keep][:, keep])):
        d = matrix.shape[0]
        result = hessian_analysis(model, batches, masks,
                                  HessianOptions(method="hutchpp", probes=3 * d, subspace=subspace, per_layer=True))
        assert result.trace.estimate == pytest.approx(float(matrix.trace()), rel=1e-9, abs=1e-12)
        assert result.trace.stderr == pytest.approx(0.0, abs=1e-12)
        space = make_subspace(trainable_parameters(model), masks if subspace == "mask" else None)
        for name, part in space.layers.items():  # exact per-layer parts too
            assert result.trace.per_layer[name] == pytest.approx(float(matrix[part, part].trace()), abs=1e-10)


def test_hutchpp_beats_hutchinson_on_decaying_spectrum():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(80, 80, generator=g, **F64))
    a = q @ torch.diag(torch.tensor([0.7**i for i in range(80)], **F64)) @ q.T
    exact = float(a.trace())

    def mean_error(estimator) -> float:
        return float(np.mean([abs(estimator(lambda v: v @ a, 80, 30, torch.Generator().manual_seed(s),
                                            **F64).estimate - exact) for s in range(20)]))

    assert mean_error(hutchpp_trace) < 0.2 * mean_error(hutchinson_trace)


def _spiked(dim: int = 200, seed: int = 0) -> torch.Tensor:
    """A symmetric matrix shaped like a trained network's Hessian: ten outliers, then an indefinite bulk."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, **F64))
    top = torch.tensor([74.0, 39, 35, 31, 20, 16, 11, 8.5, 4.8, 4.0], **F64)
    eig = torch.cat([top, 0.3 * torch.randn(dim - 10, generator=g, **F64) + 0.1])
    return q @ torch.diag(eig) @ q.T


@pytest.mark.parametrize("target_rse", [None, 0.02])
def test_hutchpp_standard_error_is_calibrated(target_rse):
    """Over seeds the estimate is centred on the exact trace and its standard error is the size of the error."""
    a = _spiked()
    exact = float(a.trace())
    runs = [hutchpp_trace(lambda v: v @ a, 200, 60 if target_rse is None else 1000, torch.Generator().manual_seed(s),
                          target_rse=target_rse, **F64) for s in range(300)]
    err, se = np.array([e.estimate - exact for e in runs]), np.array([e.stderr for e in runs])
    assert abs(float(np.mean(err / se))) < 0.25  # unbiased: the mean error is a small fraction of a standard error
    assert 0.75 < float(np.mean(se**2) / np.mean(err**2)) < 1.33  # calibrated: E stderr^2 = E error^2
    assert np.mean(np.abs(err) < 3 * se) > 0.95


def test_adaptive_hutchpp_reaches_the_target_with_fewer_products():
    a = _spiked()
    plain, sketched = (estimator(lambda v: v @ a, 200, 5000, torch.Generator().manual_seed(0), target_rse=0.02, **F64)
                       for estimator in (hutchinson_trace, hutchpp_trace))
    assert plain.relative_stderr <= 0.02 and sketched.relative_stderr <= 0.02
    assert sketched.matvecs * 5 < plain.matvecs
    assert abs(sketched.estimate - float(a.trace())) <= 3 * sketched.stderr


def test_adaptive_hutchpp_grows_its_sketch_when_that_pays():
    """Fifty equal outliers: a first sketch of 8 leaves most of the spread, more sketch blocks remove it."""
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(300, 300, generator=g, **F64))
    a = q @ torch.diag(torch.cat([torch.full((50,), 10.0, **F64), torch.full((250,), 0.01, **F64)])) @ q.T
    est = hutchpp_trace(lambda v: v @ a, 300, 5000, torch.Generator().manual_seed(0), target_rse=0.002, **F64)
    assert est.relative_stderr <= 0.002 and abs(est.estimate - float(a.trace())) <= 3 * est.stderr
    residual_probes = len(est.samples)
    assert est.matvecs - residual_probes > 2 * 8  # more than the first sketch block and its directions


def test_adaptive_hutchpp_on_the_exact_hessian(problem):
    model, batches, hess, masks = problem
    keep = kept(model, masks)
    for subspace, matrix in (("full", hess), ("mask", hess[keep][:, keep])):
        for seed in range(3):
            result = hessian_analysis(model, batches, masks, HessianOptions(probes=500, subspace=subspace, seed=seed,
                                                                            target_rse=0.01, per_layer=True))
            t = result.trace
            assert t.method == "hutchpp" and t.relative_stderr <= 0.01 and t.matvecs < 500
            assert abs(t.estimate - float(matrix.trace())) <= 3 * t.stderr
            assert sum(t.per_layer.values()) == pytest.approx(t.estimate, rel=1e-10, abs=1e-12)


def test_auto_takes_hutchinson_for_a_loose_target_and_hutchpp_for_a_tight_one():
    """A loose target costs no more than Hutchinson alone; a tight one is Hutch++ itself, far cheaper."""
    a = _spiked()

    def run(estimator, target):
        return estimator(lambda v: v @ a, 200, 20000, torch.Generator().manual_seed(0), target_rse=target, **F64)

    loose, tight = run(auto_trace, 0.2), run(auto_trace, 0.01)
    assert loose.method == "hutchinson" and loose.relative_stderr <= 0.2
    assert loose.matvecs <= run(hutchinson_trace, 0.2).matvecs < run(hutchpp_trace, 0.2).matvecs
    assert tight.method == "hutchpp" and tight.relative_stderr <= 0.01
    assert tight == run(hutchpp_trace, 0.01)  # the pilot is Hutch++'s first sketch block: the same estimate
    assert tight.matvecs * 20 < run(hutchinson_trace, 0.01).matvecs
    with pytest.raises(ValueError, match="target_rse"):
        auto_trace(lambda v: v @ a, 200, 100, torch.Generator(), **F64)


def test_auto_on_the_exact_hessian(problem):
    model, batches, hess, masks = problem
    for target in (0.3, 0.01):
        for seed in range(3):
            t = hessian_analysis(model, batches, masks, HessianOptions(method="auto", probes=500, subspace="full",
                                                                       seed=seed, target_rse=target,
                                                                       per_layer=True)).trace
            assert t.relative_stderr <= target and t.matvecs < 500
            assert abs(t.estimate - float(hess.trace())) <= 3 * t.stderr
            assert sum(t.per_layer.values()) == pytest.approx(t.estimate, rel=1e-10, abs=1e-12)


def _covered(runs: list[TraceEstimate], exact: float, layer: str | None = None) -> float:
    return float(np.mean([lo <= exact <= hi for lo, hi in (r.interval(layer=layer) for r in runs)]))


def test_student_t_interval_covers_at_32_probes(problem):
    """At 32 probes the 95% interval covers the exact trace, and every layer's part, 95% of the time (within
    3 binomial standard errors over 400 seeds; estimate -+ 1.96 stderr covered 92-94% of the time on small
    networks' Hessians)."""
    model, _, hess, _ = problem
    layers = make_subspace(trainable_parameters(model), None).layers
    runs = [hutchinson_trace(lambda v: v @ hess, hess.shape[0], 32, torch.Generator().manual_seed(s), layers=layers,
                             **F64) for s in range(400)]
    slack = 3 * math.sqrt(0.95 * 0.05 / 400)
    assert abs(_covered(runs, float(hess.trace())) - 0.95) <= slack
    for name, part in layers.items():
        assert abs(_covered(runs, float(hess[part, part].trace()), name) - 0.95) <= slack, name
    assert runs[0].interval(0.5)[1] - runs[0].interval(0.5)[0] < runs[0].interval()[1] - runs[0].interval()[0]


def test_auto_interval_covers_where_it_switches_to_hutchpp():
    a = _spiked()
    runs = [auto_trace(lambda v: v @ a, 200, 5000, torch.Generator().manual_seed(s), target_rse=0.01, **F64)
            for s in range(200)]
    assert {r.method for r in runs} == {"hutchpp"}
    assert abs(_covered(runs, float(a.trace())) - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / 200)


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp"])
def test_per_layer_parts_sum_to_total(problem, method):
    model, batches, hess, masks = problem
    result = hessian_analysis(model, batches, masks, HessianOptions(method=method, probes=12, per_layer=True))
    t = result.trace
    assert set(t.per_layer) == set(trainable_parameters(model))
    assert sum(t.per_layer.values()) == pytest.approx(t.estimate, rel=1e-10, abs=1e-12)


def test_target_rse_stops_early():
    a = torch.diag(torch.linspace(1.0, 2.0, 50, **F64)) + 0.05
    for estimator in (hutchinson_trace, hutchpp_trace):
        est = estimator(lambda v: v @ a, 50, 2000, torch.Generator().manual_seed(0), target_rse=0.01, block=8, **F64)
        assert est.matvecs < 2000
        assert est.relative_stderr <= 0.01


def test_fixed_seed_gives_identical_output(problem):
    model, batches, _, masks = problem
    options = HessianOptions(probes=6, per_layer=True, top_eigen=True, density=True, lanczos_steps=5, seed=7)
    a, b = (hessian_analysis(model, batches, masks, options) for _ in range(2))
    assert a.trace == b.trace and a.top == b.top and torch.equal(a.top.vector, b.top.vector)
    assert np.array_equal(a.spectrum.ritz_values, b.spectrum.ritz_values)
    c = hessian_analysis(model, batches, masks, HessianOptions(probes=6, seed=8))
    assert c.trace.samples != a.trace.samples


def test_pyhessian_backend_agrees_statistically(problem):
    model, batches, hess, masks = problem
    keep = kept(model, masks)
    for use_masks, matrix in ((None, hess), (masks, hess[keep][:, keep])):
        ref = pyhessian_trace(model, batches, 300, seed=0, masks=use_masks)
        assert len(ref.samples) == 300
        assert abs(ref.estimate - float(matrix.trace())) <= 3 * ref.stderr
    again = pyhessian_trace(model, batches, 5, seed=1)
    assert again == pyhessian_trace(model, batches, 5, seed=1)


def test_lanczos_top_eigenvalue_and_density(problem):
    model, batches, hess, _ = problem
    eig = torch.linalg.eigvalsh(hess)
    result = hessian_analysis(model, batches, options=HessianOptions(probes=2, top_eigen=True, density=True,
                                                                     lanczos_steps=200, lanczos_runs=2))
    spec = result.spectrum
    assert spec.steps == hess.shape[0] and spec.matvecs == 2 * hess.shape[0]
    assert spec.top_eigenvalue == pytest.approx(float(eig[-1]), rel=1e-8)
    assert np.allclose(spec.weights.sum(1), 1.0)
    assert np.all(spec.ritz_values <= float(eig[-1]) + 1e-8) and np.all(spec.ritz_values >= float(eig[0]) - 1e-8)
    grid, phi = spec.density()
    assert np.trapezoid(phi, grid) == pytest.approx(1.0, abs=1e-3)
    # few steps still find the top eigenvalue of a matrix with a clear gap, with a valid residual bound
    a = torch.diag(torch.cat([torch.tensor([10.0], **F64), torch.linspace(0, 1, 99, **F64)]))
    few = lanczos_spectrum(lambda v: v @ a, 100, 12, 1, torch.Generator().manual_seed(0), **F64)
    assert abs(few.top_eigenvalue - 10.0) <= max(few.top_residual, 1e-9) and few.top_residual < 1e-3


def test_estimators_reject_bad_budgets():
    a = torch.eye(4, **F64)
    for estimator in (hutchinson_trace, hutchpp_trace):
        with pytest.raises(ValueError):
            estimator(lambda v: v @ a, 4, 0, torch.Generator(), **F64)
        assert math.isnan(estimator(lambda v: v @ a, 4, 1, torch.Generator(), **F64).stderr)
    # below 3 probes Hutch++ has no sketch: it is Hutchinson on the same probes
    plain = hutchinson_trace(lambda v: v @ a, 4, 2, torch.Generator().manual_seed(1), **F64)
    small = hutchpp_trace(lambda v: v @ a, 4, 2, torch.Generator().manual_seed(1), **F64)
    assert small.samples == plain.samples and small.matvecs == 2
