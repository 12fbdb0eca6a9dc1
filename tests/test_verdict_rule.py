"""The one verdict rule (studies.verdict.paired_verdicts): Holm, intervals, outcomes, invariances, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from core.errors import LibraryArgumentError
from studies.verdict import (
    DOES_NOT_HOLD,
    HOLDS,
    TOO_FEW,
    UNRESOLVED,
    Claim,
    holm,
    paired_verdicts,
    seed_means,
)


def test_holm_matches_its_definition():
    p = np.array([0.04, 0.001, 0.03, 0.2, 0.01])
    order = np.argsort(p)
    expected = np.empty(5)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (5 - rank) * p[i]))
        expected[i] = running
    assert holm(p).tolist() == pytest.approx(expected.tolist())
    assert holm([0.5]).tolist() == [0.5]


def test_p_value_and_interval_are_the_paired_t_tests():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 8), rng.normal(0.5, 1, 8)
    (v,) = paired_verdicts({"x": a - b}, Claim("greater", 1.0))
    assert v.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert v.p_holm == pytest.approx(v.p)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (v.low, v.high) == pytest.approx((ci.low, ci.high))


def test_interval_is_bonferroni_simultaneous_over_the_tested_family():
    d = [0.2, 0.4, 0.1, 0.3, 0.5, 0.2]
    fam = paired_verdicts({"a": d, "b": d, "c": d, "short": d[:3]}, Claim("greater", 1.0))
    assert [v.level for v in fam[:3]] == pytest.approx([1 - 0.05 / 3] * 3)
    assert fam[3].outcome == TOO_FEW and np.isnan(fam[3].p_holm)
    single = paired_verdicts({"a": d}, Claim("greater", 1.0))[0]
    assert fam[0].high - fam[0].low > single.high - single.low


def test_outcomes():
    claim = Claim("greater", 0.5)
    clear_gain = [0.6, 0.9, 0.4, 0.8, 0.7, 0.5]
    no_gain = [0.3, -0.4, 0.1, 0.0, -0.2, 0.2]
    noisy = [2.0, -1.5, 1.8, -0.9, 1.1, 0.3]
    small_gain = [0.11, 0.1, 0.12, 0.09, 0.1, 0.11]
    v = {x.label: x for x in paired_verdicts({"clear": clear_gain, "none": no_gain, "noisy": noisy,
                                              "small": small_gain}, claim)}
    assert v["clear"].outcome == HOLDS and v["clear"].record() == "6/0/0"
    assert v["none"].outcome == DOES_NOT_HOLD and v["none"].record() == "3/1/2"
    assert v["noisy"].outcome == UNRESOLVED
    assert v["small"].outcome == HOLDS and "smaller than 0.5" in v["small"].reason
    # a significant effect against the claim rules the claimed effect out
    (against,) = paired_verdicts({"x": [-x for x in clear_gain]}, claim)
    assert against.outcome == DOES_NOT_HOLD


def test_invariant_under_units_and_swapping_a_and_b():
    rng = np.random.default_rng(1)
    fam = {f"k{k}": rng.normal(0.3 * k, 0.5, 7) for k in range(4)}
    base = paired_verdicts(fam, Claim("greater", 0.4))
    scaled = paired_verdicts({k: 100 * v for k, v in fam.items()}, Claim("greater", 40.0))
    swapped = paired_verdicts({k: -v for k, v in fam.items()}, Claim("less", 0.4))
    assert [v.outcome for v in base] == [v.outcome for v in scaled] == [v.outcome for v in swapped]
    assert [v.p_holm for v in base] == pytest.approx([v.p_holm for v in swapped])


def test_equivalence():
    margin = Claim("equivalent", 0.5)
    v = {x.label: x for x in paired_verdicts({"same": [0.1, -0.1, 0.05, 0.0, 0.02, -0.03],
                                              "worse": [-1.0, -1.2, -0.9, -1.1, -1.3, -0.8],
                                              "unclear": [0.6, -0.2, 0.9, 0.1, 0.7, -0.3]}, margin)}
    assert v["same"].outcome == HOLDS
    assert v["worse"].outcome == DOES_NOT_HOLD
    assert v["unclear"].outcome == UNRESOLVED


def test_family_wise_error_under_the_null():
    """No true effect anywhere: a family of 5 comparisons says 'holds' at most about alpha of the time."""
    rng = np.random.default_rng(2)
    wrong = 0
    for _ in range(400):
        fam = {str(k): rng.normal(0, 1, 8) for k in range(5)}
        wrong += any(v.outcome == HOLDS for v in paired_verdicts(fam, Claim("greater", 1.0)))
    assert wrong / 400 <= 0.05 + 3 * (0.05 * 0.95 / 400) ** 0.5


def test_constant_differences():
    (gain,) = paired_verdicts({"x": [0.25] * 6}, Claim("greater", 0.1))
    assert gain.outcome == HOLDS and gain.p == 0 and gain.low == gain.high == 0.25
    (zero,) = paired_verdicts({"x": [0.0] * 6}, Claim("greater", 0.1))
    assert zero.outcome == DOES_NOT_HOLD and zero.p == 1 and zero.record() == "0/6/0"


def test_seed_means_average_paths_per_seed():
    assert seed_means([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]).tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("call", [
    lambda: Claim("bigger", 0.5),
    lambda: Claim("greater", 0),
    lambda: Claim("greater", float("nan")),
    lambda: paired_verdicts({}, Claim("greater", 1.0)),
    lambda: paired_verdicts({"x": [1.0, float("nan")] * 3}, Claim("greater", 1.0)),
    lambda: paired_verdicts({"x": [[1.0, 2.0]]}, Claim("greater", 1.0)),
    lambda: paired_verdicts({"x": [1.0] * 6}, Claim("greater", 1.0), alpha=1.5),
    lambda: paired_verdicts({"x": [1.0] * 6}, Claim("greater", 1.0), min_seeds=1),
    lambda: holm([0.5, 1.2]),
    lambda: seed_means([1.0, 2.0]),
])
def test_bad_input_is_a_library_error(call):
    with pytest.raises(LibraryArgumentError):
        call()
