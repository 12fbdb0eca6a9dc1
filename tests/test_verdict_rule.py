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
    lambda: Claim("greater", True),  # a bool is not an effect size
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


# Exact values and boundaries of the rule (what the verdict tables of docs/reproductions.md and docs/controls.md
# print): the reasons, the TOST p-values, the strictness of every inequality at its edge. A constant difference has a
# zero-width interval at its mean, so it puts an interval limit exactly on the effect size.

def _one(d, direction, effect, **kwargs):
    return paired_verdicts({"c": d}, Claim(direction, effect), **kwargs)[0]


def test_directional_reasons_name_the_direction_and_the_effect():
    assert _one([1.0] * 6, "greater", 0.5).reason == "A > B (Holm p 0)"
    assert _one([-1.0] * 6, "less", 0.5).reason == "A < B (Holm p 0)"
    assert _one([0.25] * 6, "greater", 0.5).reason == "A > B (Holm p 0), smaller than 0.5: interval [0.25, 0.25]"
    assert _one([-0.25] * 6, "less", 0.5).reason == "A < B (Holm p 0), smaller than 0.5: interval [-0.25, -0.25]"
    assert _one([-0.375] * 6, "greater", 0.5).reason == "interval [-0.375, -0.375] excludes +0.5"
    assert _one([0.375] * 6, "less", 0.5).reason == "interval [0.375, 0.375] excludes -0.5"
    noisy = [1.0, -0.4, 0.9, -0.2, 0.6, -0.1]
    v = _one(noisy, "greater", 0.5)
    assert v.outcome == UNRESOLVED
    assert v.reason == f"Holm p {v.p_holm:.2g}; interval [{v.low:.4g}, {v.high:.4g}] includes +0.5"
    w = _one([-x for x in noisy], "less", 0.5)
    assert w.outcome == UNRESOLVED
    assert w.reason == f"Holm p {w.p_holm:.2g}; interval [{w.low:.4g}, {w.high:.4g}] includes -0.5"


def test_an_interval_limit_on_the_effect_does_not_exclude_it():
    # holds exactly at the effect: not "smaller than" it
    assert _one([0.5] * 6, "greater", 0.5).reason == "A > B (Holm p 0)"
    assert _one([-0.5] * 6, "less", 0.5).reason == "A < B (Holm p 0)"
    # not significant, upper (lower) limit exactly +delta (-delta): unresolved, not "does not hold"
    noisy = [0.3, -0.4, 0.5, -0.2, 0.6, -0.3]
    high = _one(noisy, "greater", 1.0).high
    assert _one(noisy, "greater", high).outcome == UNRESOLVED
    assert _one(noisy, "greater", high * 1.001).outcome == DOES_NOT_HOLD
    low = _one(noisy, "less", 1.0).low
    assert _one(noisy, "less", -low).outcome == UNRESOLVED
    assert _one(noisy, "less", -low * 1.001).outcome == DOES_NOT_HOLD


def test_equivalence_at_the_margin_is_unresolved():
    for c in (0.5, -0.5):
        v = _one([c] * 6, "equivalent", 0.5)
        assert (v.outcome, v.reason) == (UNRESOLVED, f"interval [{c:g}, {c:g}] overlaps the margin +-0.5")
    assert _one([0.49] * 6, "equivalent", 0.5).outcome == HOLDS
    assert _one([0.51] * 6, "equivalent", 0.5).reason == "interval [0.51, 0.51] wholly outside +-0.5"
    assert _one([-0.51] * 6, "equivalent", 0.5).outcome == DOES_NOT_HOLD
    assert _one([-0.49] * 6, "equivalent", 0.5).outcome == HOLDS


def test_equivalence_p_is_tost_and_holds_uses_the_1_minus_2alpha_over_m_interval():
    d = np.array([0.12, -0.05, 0.2, 0.01, 0.08, -0.1, 0.15])
    other = [0.3, 0.1, 0.2, 0.25, 0.05, 0.15, 0.2]
    fam = paired_verdicts({"a": d, "b": other}, Claim("equivalent", 0.4))
    above = stats.ttest_1samp(d, -0.4, alternative="greater").pvalue
    below = stats.ttest_1samp(d, 0.4, alternative="less").pvalue
    assert fam[0].p == pytest.approx(max(above, below), rel=1e-9)
    half = stats.t.ppf(1 - 0.05 / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert fam[0].outcome == HOLDS
    assert fam[0].reason == (f"|A - B| < 0.4: interval [{d.mean() - half:.4g}, {d.mean() + half:.4g}] "
                             "inside the margin")
    # TOST's p is the larger one-sided p: the one against +delta near +delta, against -delta near -delta
    for near in (d + 0.3, d - 0.3):
        p = _one(near, "equivalent", 0.4).p
        assert p == pytest.approx(max(stats.ttest_1samp(near, -0.4, alternative="greater").pvalue,
                                      stats.ttest_1samp(near, 0.4, alternative="less").pvalue), rel=1e-9)
    assert _one(d - 0.3, "equivalent", 0.4).p == pytest.approx(
        stats.ttest_1samp(d - 0.3, -0.4, alternative="greater").pvalue, rel=1e-9)
    # constant differences: TOST p is 0 strictly inside the margin, 1 on or outside it
    assert [_one([c] * 6, "equivalent", 0.5).p for c in (0.25, -0.25, 0.5, -0.5, 0.75, -0.75)] == [0, 0, 1, 1, 1, 1]


def test_interval_of_unit_std_is_the_t_interval():
    v = _one([-1.0, 1.0, -1.0, 1.0, 0.0], "greater", 0.5, min_seeds=5)
    assert v.std == 1.0
    half = stats.t.ppf(1 - 0.05 / 2, 4) / np.sqrt(5)
    assert (v.low, v.high) == pytest.approx((-half, half), rel=1e-12)


def test_holm_caps_at_one():
    assert holm([0.6, 0.7]).tolist() == [1.0, 1.0]
    assert holm([1, 0]).tolist() == [1.0, 0.0]


def test_every_field_of_a_comparison():
    d = [0.5, 0.7, 0.6, 0.9, 0.4, 0.8]
    v = _one(d, "greater", 0.5)
    assert (v.label, v.n, v.level) == ("c", 6, 0.95)
    assert v.mean == pytest.approx(np.mean(d)) and v.std == pytest.approx(np.std(d, ddof=1))
    assert v.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-9) and v.p_holm == v.p
    few = paired_verdicts({"two": [1.0, 2.0], "six": d}, Claim("greater", 0.5))
    assert [f.label for f in few] == ["two", "six"]
    t = few[0]
    assert (t.label, t.n, t.mean, t.std, t.outcome, t.reason) == ("two", 2, 1.5, np.std([1, 2], ddof=1), TOO_FEW,
                                                                  "2 seeds, fewer than 6")
    assert all(np.isnan(x) for x in (t.low, t.high, t.level, t.p, t.p_holm))
    assert few[1].p_holm == few[1].p  # the too-few comparison leaves the family: m = 1


def test_ties_are_within_the_tie_tolerance_inclusive():
    v = _one([0.1, -0.1, 0.2, -0.2, 0.0, 0.05], "greater", 0.5, tie=0.1)
    assert v.record() == "1/4/1"


def test_bad_arguments_are_named():
    with pytest.raises(LibraryArgumentError, match="alpha must be a float in"):
        paired_verdicts({"a": [1.0] * 6}, Claim("greater", 1.0), alpha=0.0)
    with pytest.raises(LibraryArgumentError, match="alpha"):
        paired_verdicts({"a": [1.0] * 6}, Claim("greater", 1.0), alpha=1.0)
    for bad in (1, 6.0, True):
        with pytest.raises(LibraryArgumentError, match="min_seeds must be an integer >= 2"):
            paired_verdicts({"a": [1.0] * 6}, Claim("greater", 1.0), min_seeds=bad)
    assert _one([1.0, 1.0], "greater", 0.5, min_seeds=2).outcome == HOLDS
    with pytest.raises(LibraryArgumentError, match="^a family needs at least one comparison$"):
        paired_verdicts({}, Claim("greater", 1.0))
    with pytest.raises(LibraryArgumentError, match="comparison 'k' needs a flat sequence"):
        paired_verdicts({"k": []}, Claim("greater", 1.0))
    with pytest.raises(LibraryArgumentError, match="comparison '7' has a non-finite difference"):
        paired_verdicts({7: [1.0, float("nan")]}, Claim("greater", 1.0))
    with pytest.raises(LibraryArgumentError, match=r"p-values must be numbers in \[0, 1\], got .*1\.5"):
        holm([0.5, 1.5])
    with pytest.raises(LibraryArgumentError, match=r"^paths must be a \(paths, seeds\) table of differences$"):
        seed_means([1.0, 2.0])
    with pytest.raises(LibraryArgumentError, match="direction must be one of greater, less, equivalent, not 'more'"):
        Claim("more", 1.0)
    with pytest.raises(LibraryArgumentError, match="effect must be a finite number > 0"):
        Claim("greater", 0.0)
