"""The verdict rule: one paired test per comparison, Holm over the family a sentence summarises, three outcomes.

Every verdict of the studies (single path, across floating-point paths, controls, budget, baselines) is a
*comparison* of a treatment A with its control B on the same seeds: the paired differences d_s = A_s - B_s over
n seeds (same seed: same dense ticket and data order; where a study was realised on several floating-point
paths, d_s is first averaged over the paths, which share seeds, initialisation and data order and so are not
independent replicates). A comparison has a *claim*, the paper's direction and effect size delta > 0 in the
measure's unit:

* ``greater`` (A > B; e.g. SWAMP more accurate than IMP, delta = 0.5 points) or ``less`` (A < B; e.g. SWAMP's
  Hessian trace smaller) : the direction, and delta the smallest effect the paper's sentence means;
* ``equivalent`` (|A - B| < delta; e.g. "SWAMP is comparable to an ensemble of two IMP solutions").

Statistics per comparison (Student 1908): the mean dbar, sample standard deviation s, t = dbar / (s / sqrt n)
with n - 1 degrees of freedom, the two-sided p-value against 0, wins/ties/losses (d > 0, d = 0, d < 0).

Family. The m comparisons that one sentence of the docs summarises (e.g. "SWAMP is more accurate than IMP at
every sparsity", one per sparsity) form a family. Holm (1979) step-down: sort the p-values p_(1) <= ... <= p_(m);
p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)); the family-wise error rate of the "holds" verdicts is at most
alpha. Intervals are Bonferroni-simultaneous: dbar +- t_{1 - alpha/(2m), n-1} s / sqrt n (coverage >= 1 - alpha for
all m at once), so a "does not hold" is protected as well as a "holds".

Outcomes (alpha = 0.05 unless stated):

* **too few seeds**: n < ``min_seeds`` (6): nothing is decided; the comparison leaves the family (m counts the
  tested comparisons only);
* directional claims: **holds** when p~ < alpha and dbar has the claimed sign; **does not hold** when it does not
  hold and the interval excludes the paper's effect (upper limit < delta for ``greater``, lower limit > -delta
  for ``less``): an effect of the claimed size is ruled out; **unresolved** otherwise. A gain that holds but is
  smaller than delta says so in its reason;
* ``equivalent``: **holds** when the simultaneous interval at level 1 - 2 alpha / m (two one-sided tests,
  Schuirmann 1987) lies inside (-delta, delta); **does not hold** when the level 1 - alpha / m interval lies
  wholly outside [-delta, delta]; **unresolved** otherwise. Its p-value is TOST's max of the two one-sided
  p-values (reported; the intervals decide).

A constant d (s = 0) gives t = +-inf (p = 0, a zero-width interval) for a non-zero dbar and p = 1 for zero. The
rule is invariant under changing units (with delta in the same unit) and, with ``greater`` <-> ``less``, under
swapping A and B.

Example (SWAMP - IMP accuracy in points at two sparsities, 6 seeds, the paper's gain of half a point):

>>> fam = paired_verdicts({"50%": [0.6, 0.9, 0.4, 0.8, 0.7, 0.5], "90%": [0.3, -0.4, 0.1, 0.0, -0.2, 0.2]},
...                       Claim("greater", 0.5))
>>> [(v.label, v.outcome, v.record()) for v in fam]
[('50%', 'holds', '6/0/0'), ('90%', 'does not hold', '3/1/2')]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from core.errors import LibraryArgumentError

HOLDS, DOES_NOT_HOLD, UNRESOLVED, TOO_FEW = "holds", "does not hold", "unresolved", "too few seeds"
DIRECTIONS = ("greater", "less", "equivalent")
ALPHA = 0.05
MIN_SEEDS = 6
# The paper's effect sizes delta, fixed before the runs (one source for every study):
ACCURACY_EFFECT = 0.5  # points of test accuracy: the smallest gain the paper's sentences are taken to mean
TRACE_EFFECT = 10.0  # percent of the control's Hessian trace
BARRIER_EFFECT = 1.0  # points of test error between two solutions


@dataclass(frozen=True)
class Claim:
    """What a sentence claims of A - B: ``direction`` (``greater``, ``less`` or ``equivalent``) and ``effect``,
    the paper's effect size delta > 0 in the measure's unit (for ``equivalent``: the margin)."""

    direction: str
    effect: float

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise LibraryArgumentError(f"direction must be one of {', '.join(DIRECTIONS)}, not {self.direction!r}")
        number = isinstance(self.effect, int | float) and not isinstance(self.effect, bool)
        if not (number and math.isfinite(self.effect) and self.effect > 0):
            raise LibraryArgumentError(f"effect must be a finite number > 0, not {self.effect!r}")


@dataclass(frozen=True)
class PairedVerdict:
    """One comparison of a family under the rule of :mod:`studies.verdict`."""

    label: str
    n: int
    mean: float
    std: float
    low: float  # the simultaneous interval (level in ``level``) of the mean difference
    high: float
    level: float
    p: float  # two-sided paired t-test against 0 (equivalent: TOST's p)
    p_holm: float  # Holm-adjusted over the tested comparisons of the family (NaN when not tested)
    wins: int
    ties: int
    losses: int
    outcome: str
    reason: str

    def record(self) -> str:
        """``wins/ties/losses`` of A against B over the seeds."""
        return f"{self.wins}/{self.ties}/{self.losses}"

    def cells(self, digits: int = 2, missing: str = "–") -> list[str]:
        """The Markdown cells simultaneous interval, Holm's p and the outcome in bold (``missing`` for the first two
        when there are too few seeds).

        Example:
            >>> paired_verdicts({"x": [1.0, 1.2, 0.9, 1.1, 1.0, 1.3]}, Claim("greater", 0.5))[0].cells()
            ['[+0.93, +1.24] (95.0%)', '9.6e-06', '**holds**']
        """
        if self.outcome == TOO_FEW:
            return [missing, missing, f"**{self.outcome}**"]
        return [f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}] ({100 * self.level:.1f}%)", f"{self.p_holm:.2g}",
                f"**{self.outcome}**"]

    def summary(self, digits: int = 2) -> str:
        """One Markdown cell: the outcome in bold, then the mean, its simultaneous interval, Holm's p and
        wins/ties/losses (the reason alone when there are too few seeds).

        Example:
            >>> paired_verdicts({"x": [1.0, 1.2, 0.9, 1.1, 1.0, 1.3]}, Claim("greater", 0.5))[0].summary()
            '**holds** (+1.08 [+0.93, +1.24] at 95.0%, Holm p 9.6e-06, 6/0/0)'
        """
        if self.outcome == TOO_FEW:
            return f"**{self.outcome}** ({self.reason})"
        return (f"**{self.outcome}** ({self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] at "
                f"{100 * self.level:.1f}%, Holm p {self.p_holm:.2g}, {self.record()})")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the input order.

    Args:
        p_values: the family's p-values, each in [0, 1].

    Returns:
        array of p~_i = max over the first i sorted of min(1, (m - j + 1) p_(j)).

    Example:
        >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or ((p < 0) | (p > 1) | np.isnan(p)).any():
        raise LibraryArgumentError(f"p-values must be numbers in [0, 1], got {np.atleast_1d(p).tolist()}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted


def _differences(label: str, values: Sequence[float]) -> np.ndarray:
    d = np.asarray(values, dtype=float)
    if d.ndim != 1 or not len(d):
        raise LibraryArgumentError(f"comparison {label!r} needs a flat sequence of per-seed differences")
    if not np.isfinite(d).all():
        raise LibraryArgumentError(f"comparison {label!r} has a non-finite difference: {d.tolist()}")
    return d


def _interval(mean: float, std: float, n: int, level: float) -> tuple[float, float]:
    if std == 0:
        return mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def _t_p(mean: float, std: float, n: int, shift: float = 0.0, side: str = "two") -> float:
    """p-value of the paired t statistic of mean - shift (``two``-sided, or one-sided ``above``/``below``)."""
    gap = mean - shift
    if std == 0:
        if side == "two":
            return 1.0 if gap == 0 else 0.0
        return 0.0 if (gap > 0 if side == "above" else gap < 0) else 1.0
    t = gap / (std / math.sqrt(n))
    if side == "two":
        return float(2 * stats.t.sf(abs(t), n - 1))
    return float(stats.t.sf(t, n - 1) if side == "above" else stats.t.cdf(t, n - 1))


def paired_verdicts(family: Mapping[str, Sequence[float]], claim: Claim, *, alpha: float = ALPHA,
                    min_seeds: int = MIN_SEEDS, tie: float = 1e-12) -> tuple[PairedVerdict, ...]:
    """The rule of the module docstring on one family of comparisons.

    Args:
        family: label -> the per-seed paired differences A - B of that comparison (already averaged over
            floating-point paths where there are several), in the unit of ``claim.effect``.
        claim: the direction and effect size the family's sentence claims.
        alpha: family-wise error rate, in (0, 1).
        min_seeds: fewest seeds a comparison needs to be tested (>= 2).
        tie: |d| <= tie counts as a tie in wins/ties/losses.

    Returns:
        one :class:`PairedVerdict` per comparison, in the order of ``family``.

    Example:
        >>> v = paired_verdicts({"k=3": [1.0, 1.2, 0.8]}, Claim("greater", 0.5))[0]
        >>> v.outcome, v.n
        ('too few seeds', 3)
    """
    if not (isinstance(alpha, float) and 0 < alpha < 1):
        raise LibraryArgumentError(f"alpha must be a float in (0, 1), not {alpha!r}")
    if isinstance(min_seeds, bool) or not isinstance(min_seeds, int) or min_seeds < 2:
        raise LibraryArgumentError(f"min_seeds must be an integer >= 2, not {min_seeds!r}")
    if not family:
        raise LibraryArgumentError("a family needs at least one comparison")
    diffs = {str(label): _differences(str(label), values) for label, values in family.items()}
    tested = [label for label, d in diffs.items() if len(d) >= min_seeds]
    m = max(1, len(tested))
    delta = float(claim.effect)
    raw: dict[str, float] = {}
    for label in tested:
        d = diffs[label]
        mean, std = float(d.mean()), float(d.std(ddof=1))
        if claim.direction == "equivalent":
            raw[label] = max(_t_p(mean, std, len(d), -delta, "above"), _t_p(mean, std, len(d), delta, "below"))
        else:
            raw[label] = _t_p(mean, std, len(d))
    adjusted = dict(zip(tested, holm([raw[label] for label in tested]).tolist(), strict=True)) if tested else {}
    out = []
    for label, d in diffs.items():
        n = len(d)
        mean, std = float(d.mean()), float(d.std(ddof=1)) if n > 1 else math.nan
        counts = (int((d > tie).sum()), int((np.abs(d) <= tie).sum()), int((d < -tie).sum()))
        if label not in adjusted:
            out.append(PairedVerdict(label, n, mean, std, math.nan, math.nan, math.nan, math.nan, math.nan, *counts,
                                     TOO_FEW, f"{n} seeds, fewer than {min_seeds}"))
            continue
        level = 1 - alpha / m
        low, high = _interval(mean, std, n, level)
        outcome, reason = _decide(claim, mean, std, n, low, high, adjusted[label], alpha, m)
        out.append(PairedVerdict(label, n, mean, std, low, high, level, raw[label], adjusted[label], *counts,
                                 outcome, reason))
    return tuple(out)


def _decide(claim: Claim, mean: float, std: float, n: int, low: float, high: float, p_holm: float, alpha: float,
            m: int) -> tuple[str, str]:
    delta, where = claim.effect, f"interval [{low:.4g}, {high:.4g}]"
    if claim.direction == "equivalent":
        tight_low, tight_high = _interval(mean, std, n, 1 - 2 * alpha / m)
        if -delta < tight_low and tight_high < delta:
            return HOLDS, f"|A - B| < {delta:g}: interval [{tight_low:.4g}, {tight_high:.4g}] inside the margin"
        if low > delta or high < -delta:
            return DOES_NOT_HOLD, f"{where} wholly outside +-{delta:g}"
        return UNRESOLVED, f"{where} overlaps the margin +-{delta:g}"
    sign = 1 if claim.direction == "greater" else -1
    word = ">" if sign > 0 else "<"
    if p_holm < alpha and sign * mean > 0:
        small = (high < delta) if sign > 0 else (low > -delta)
        return HOLDS, f"A {word} B (Holm p {p_holm:.2g})" + (f", smaller than {delta:g}: {where}" if small else "")
    if (high < delta) if sign > 0 else (low > -delta):
        return DOES_NOT_HOLD, f"{where} excludes {'+' if sign > 0 else '-'}{delta:g}"
    return UNRESOLVED, f"Holm p {p_holm:.2g}; {where} includes {'+' if sign > 0 else '-'}{delta:g}"


def seed_means(paths: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-seed differences averaged over floating-point paths (rows: paths, columns: the same seeds).

    Example:
        >>> seed_means([[1.0, 2.0], [3.0, 2.0]]).tolist()
        [2.0, 2.0]
    """
    d = np.asarray(paths, dtype=float)
    if d.ndim != 2 or not d.size:
        raise LibraryArgumentError("paths must be a (paths, seeds) table of differences")
    return d.mean(0)
