"""The numbers the trace estimators publish (landscape.trace), on small explicit symmetric matrices: Hutchinson's
mean of v^T A v with its standard error, Hutch++'s deflated estimate (exact once the sketch covers the dimension),
per-layer parts that add up to the total, the Student-t interval, auto's choice, and the errors of bad arguments.
Every test runs in well under a second."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import stdtrit

from landscape import trace as tr
from landscape.trace import (
    TraceEstimate,
    auto_trace,
    estimator_name,
    hutchinson_trace,
    hutchpp_trace,
    leave_one_out_terms,
    new_directions,
    rademacher,
)

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sym(dim: int, seed: int = 1) -> torch.Tensor:
    x = torch.randn(dim, dim, generator=gen(seed), dtype=F64)
    return (x + x.T) / 2 + torch.diag(torch.arange(1.0, dim + 1, dtype=F64))


def spectrum(values: list[float], seed: int = 3) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=gen(seed), dtype=F64))
    return q @ torch.diag(torch.tensor(values, dtype=F64)) @ q.T


def mm(a: torch.Tensor):
    return lambda v: v @ a


LAYERS = {"a": slice(0, 2), "b": slice(2, 5), "c": slice(5, 6)}


# --- the probes and the helpers -----------------------------------------------------------------------------

def test_rademacher_draws_signs_from_the_generator_in_order():
    v = rademacher(40, 7, gen(), dtype=F64)
    assert v.shape == (40, 7) and v.dtype == F64 and set(v.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(rademacher(40, 7, gen()), rademacher(40, 7, gen()))
    g = gen()
    assert torch.equal(torch.cat([rademacher(15, 7, g), rademacher(25, 7, g)]), rademacher(40, 7, gen()))
    assert rademacher(3, 2, gen()).dtype == torch.float32 and rademacher(3, 2, gen()).device.type == "cpu"
    signs = torch.randint(0, 2, (40, 7), generator=gen(), dtype=torch.int8)
    assert torch.equal(v, (2 * signs - 1).double())


def test_stderr_is_the_sample_std_over_sqrt_n_per_column():
    terms = np.array([[1.0, 4.0], [3.0, 2.0], [8.0, 2.0], [0.0, 0.0]])
    assert np.allclose(tr._stderr(terms), terms.std(axis=0, ddof=1) / 2.0)
    one = tr._stderr(np.array([[5.0, 6.0]]))
    assert one.shape == (2,) and np.isnan(one).all()
    assert np.allclose(tr._stderr(terms[:2]), terms[:2].std(axis=0, ddof=1) / math.sqrt(2))


def test_stop_rule_compares_the_stderr_of_offset_plus_mean_with_the_target():
    assert tr._stop_at(None) is None
    terms = np.array([[1.0, 1.0], [3.0, 1.0], [2.0, 2.0]])  # totals 2, 4, 4: mean 10/3, stderr sqrt(4/3)/sqrt(3)
    se = np.std([2.0, 4.0, 4.0], ddof=1) / math.sqrt(3)
    assert tr._stop_at(se / (10 / 3))(terms) and not tr._stop_at(se / (10 / 3) * 0.999)(terms)
    assert tr._stop_at(se / (10 / 3 + 5), offset=5.0)(terms) and not tr._stop_at(se / 8.34, offset=5.0)(terms)
    assert tr._stop_at(se / abs(10 / 3 - 20), offset=-20.0)(terms)
    assert not tr._stop_at(0.9999 * se / abs(10 / 3 - 20), offset=-20.0)(terms)
    assert not tr._stop_at(1e9)(terms[:1])  # one term: no standard error, never stops
    assert tr._stop_at(0.0)(np.array([[1.0], [1.0]]))  # zero spread meets a zero target


def test_probes_needed_follows_its_formula():
    assert tr._probes_needed(3.0, 1.0, 2) == 9 and tr._probes_needed(3.0, 1.0, 10) == 10
    assert tr._probes_needed(3.1, 1.0, 1) == 10  # ceil(9.61)
    assert tr._probes_needed(2.0, 1.0, 4) == 4 and tr._probes_needed(2.0, 1.0, 3) == 4
    assert tr._probes_needed(6.0, 2.0, 1) == 9
    assert tr._probes_needed(5.0, 0.0, 7) == 7 and tr._probes_needed(5.0, -1.0, 7) == 7
    assert tr._probes_needed(1.0, 1e-300, 1) == math.ceil(1e15**2)
    assert tr._probes_needed(0.5e15, 1.0, 1) == math.ceil(0.5e15**2)


def test_worth_growing_follows_its_formula():
    # after = sqrt(sigma^2 - 2 step smallest^2); worth it when 2 step + n(after) < n(sigma)
    assert tr._worth_growing(10.0, 2.0, 1.0, 4, 1) is True  # 8 + 68 < 100
    assert tr._worth_growing(10.0, 2.0, 1.0, 16, 1) is True  # 32 + 1 (after = 0, least 1) < 100
    assert tr._worth_growing(10.0, 2.0, 1.0, 16, 70) is False  # 32 + 70 > 100
    assert tr._worth_growing(10.0, 1.0, 1.0, 4, 1) is False  # 8 + 92 = 100 is not < 100
    assert tr._worth_growing(10.0, 1.1, 1.0, 4, 1) is True  # 8 + ceil(90.32) = 99
    assert tr._worth_growing(10.0, 1.0, 1.0, 3, 1) is False  # 6 + 94 = 100
    assert tr._worth_growing(10.0, 0.5, 1.0, 4, 1) is False  # 8 + 98 > 100
    assert tr._worth_growing(10.0, 2.0, 1.0, 4, 95) is False  # 8 + 95 > 100
    assert tr._worth_growing(10.0, 2.0, 2.0, 4, 1) is False  # 8 + 17 = 25 against 25


def test_grouped_inner_products_in_chunks_equal_the_whole():
    x, y = torch.randn(3, 7, generator=gen(1)), torch.randn(4, 7, generator=gen(2))
    groups = {"p": slice(0, 3), "q": slice(3, 7)}
    whole = tr._grouped_inner(x, y, groups)
    assert whole.dtype == F64 and whole.shape == (3, 4, 2)
    assert torch.allclose(whole[..., 0], x[:, :3].double() @ y[:, :3].double().T)
    assert torch.allclose(whole[..., 1], x[:, 3:].double() @ y[:, 3:].double().T)
    assert torch.allclose(tr._grouped_inner(x, y, groups, chunk=2), whole)
    assert torch.allclose(tr._grouped_inner(x, y, groups, chunk=1), whole)
    rows = tr._grouped_rowwise(x, y[:3], groups, chunk=2)
    assert rows.dtype == F64 and rows.shape == (3, 2)
    assert torch.allclose(rows[:, 0], (x[:, :3] * y[:3, :3]).double().sum(1))
    assert torch.allclose(rows[:, 1], (x[:, 3:] * y[:3, 3:]).double().sum(1))
    assert torch.allclose(tr._grouped_rowwise(x, y[:3], groups), rows)


def test_layer_terms_are_the_per_layer_products_in_float64():
    v = rademacher(5, 6, gen(), dtype=torch.float32)
    av = torch.randn(5, 6, generator=gen(4))
    terms = tr._layer_terms(v, av, LAYERS)
    assert terms.dtype == np.float64 and terms.shape == (5, 3)
    prod = (v * av).double()
    assert np.allclose(terms, np.stack([prod[:, :2].sum(1), prod[:, 2:5].sum(1), prod[:, 5:].sum(1)], 1))


def test_new_directions_are_orthonormal_orthogonal_to_q_and_drop_dependent_rows():
    y = torch.randn(3, 6, generator=gen(5), dtype=F64)
    q = new_directions(y, torch.zeros(0, 6, dtype=F64))
    assert q.shape == (3, 6) and torch.allclose(q @ q.T, torch.eye(3, dtype=F64), atol=1e-12)
    assert torch.allclose(y - (y @ q.T) @ q, torch.zeros_like(y), atol=1e-12)  # spans y
    more = torch.cat([torch.randn(2, 6, generator=gen(6), dtype=F64), y[:1] * 2 + y[1:2]])  # third dependent
    r = new_directions(more, q)
    assert r.shape == (2, 6)
    assert torch.allclose(r @ r.T, torch.eye(2, dtype=F64), atol=1e-12)
    assert torch.allclose(r @ q.T, torch.zeros(2, 3, dtype=F64), atol=1e-12)
    assert new_directions(y[:1] * 0, q).shape == (0, 6)  # zero rows: nothing new
    assert new_directions(torch.zeros(0, 6, dtype=F64), q).shape == (0, 6)
    assert new_directions(y, torch.cat([q, r])).shape[0] == 0  # inside the span: all dropped
    # at least dim rows without q: a whole basis even when they repeat
    rep = torch.ones(8, 4, dtype=F64)
    basis = new_directions(rep, torch.zeros(0, 4, dtype=F64))
    assert basis.shape == (4, 4) and torch.allclose(basis @ basis.T, torch.eye(4, dtype=F64), atol=1e-12)
    few = new_directions(rep[:3], torch.zeros(0, 4, dtype=F64))
    assert few.shape == (1, 4)  # three equal rows: one direction
    # a direction at the tolerance: a tiny independent part relative to the largest row is dropped
    tiny = torch.stack([torch.tensor([1.0, 0, 0, 0], dtype=F64), torch.tensor([1.0, 1e-9, 0, 0], dtype=F64)])
    assert new_directions(tiny, torch.zeros(0, 4, dtype=F64)).shape == (1, 4)
    big = torch.stack([torch.tensor([1.0, 0, 0, 0], dtype=F64), torch.tensor([1.0, 1e-6, 0, 0], dtype=F64)])
    assert new_directions(big, torch.zeros(0, 4, dtype=F64)).shape == (2, 4)


def test_new_directions_projects_out_q_twice_for_nearly_dependent_rows():
    q = torch.eye(6, dtype=F64)[:3]
    y = torch.tensor([[1e8, 1e8, 1e8, 10.0, 0, 0], [1e8, -1e8, 0, 0, 10.0, 0]], dtype=F64)
    r = new_directions(y, q)
    assert r.shape == (2, 6) and float((r @ q.T).abs().max()) < 1e-12


# --- Hutchinson ---------------------------------------------------------------------------------------------

def test_hutchinson_is_the_mean_of_v_a_v_with_its_stderr():
    a = sym(6)
    est = hutchinson_trace(mm(a), 6, 20, gen(7), dtype=F64)
    v = rademacher(20, 6, gen(7), dtype=F64)
    terms = ((v @ a) * v).sum(1).numpy()
    assert est.method == "hutchinson" and est.matvecs == 20
    assert est.estimate == pytest.approx(terms.mean(), abs=1e-12)
    assert est.stderr == pytest.approx(terms.std(ddof=1) / math.sqrt(20), abs=1e-12)
    assert np.allclose(est.samples, terms, atol=1e-12) and len(est.samples) == 20
    assert est.per_layer == {} and est.per_layer_stderr == {}
    assert est.relative_stderr == pytest.approx(est.stderr / abs(est.estimate))


def test_hutchinson_per_layer_parts_add_up_and_are_the_layer_means():
    a = sym(6)
    est = hutchinson_trace(mm(a), 6, 12, gen(8), layers=LAYERS, dtype=F64)
    v = rademacher(12, 6, gen(8), dtype=F64)
    prod = (v @ a) * v
    for name, sl in LAYERS.items():
        part = prod[:, sl].sum(1).numpy()
        assert est.per_layer[name] == pytest.approx(part.mean(), abs=1e-12)
        assert est.per_layer_stderr[name] == pytest.approx(part.std(ddof=1) / math.sqrt(12), abs=1e-12)
    assert list(est.per_layer) == ["a", "b", "c"]
    assert sum(est.per_layer.values()) == pytest.approx(est.estimate, abs=1e-12)
    assert est.estimate == pytest.approx(prod.sum(1).mean().item(), abs=1e-12)


def test_hutchinson_of_a_diagonal_matrix_is_exact_with_zero_stderr():
    a = torch.diag(torch.tensor([1.0, -2.0, 5.0], dtype=F64))
    est = hutchinson_trace(mm(a), 3, 5, gen(), dtype=F64)
    assert est.estimate == 4.0 and est.stderr == 0.0 and est.samples == (4.0,) * 5
    one = hutchinson_trace(mm(a), 3, 1, gen(), dtype=F64)
    assert one.estimate == 4.0 and math.isnan(one.stderr) and one.matvecs == 1


def test_hutchinson_stops_at_the_first_block_meeting_the_target():
    a = sym(6)
    v = rademacher(200, 6, gen(9), dtype=F64)
    terms = ((v @ a) * v).sum(1).numpy()

    def first_stop(target, block):
        for n in range(block, 201, block):
            t = terms[:n]
            if n > 1 and t.std(ddof=1) / math.sqrt(n) <= target * abs(t.mean()):
                return n
        return 200

    for target, block in ((0.1, None), (0.05, 4), (0.03, 5)):
        est = hutchinson_trace(mm(a), 6, 200, gen(9), target_rse=target, block=block, dtype=F64)
        n = first_stop(target, block or 16)
        assert est.matvecs == n and len(est.samples) == n, (target, block)
        assert est.estimate == pytest.approx(terms[:n].mean(), abs=1e-12)
        assert est.relative_stderr <= target or n == 200
    # a budget that is not a multiple of the block: the last block is cut to it
    est = hutchinson_trace(mm(a), 6, 21, gen(9), target_rse=1e-9, block=8, dtype=F64)
    assert est.matvecs == 21 and np.allclose(est.samples, terms[:21])
    # without a target, every probe in one block, whatever block says
    calls = []
    hutchinson_trace(lambda x: calls.append(len(x)) or x @ a, 6, 30, gen(9), dtype=F64)
    assert calls == [30]
    calls.clear()
    hutchinson_trace(lambda x: calls.append(len(x)) or x @ a, 6, 40, gen(9), target_rse=1e-9, dtype=F64)
    assert calls == [16, 16, 8]


def test_hutchinson_refuses_fewer_than_one_probe():
    with pytest.raises(ValueError, match="^Hutchinson needs at least one probe$"):
        hutchinson_trace(mm(sym(3)), 3, 0, gen())


# --- Hutch++ ------------------------------------------------------------------------------------------------

def test_hutchpp_is_exact_once_the_sketch_covers_the_dimension():
    a = sym(6)
    for probes in (18, 25):
        est = hutchpp_trace(mm(a), 6, probes, gen(10), layers=LAYERS, dtype=F64)
        assert est.method == "hutchpp" and est.matvecs == probes
        assert est.estimate == pytest.approx(float(a.trace()), abs=1e-10)
        assert est.stderr == pytest.approx(0.0, abs=1e-10)
        assert len(est.samples) == probes - probes // 3 - 6
        for name, sl in LAYERS.items():
            assert est.per_layer[name] == pytest.approx(float(a.diagonal()[sl].sum()), abs=1e-10)
            assert est.per_layer_stderr[name] == pytest.approx(0.0, abs=1e-10)
        lo, hi = est.interval()
        assert hi - lo == pytest.approx(0.0, abs=1e-9)


def test_hutchpp_below_four_probes_is_hutchinson():
    a = sym(5)
    for probes in (1, 2, 3):
        pp, h = hutchpp_trace(mm(a), 5, probes, gen(11), dtype=F64), hutchinson_trace(mm(a), 5, probes, gen(11),
                                                                                          dtype=F64)
        assert pp.method == "hutchpp" and pp.matvecs == probes
        assert pp.estimate == pytest.approx(h.estimate, abs=1e-12) and pp.samples == pytest.approx(h.samples)
        assert (math.isnan(pp.stderr) and math.isnan(h.stderr)) or pp.stderr == pytest.approx(h.stderr)


def hutchpp_by_hand(a: torch.Tensor, probes: int, seed: int):
    """Meyer et al.'s fixed split written out: sketch probes // 3, Q its orthonormal span, V the rest."""
    dim, g = a.shape[0], gen(seed)
    s = probes // 3
    y = rademacher(s, dim, g, dtype=F64) @ a
    q = torch.linalg.qr(y.T)[0].T
    v = rademacher(probes - s - len(q), dim, g, dtype=F64)
    p = torch.eye(dim, dtype=F64) - q.T @ q
    res = (v @ p @ a @ p) * v  # per coordinate: v_l (v P A P)_l
    exact = torch.diagonal(a) - torch.diagonal(p @ a @ p)  # diag of A - P A P
    return q, res, exact


def test_hutchpp_fixed_split_is_the_sketch_trace_plus_the_residual_mean():
    a = sym(10)
    q, res, exact = hutchpp_by_hand(a, 13, 12)  # sketch 4, directions 4, residual probes 5
    est = hutchpp_trace(mm(a), 10, 13, gen(12), layers={"x": slice(0, 3), "y": slice(3, 10)}, dtype=F64)
    terms = res.sum(1).numpy()
    assert len(q) == 4 and len(terms) == 5 and est.matvecs == 13
    assert float(torch.trace(q @ a @ q.T)) == pytest.approx(float(exact.sum()), abs=1e-10)
    assert est.estimate == pytest.approx(float(exact.sum()) + terms.mean(), abs=1e-10)
    assert est.stderr == pytest.approx(terms.std(ddof=1) / math.sqrt(5), abs=1e-10)
    assert np.allclose(est.samples, terms, atol=1e-10)
    for name, sl in (("x", slice(0, 3)), ("y", slice(3, 10))):
        part = res[:, sl].sum(1).numpy()
        assert est.per_layer[name] == pytest.approx(float(exact[sl].sum()) + part.mean(), abs=1e-10)
        assert est.per_layer_stderr[name] == pytest.approx(part.std(ddof=1) / math.sqrt(5), abs=1e-10)
    assert sum(est.per_layer.values()) == pytest.approx(est.estimate, abs=1e-10)
    plain = hutchpp_trace(mm(a), 10, 13, gen(12), dtype=F64)
    assert plain.per_layer == {} and plain.estimate == pytest.approx(est.estimate, abs=1e-12)


def test_deflation_adds_probes_and_directions_in_any_order():
    a, groups = sym(7), {"u": slice(0, 4), "w": slice(4, 7)}
    v1, v2 = rademacher(3, 7, gen(13), dtype=F64), rademacher(4, 7, gen(14), dtype=F64)
    q = new_directions(torch.randn(3, 7, generator=gen(15), dtype=F64), torch.zeros(0, 7, dtype=F64))
    q2 = new_directions(torch.randn(2, 7, generator=gen(16), dtype=F64), q)
    state = tr._Deflation(7, groups, F64, "cpu")
    state.add_probes(v1, v1 @ a)
    state.add_directions(q, q @ a)
    state.add_probes(v2, v2 @ a)
    state.add_directions(q2, q2 @ a)
    qq = torch.cat([q, q2])
    p = torch.eye(7, dtype=F64) - qq.T @ qq
    v = torch.cat([v1, v2])
    res = (v @ p @ a @ p) * v
    terms = state.residual_terms()
    assert terms.shape == (7, 2)
    assert np.allclose(terms[:, 0], res[:, :4].sum(1).numpy()) and np.allclose(terms[:, 1], res[:, 4:].sum(1).numpy())
    exact = torch.diagonal(a) - torch.diagonal(p @ a @ p)
    assert np.allclose(state.exact_parts(), [float(exact[:4].sum()), float(exact[4:].sum())])
    assert torch.allclose(state.h, qq @ a @ qq.T)
    # with the first r directions only
    p3 = torch.eye(7, dtype=F64) - q.T @ q
    assert np.allclose(state.residual_terms(3).sum(1), ((v @ p3 @ a @ p3) * v).sum(1).numpy())
    assert np.allclose(state.residual_terms(0).sum(1), ((v @ a) * v).sum(1).numpy())


def test_deflation_symmetrises_h():
    a = sym(5)
    skew = torch.zeros(5, 5, dtype=F64)
    skew[0, 1], skew[1, 0] = 1.0, -1.0
    q = torch.eye(5, dtype=F64)[:3]
    state = tr._Deflation(5, {"t": slice(0, 5)}, F64, "cpu")
    state.add_directions(q, q @ (a + skew))
    assert torch.allclose(state.h, a[:3, :3])


def test_leave_one_out_terms_are_the_rank_r_minus_1_estimates():
    a = spectrum([9.0, 5.0, 3.0, 1.0, 0.5, 0.2])
    s = rademacher(3, 6, gen(17), dtype=F64)
    y = s @ a
    q = new_directions(y, torch.zeros(0, 6, dtype=F64))
    h = q @ a @ q.T
    got = leave_one_out_terms(s, y, q, h)
    want = []
    for i in range(3):
        qi = torch.linalg.qr(torch.cat([y[:i], y[i + 1:]]).T)[0].T
        pi = torch.eye(6, dtype=F64) - qi.T @ qi
        want.append(float(torch.trace(qi @ a @ qi.T) + s[i] @ pi @ a @ pi @ s[i]))
    assert got is not None and np.allclose(got, want, atol=1e-9)
    assert leave_one_out_terms(s[:1], y[:1], q[:1], h[:1, :1]) is None  # one row: nothing to leave out
    assert leave_one_out_terms(s, y, q[:2], h[:2, :2]) is None  # not square
    low = torch.cat([y[:2], y[:1] + y[1:2]])
    assert leave_one_out_terms(s, low, torch.cat([q[:2], q[2:]]), h) is None  # dependent products


def test_hutchpp_two_stage_meets_its_target_on_a_decaying_spectrum():
    a = spectrum([100.0, 30.0, 10.0] + [0.1] * 37)
    est = hutchpp_trace(mm(a), 40, 400, gen(18), target_rse=0.01, dtype=F64, layers={"p": slice(0, 15),
                                                                                        "r": slice(15, 40)})
    assert est.method == "hutchpp" and est.relative_stderr <= 0.01 and est.matvecs < 80
    assert abs(est.estimate - float(a.trace())) < 4 * est.stderr
    assert sum(est.per_layer.values()) == pytest.approx(est.estimate, abs=1e-9)
    assert len(est.samples) >= 16  # at least 2 blocks of residual probes
    # rank 3: the first sketch block covers the range, then the estimate is exact
    low = spectrum([5.0, 3.0, 2.0] + [0.0] * 17)
    ex = hutchpp_trace(mm(low), 20, 200, gen(19), target_rse=0.01, dtype=F64)
    assert ex.estimate == pytest.approx(10.0, abs=1e-9) and ex.stderr == pytest.approx(0.0, abs=1e-9)
    assert ex.matvecs == 8 + 3 + 16
    # a budget under four blocks uses the fixed split
    small = hutchpp_trace(mm(a), 40, 31, gen(18), target_rse=0.01, dtype=F64)
    fixed = hutchpp_trace(mm(a), 40, 31, gen(18), dtype=F64)
    assert small == fixed and small.matvecs == 31
    assert hutchpp_trace(mm(a), 40, 32, gen(18), target_rse=0.01, dtype=F64) != hutchpp_trace(
        mm(a), 40, 32, gen(18), dtype=F64)


def test_hutchpp_two_stage_grows_the_sketch_for_a_run_of_outliers():
    a = spectrum([50.0] * 20 + [0.01] * 20)
    calls = []
    est = hutchpp_trace(lambda x: calls.append(len(x)) or x @ a, 40, 2000, gen(20), target_rse=0.001, dtype=F64)
    assert est.relative_stderr <= 0.001 and est.estimate == pytest.approx(1000.2, rel=0.005)
    assert calls[0] == 8 and calls[1] == 8 + 16  # a sketch block, then its directions with 16 residual probes
    assert len(calls) > 3 and calls[2] == 8  # a second sketch block was drawn
    assert est.matvecs == sum(calls)


def test_hutchpp_two_stage_block_and_budget():
    a = spectrum([100.0, 30.0, 10.0] + list(np.linspace(2.0, 0.5, 57)))
    calls = []
    est = hutchpp_trace(lambda x: calls.append(len(x)) or x @ a, 60, 2000, gen(21), target_rse=0.002, block=4,
                        dtype=F64)
    assert calls[0] == 4 and calls[1] == 4 + 8 and est.matvecs == sum(calls)
    assert est.relative_stderr <= 0.002
    assert max(calls) <= 64  # residual probes in passes of at most 64
    capped = hutchpp_trace(mm(a), 60, 100, gen(21), target_rse=1e-6, dtype=F64)
    assert capped.matvecs <= 100 and capped.relative_stderr > 1e-6


def test_hutchpp_refuses_fewer_than_one_probe():
    with pytest.raises(ValueError, match=r"^Hutch\+\+ needs at least one probe$"):
        hutchpp_trace(mm(sym(3)), 3, 0, gen())


# --- auto ---------------------------------------------------------------------------------------------------

def test_auto_refuses_bad_arguments():
    with pytest.raises(ValueError, match="^auto needs at least one probe$"):
        auto_trace(mm(sym(3)), 3, 0, gen(), target_rse=0.1)
    with pytest.raises(ValueError, match="^auto chooses its estimator for a target_rse: give one, or choose "
                                         "hutchinson or hutchpp$"):
        auto_trace(mm(sym(3)), 3, 10, gen())


def test_auto_keeps_hutchinson_for_a_loose_target_with_the_same_probes():
    a = sym(6)
    est = auto_trace(mm(a), 6, 500, gen(22), target_rse=0.2, layers=LAYERS, dtype=F64)
    v = rademacher(500, 6, gen(22), dtype=F64)
    prod = (v @ a) * v
    n = est.matvecs
    assert est.method == "hutchinson" and n == 16 and len(est.samples) == 16  # the floor of 16
    assert est.estimate == pytest.approx(prod[:n].sum(1).mean().item(), abs=1e-12)
    assert est.per_layer["b"] == pytest.approx(prod[:n, 2:5].sum(1).mean().item(), abs=1e-12)
    assert sum(est.per_layer.values()) == pytest.approx(est.estimate, abs=1e-12)
    assert est.relative_stderr <= 0.2
    plain = auto_trace(mm(a), 6, 500, gen(22), target_rse=0.2, dtype=F64)
    assert plain.per_layer == {} and plain.estimate == est.estimate


def test_auto_hutchinson_stops_where_its_plan_says():
    a = sym(6)
    v = rademacher(2000, 6, gen(35), dtype=F64)
    terms = ((v @ a) * v).sum(1).numpy()
    target = 0.03
    calls = []
    est = auto_trace(lambda x: calls.append(len(x)) or x @ a, 6, 2000, gen(35), target_rse=target, dtype=F64)
    assert est.method == "hutchinson" and calls[0] == 8
    n = est.matvecs
    assert np.allclose(est.samples, terms[:n]) and est.estimate == pytest.approx(terms[:n].mean(), abs=1e-12)
    assert est.relative_stderr <= target
    # the replanned passes: n_H - n, at least 8 and 16 - n, at most 64; stop once the target is met at >= 16
    done = 8
    for size in calls[1:]:
        t = terms[:done]
        need = max(done, math.ceil((t.std(ddof=1) / (target * abs(t.mean()))) ** 2))
        assert size == min(64, max(8, 16 - done, need - done), 2000 - done)
        done += size
        t = terms[:done]
    assert done == n
    assert t.std(ddof=1) / math.sqrt(n) <= target * abs(t.mean())
    t = terms[:n - calls[-1]]
    assert n - calls[-1] < 16 or t.std(ddof=1) / math.sqrt(len(t)) > target * abs(t.mean())


def test_auto_switches_to_hutchpp_and_equals_it():
    a = spectrum([100.0, 30.0, 10.0] + [0.1] * 37)
    est = auto_trace(mm(a), 40, 1000, gen(24), target_rse=0.01, layers=LAYERS, dtype=F64)
    pp = hutchpp_trace(mm(a), 40, 1000, gen(24), target_rse=0.01, layers=LAYERS, dtype=F64)
    assert est.method == "hutchpp" and est == pp
    est4 = auto_trace(mm(a), 40, 1000, gen(24), target_rse=0.01, block=4, dtype=F64)
    assert est4 == hutchpp_trace(mm(a), 40, 1000, gen(24), target_rse=0.01, block=4, dtype=F64)


def test_auto_threshold_is_the_hutchpp_minimum():
    # pilot of 8 terms: needed = ceil((s / (target |t|))^2); Hutch++ needs at least 8 + min(8, dim) + 16
    a = sym(6)
    pilot = ((rademacher(8, 6, gen(25), dtype=F64) @ a) * rademacher(8, 6, gen(25), dtype=F64)).sum(1).numpy()
    ratio = pilot.std(ddof=1) / abs(pilot.mean())
    least = 8 + 6 + 16  # dim 6 < 8

    def target_for(n):  # the loosest target that needs n probes
        return ratio / math.sqrt(n)

    at = auto_trace(mm(a), 6, 500, gen(25), target_rse=target_for(least) * 1.0001, dtype=F64)
    past = auto_trace(mm(a), 6, 500, gen(25), target_rse=target_for(least + 1) * 1.0001, dtype=F64)
    assert at.method == "hutchinson" and past.method == "hutchpp"
    # a budget below Hutch++'s minimum keeps Hutchinson
    small = auto_trace(mm(a), 6, least - 1, gen(25), target_rse=1e-6, dtype=F64)
    assert small.method == "hutchinson" and small.matvecs == least - 1
    enough = auto_trace(mm(a), 6, least, gen(25), target_rse=1e-6, dtype=F64)
    assert enough.method == "hutchpp"


def test_auto_with_one_or_few_probes():
    a = sym(4)
    one = auto_trace(mm(a), 4, 1, gen(26), target_rse=0.1, dtype=F64)
    h = hutchinson_trace(mm(a), 4, 1, gen(26), dtype=F64)
    assert one.method == "hutchinson" and one.matvecs == 1 and one.estimate == h.estimate
    five = auto_trace(mm(a), 4, 5, gen(26), target_rse=1e-6, dtype=F64)
    assert five.matvecs == 5 and five.estimate == pytest.approx(hutchinson_trace(mm(a), 4, 5, gen(26),
                                                                                 dtype=F64).estimate)
    two = auto_trace(mm(a), 4, 2, gen(26), target_rse=1e-6, block=1, dtype=F64)
    assert two.method == "hutchinson" and two.matvecs == 2


# --- the result ---------------------------------------------------------------------------------------------

def test_interval_is_the_student_t_half_width():
    est = TraceEstimate("hutchinson", 10.0, 2.0, 16, {"l": 4.0}, {"l": 0.5}, samples=(1.0,) * 16)
    for level in (0.95, 0.9, 0.5):
        half = float(stdtrit(15, (1 + level) / 2)) * 2.0
        lo, hi = est.interval(level)
        assert lo == pytest.approx(10.0 - half, abs=1e-12) and hi == pytest.approx(10.0 + half, abs=1e-12)
    lo, hi = est.interval(layer="l")
    half = float(stdtrit(15, 0.975)) * 0.5
    assert (lo, hi) == pytest.approx((4.0 - half, 4.0 + half), abs=1e-12)
    assert est.interval() == pytest.approx((10.0 - 2.131449546 * 2, 10.0 + 2.131449546 * 2), abs=1e-8)
    short = TraceEstimate("hutchinson", 1.0, 1.0, 2, samples=(0.0, 2.0))
    assert short.interval()[1] == pytest.approx(1.0 + float(stdtrit(1, 0.975)), abs=1e-12)
    for level in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"^level must be between 0 and 1, got {level!r}$"):
            est.interval(level)


def test_interval_is_nan_without_a_standard_error_and_zero_width_at_zero():
    nan = TraceEstimate("hutchinson", 3.0, math.nan, 1, samples=(3.0,))
    assert all(math.isnan(x) for x in nan.interval())
    no_se = TraceEstimate("hutchinson", 3.0, math.nan, 5, samples=(3.0,) * 5)
    assert all(math.isnan(x) for x in no_se.interval())
    one = TraceEstimate("hutchinson", 3.0, 1.0, 1, samples=(3.0,))
    assert all(math.isnan(x) for x in one.interval())
    layer_nan = TraceEstimate("hutchpp", 3.0, 1.0, 5, {"l": 1.0}, {"l": math.nan}, samples=(3.0,) * 5)
    assert all(math.isnan(x) for x in layer_nan.interval(layer="l")) and not math.isnan(layer_nan.interval()[0])
    zero = TraceEstimate("hutchpp", 3.0, 0.0, 9, samples=(0.0,) * 3)
    assert zero.interval() == (3.0, 3.0)


def test_relative_stderr_and_json():
    assert TraceEstimate("hutchinson", -4.0, 1.0, 2).relative_stderr == 0.25
    assert TraceEstimate("hutchinson", 0.0, 1.0, 2).relative_stderr == math.inf
    est = TraceEstimate("hutchinson", 10.0, 2.0, 16, {"l": 4.0}, {"l": 0.5}, samples=(1.0,) * 16)
    obj = est.to_json()
    assert obj["method"] == "hutchinson" and obj["estimate"] == 10.0 and obj["stderr"] == 2.0
    assert obj["relative_stderr"] == 0.2 and obj["matvecs"] == 16 and obj["samples"] == [1.0] * 16
    assert obj["interval"] == list(est.interval()) and obj["per_layer"] == {"l": 4.0}
    assert obj["per_layer_stderr"] == {"l": 0.5} and obj["per_layer_interval"] == {"l": list(est.interval(layer="l"))}
    bad = TraceEstimate("hutchinson", 0.0, math.nan, 1, {"l": math.inf}, {"l": math.nan}, samples=(0.0,)).to_json()
    assert bad["relative_stderr"] is None and bad["stderr"] is None and bad["interval"] == [None, None]
    assert bad["per_layer"] == {"l": None} and bad["per_layer_interval"] == {"l": [None, None]}
    assert bad["estimate"] == 0.0 and bad["samples"] == [0.0]
    assert tr._json_floats([1.0, -math.inf, {"x": [math.nan, 2]}, "s"]) == [1.0, None, {"x": [None, 2]}, "s"]


def test_estimator_names():
    assert estimator_name("hutchinson") == "hutchinson" and estimator_name("HutchPP") == "hutchpp"
    assert estimator_name("Hutch++") == "hutchpp" and estimator_name("AUTO") == "auto"
    assert estimator_name("lanczos") is None and estimator_name(3) is None and estimator_name(None) is None
    assert tr.ESTIMATORS == {"hutchinson": hutchinson_trace, "hutchpp": hutchpp_trace, "auto": auto_trace}
    assert tr.AUTO_BLOCK == 8 and tr.AUTO_FLOOR == 16 and tr.AUTO_MAX_BLOCK == 64


# --- corner cases that decide a number ----------------------------------------------------------------------

def test_corner_cases_of_the_helpers():
    assert tr._worth_growing(1.0, 1.0, 0.5, 1, 1) is True  # after = 0 (not 1): 2 + 1 < 4
    zero = new_directions(torch.zeros(5, 4, dtype=F64), torch.zeros(0, 4, dtype=F64))
    assert zero.shape == (0, 4)  # zero rows give no direction, even dim of them
    near = torch.tensor([[1.0, 0, 0, 0], [1.0, 1.8e-8, 0, 0]], dtype=F64)  # tolerance from the largest row norm
    assert new_directions(near, torch.zeros(0, 4, dtype=F64)).shape == (2, 4)
    far = torch.tensor([[100.0, 0, 0, 0], [100.0, 1e-6, 0, 0]], dtype=F64)  # relative, not absolute
    assert new_directions(far, torch.zeros(0, 4, dtype=F64)).shape == (1, 4)
    a = spectrum([9.0, 5.0, 3.0, 1.0, 0.5, 0.2])
    s = rademacher(3, 6, gen(17), dtype=F64)
    y = s @ a
    q = new_directions(y, torch.zeros(0, 6, dtype=F64))
    assert leave_one_out_terms(s[:2], y[:2], q, q @ a @ q.T) is None  # fewer products than directions
    q2 = new_directions(y[:2], torch.zeros(0, 6, dtype=F64))
    got = leave_one_out_terms(s[:2], y[:2], q2, q2 @ a @ q2.T)
    want = []
    for i in range(2):
        qi = y[1 - i:2 - i] / y[1 - i].norm()
        pi = torch.eye(6, dtype=F64) - qi.T @ qi
        want.append(float(torch.trace(qi @ a @ qi.T) + s[i] @ pi @ a @ pi @ s[i]))
    assert got is not None and np.allclose(got, want, atol=1e-9)


def test_hutchpp_small_budgets_and_float32():
    a = sym(10)
    calls = []
    hutchpp_trace(lambda x: calls.append(len(x)) or x @ a, 10, 3, gen(), dtype=F64)
    assert calls == [3]  # no sketch, not even an empty one
    calls.clear()
    est = hutchpp_trace(lambda x: calls.append(len(x)) or x @ a, 10, 4, gen(), dtype=F64)
    assert calls == [1, 3] and len(est.samples) == 2  # 4 probes: a sketch of one
    plain = hutchpp_trace(mm(a), 10, 13, gen(12), dtype=F64)
    assert plain.per_layer_stderr == {} and hutchinson_trace(mm(a), 10, 13, gen(12), dtype=F64).per_layer_stderr == {}
    single = hutchpp_trace(mm(a.float()), 10, 13, gen(12), layers={"x": slice(0, 3), "y": slice(3, 10)})
    double = hutchpp_trace(mm(a), 10, 13, gen(12), layers={"x": slice(0, 3), "y": slice(3, 10)}, dtype=F64)
    assert single.estimate == pytest.approx(double.estimate, rel=1e-4)
    assert single.per_layer["x"] == pytest.approx(double.per_layer["x"], rel=1e-4, abs=1e-4)


@pytest.mark.parametrize(("seed", "block", "target"), [(35, None, 0.03), (34, None, 0.03), (24, None, 0.03),
                                                      (35, 2, 0.08)])
def test_auto_hutchinson_passes_follow_the_plan(seed, block, target):
    a = sym(6)
    v = rademacher(2000, 6, gen(seed), dtype=F64)
    terms = ((v @ a) * v).sum(1).numpy()
    size = block or 8
    calls = []
    est = auto_trace(lambda x: calls.append(len(x)) or x @ a, 6, 2000, gen(seed), target_rse=target, block=block,
                     dtype=F64)
    assert est.method == "hutchinson" and calls[0] == size
    done = size
    for step in calls[1:]:
        t = terms[:done]
        need = max(done, math.ceil((t.std(ddof=1) / (target * abs(t.mean()))) ** 2))
        assert step == min(64, max(size, 16 - done, need - done), 2000 - done)
        done += step
    assert done == est.matvecs and np.allclose(est.samples, terms[:done])


def test_auto_with_a_pilot_of_two_can_switch():
    a = spectrum([100.0, 30.0, 10.0] + [0.1] * 37)
    est = auto_trace(mm(a), 40, 1000, gen(24), target_rse=0.01, block=2, dtype=F64)
    assert est.method == "hutchpp"
    assert est == hutchpp_trace(mm(a), 40, 1000, gen(24), target_rse=0.01, block=2, dtype=F64)


def test_hutchpp_two_stage_on_a_flat_spectrum_draws_its_planned_probes_in_passes_of_64():
    a = spectrum(list(np.linspace(1.0, 2.0, 40)))
    calls = []
    torch.manual_seed(1)
    est = hutchpp_trace(lambda x: calls.append(len(x)) or x @ a, 40, 3000, gen(27), target_rse=0.004, dtype=F64)
    torch.manual_seed(2)
    again = hutchpp_trace(mm(a), 40, 3000, gen(27), target_rse=0.004, dtype=F64)
    assert est == again  # every probe from the generator
    assert est.matvecs == sum(calls) and max(calls) == 64 and est.relative_stderr <= 0.004
    assert est.estimate == pytest.approx(60.0, rel=0.02)
    terms = np.array(est.samples)
    assert est.stderr == pytest.approx(terms.std(ddof=1) / math.sqrt(len(terms)))


@pytest.mark.parametrize(("values", "probes", "target", "block", "seed", "calls", "estimate"), [
    ([50.0] * 20 + [0.01] * 20, 2000, 0.001, None, 20, [8, 24, 8, 8, 8, 8], 1000.1898357847926),
    ([30.0, 20, 10] + list(np.linspace(1.0, 0.5, 77)), 1000, 0.01, None, 30, [8, 24, 16, 10], 118.12326133566896),
    (list(1.0 / np.arange(1, 81)), 1000, 0.01, None, 31, [8, 24, 8, 8, 21], 5.003403783932014),
    (list(1.0 / np.arange(1, 81)), 150, 0.002, None, 31, [8, 24] + [8] * 14 + [6], 4.980002137501431),
    ([100.0, 30.0, 10.0] + list(np.linspace(2.0, 0.5, 57)), 2000, 0.002, 4, 21, [4, 12] + [4] * 28 + [1], 211.25),
])
def test_hutchpp_two_stage_plan_is_pinned(values, probes, target, block, seed, calls, estimate):
    """The products of each pass of the two-stage rule (sketch blocks, directions with the first residual probes,
    growth, planned and continued residual probes) on spectra where each branch matters: regression values."""
    a = spectrum(values)
    seen = []
    est = hutchpp_trace(lambda x: seen.append(len(x)) or x @ a, len(values), probes, gen(seed), target_rse=target,
                        block=block, dtype=F64)
    assert seen == calls and est.matvecs == sum(calls)
    assert est.estimate == pytest.approx(estimate, rel=1e-9)
    assert est.relative_stderr <= target or est.matvecs == probes


def test_hutchpp_two_stage_at_the_edges_of_its_budget_and_of_the_dimension():
    """The products the two-stage plan draws where its budget or the dimension ends: a budget that ends exactly
    at a further sketch block still grows the sketch; a sketch that would grow past the dimension does not; a
    growth block that finds no new direction ends the growth and the estimate goes on; one product left after a
    pass that misses the target is still drawn."""

    def calls_of(a, dim, probes, seed, target, block=None):
        calls = []
        est = hutchpp_trace(lambda x: calls.append(len(x)) or x @ a, dim, probes, gen(seed), target_rse=target,
                            block=block, dtype=F64)
        assert est.matvecs == sum(calls)
        return calls, est

    outliers = spectrum([50.0] * 20 + [0.01] * 20)  # sketch 8, directions 8 + 16 probes: 32, then a block of 8
    assert calls_of(outliers, 40, 48, 20, 0.001)[0] == [8, 24, 8, 8]
    flat = calls_of(spectrum([50.0] * 12), 12, 400, 20, 0.001)[0]  # 8 directions + 8 more would pass 12
    assert flat[:2] == [8, 24] and sum(flat) == 400 and 4 not in flat
    calls, est = calls_of(spectrum([50.0] * 8 + [0.0] * 32), 40, 400, 20, 0.001)  # the sketch spans the range
    assert calls[:3] == [8, 24, 8] and est.estimate == pytest.approx(400.0, rel=1e-12)
    a = spectrum([100.0, 30.0, 10.0] + list(np.linspace(2.0, 0.5, 57)))
    assert calls_of(a, 60, 3000, 5, 0.01, block=4)[0] == [4, 12, 13, 29]  # a pass of 13 misses the target
    assert calls_of(a, 60, 30, 5, 0.01, block=4)[0] == [4, 12, 13, 1]
