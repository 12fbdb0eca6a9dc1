"""Paired evidence for SWAMP's claims: differences between methods on the same seed, per cycle.

Sub-runs of one seed share the dense ticket and the data order of their first particle, so method A
and method B are compared *paired*: for every cycle k and seed s, d_{k,s} = A_{k,s} - B_{k,s}. A
:class:`Paired` row gives the mean and sample standard deviation of d over seeds, how many seeds
have d > 0 (wins), d = 0 (ties) and d < 0 (losses), and the two-sided paired t-test p-value (Student
1908; ``scipy.stats.ttest_rel``) and the per-seed differences themselves. Verdicts are not made from the
uncorrected p: :func:`paired_table` with a :class:`studies.verdict.Claim` judges the cycles of one table by the
project's one rule (:func:`studies.verdict.paired_verdicts`: Holm over the table's cycles, simultaneous intervals,
"does not hold" only where the interval excludes the claimed effect). Where every seed gives the same difference
the t statistic is infinite (p = 0) for a non-zero difference and undefined for zero (p = 1: no evidence of any
difference). :class:`Extremes` gives the largest value of a quantity over every cycle and seed (e.g. the worst
barrier), which is what a claim such as "no barrier" must be checked against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from studies import tables as st
from studies.verdict import ACCURACY_EFFECT, TRACE_EFFECT, Claim, PairedVerdict, paired_verdicts


@dataclass(frozen=True)
class Paired:
    """Differences A - B over seeds at one cycle."""

    cycle: int
    sparsity: float
    mean: float
    std: float
    seeds: int
    positive: int  # seeds with A > B (wins)
    p_value: float
    ties: int = 0  # seeds with A = B
    negative: int = 0  # seeds with A < B (losses)
    differences: tuple[float, ...] = ()  # d_s per seed, in increasing seed order

    def record(self) -> str:
        """``wins/ties/losses`` of A against B over the seeds."""
        return f"{self.positive}/{self.ties}/{self.negative}"


def paired_p_value(d: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test p-value of differences ``d = a - b``; NaN for one seed. A constant ``d`` has
    no spread: p = 0 when it is non-zero (the same gain on every seed), 1 when it is zero."""
    if len(d) < 2:
        return math.nan
    if d.std() == 0:
        return 0.0 if d[0] != 0 else 1.0
    return float(stats.ttest_rel(a, b).pvalue)


@dataclass(frozen=True)
class Extremes:
    """A quantity over every (cycle, seed[, pair or sample]) of a method."""

    method: str
    count: int
    maximum: float
    mean: float


def paired(frame: pd.DataFrame, value: str, a: str, b: str, column: str = "method") -> list[Paired]:
    """Per cycle, ``value`` of rows ``column == a`` minus rows ``column == b`` on the same seed.

    ``frame`` needs ``cycle``, ``seed``, ``sparsity``, ``column`` and ``value``; several rows of one
    (cycle, seed, a or b) are averaged first. Cycles or seeds missing on either side are left out.
    """
    per = frame[frame[column].isin([a, b])].groupby(["cycle", "seed", column])[[value, "sparsity"]].mean()
    wide = per[value].unstack(column)
    if a not in wide or b not in wide:
        return []
    wide = wide.dropna(subset=[a, b])
    sparsity = per["sparsity"].groupby(level="cycle").mean()
    rows = []
    for cycle, group in wide.groupby(level="cycle"):
        d = (group[a] - group[b]).to_numpy()
        p = paired_p_value(d, group[a].to_numpy(), group[b].to_numpy())
        rows.append(Paired(int(cycle), float(sparsity[cycle]), float(d.mean()),
                           float(d.std(ddof=1)) if len(d) > 1 else math.nan, len(d), int((d > 0).sum()), p,
                           int((d == 0).sum()), int((d < 0).sum()), tuple(float(x) for x in d)))
    return rows


def count_below(frame: pd.DataFrame, value: str, a: str, b: str) -> tuple[int, int]:
    """Over every (cycle, seed) measured for both: how many have ``value`` of ``a`` below ``b``'s."""
    wide = frame[frame["method"].isin([a, b])].groupby(["cycle", "seed", "method"])[value].mean().unstack("method")
    if a not in wide or b not in wide:
        return 0, 0
    wide = wide.dropna(subset=[a, b])
    return int((wide[a] < wide[b]).sum()), len(wide)


def extremes(frame: pd.DataFrame, value: str) -> list[Extremes]:
    """Largest and mean ``value`` per method over all of its rows."""
    return [Extremes(str(m), len(g), float(g[value].max()), float(g[value].mean()))
            for m, g in frame.groupby("method", sort=False)]


def ensemble_frame(root: str | Path) -> pd.DataFrame:
    """The SWAMP method's rows twice, ``kind`` = average or ensemble, with ``acc`` = their test accuracy,
    so :func:`paired` can compare the ensemble of particles with their weight average."""
    acc = st.accuracy_frame(root)
    swamp = acc[acc["method"] == st.roles(root)["swamp"]]
    keep = ["cycle", "seed", "sparsity"]
    return pd.concat([swamp[keep].assign(kind="ensemble", acc=swamp["ensemble_test_acc"]),
                      swamp[keep].assign(kind="average", acc=swamp["average_test_acc"])], ignore_index=True)


def _fmt(x: float, scale: float, digits: int, sign: bool = True) -> str:
    return "–" if math.isnan(x) else f"{scale * x:{'+' if sign else ''}.{digits}f}"


def relative_frame(frame: pd.DataFrame, value: str, b: str, column: str = "method") -> pd.DataFrame:
    """``frame`` with ``value`` replaced by 100 x ``value`` / (``b``'s ``value`` on the same cycle and seed) - 100,
    so that :func:`paired` of it gives A - B in percent of B (rows without a ``b`` row on their cycle and seed are
    dropped).

    Example:
        >>> f = pd.DataFrame({"cycle": [0, 0], "seed": [0, 0], "sparsity": [0.0, 0.0], "method": ["a", "b"],
        ...                   "trace": [90.0, 100.0]})
        >>> paired(relative_frame(f, "trace", "b"), "trace", "a", "b")[0].mean
        -10.0
    """
    base = frame[frame[column] == b].groupby(["cycle", "seed"])[value].mean().rename("_base")
    out = frame.join(base, on=["cycle", "seed"]).dropna(subset=["_base"])
    return out.assign(**{value: 100.0 * out[value] / out["_base"] - 100.0}).drop(columns="_base")


def paired_table(rows: list[Paired], title: str, scale: float = 100.0, digits: int = 2,
                 cycles: list[int] | None = None, claim: Claim | None = None) -> str:
    """A Markdown table of :func:`paired` rows; with ``claim`` (its effect in the table's unit, i.e. after
    ``scale``), the one rule's verdict per cycle (:func:`studies.verdict.paired_verdicts`, Holm over the cycles
    shown) in place of the uncorrected t-test.

    Example:
        >>> row = Paired(0, 0.5, 0.01, 0.0014, 6, 6, 1e-5, differences=(0.009, 0.011, 0.01, 0.01, 0.012, 0.008))
        >>> paired_table([row], "t", claim=Claim("greater", 0.5)).splitlines()[-1]
        '| 50.0% | +1.00 ± 0.14 | 6/0/0 | [+0.85, +1.15] (95.0%) | 1.2e-05 | **holds** |'
    """
    shown = [r for r in rows if cycles is None or r.cycle in cycles]
    if claim is None:
        lines = [f"#### {title}", "", "| pruned | A − B (mean ± std) | seeds A > B / = / < | paired t-test p |",
                 "|---|---|---|---|"]
        verdicts: list[PairedVerdict | None] = [None] * len(shown)
    else:
        lines = [f"#### {title}", "", f"Claim: {claim.direction}, δ = {claim.effect:g}; Holm over the cycles shown.",
                 "", "| pruned | A − B (mean ± std) | seeds A > B / = / < | simultaneous interval | Holm p | verdict |",
                 "|---|---|---|---|---|---|"]
        verdicts = list(paired_verdicts({str(r.cycle): [scale * d for d in r.differences] for r in shown}, claim))
    for r, v in zip(shown, verdicts, strict=True):
        spread = f"{_fmt(r.mean, scale, digits)} ± {_fmt(r.std, scale, digits, sign=False)}"
        cells = [f"{100 * r.sparsity:.1f}%", spread, r.record()]
        cells += ["–" if math.isnan(r.p_value) else f"{r.p_value:.3f}"] if v is None else v.cells(digits)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _particles_claim(root: str | Path, method: str, swamp: str) -> Claim:
    """The claim of ``method`` (an N-ablation or SWAMP+ arm) against SWAMP: more particles are more accurate
    (``greater``), fewer less (``less``); SWAMP+ is as accurate (``equivalent``); δ = 0.5 points."""
    methods = st.methods_frame(root).set_index("method")
    if st.roles(root).of[method] == "swamp-plus" or "particles" not in methods:
        return Claim("equivalent", ACCURACY_EFFECT)
    more = int(methods.at[method, "particles"]) > int(methods.at[swamp, "particles"])
    return Claim("greater" if more else "less", ACCURACY_EFFECT)


def claims_report(root: str | Path, cycles: list[int] | None = None) -> str:
    """Markdown: the paired comparisons behind the study's claims, each judged by the one rule
    (:func:`paired_table` with a claim: δ = 0.5 points of accuracy, 10% of the Hessian trace), and the extremes of
    the barriers and hulls."""
    roles, labels = st.roles(root), st.method_labels(root)
    acc = st.accuracy_frame(root)
    swamp, imp, swa, particles = roles["swamp"], roles["imp"], roles["swa"], roles["particles"]
    parts = ["### Paired differences between methods (same seed), for the verdicts",
             "A − B per cycle over seeds; accuracies in points of test accuracy; each table judged by the one rule "
             "(studies.verdict.paired_verdicts: Holm over the cycles shown, at least 6 seeds)."]
    if swamp is None:
        parts.append("No method of this study plays SWAMP (role `swamp` in study.json), so the comparisons with "
                     "SWAMP are left out.")
    gain = Claim("greater", ACCURACY_EFFECT)
    comparisons = [(swamp, imp, gain), (swamp, swa, gain), (swamp, particles, gain), (swa, imp, gain),
                   (particles, imp, gain)]
    comparisons += [(n, swamp, _particles_claim(root, n, swamp)) for n in roles.methods("swamp-n", "swamp-plus")]
    for a, b, claim in comparisons:
        if a and b:
            parts.append(paired_table(paired(acc, "average_test_acc", a, b),
                                      f"Test accuracy: A = {labels[a]}, B = {labels[b]}", cycles=cycles, claim=claim))
    if swamp:
        parts.append(paired_table(paired(ensemble_frame(root), "acc", "ensemble", "average", column="kind"),
                                  f"Test accuracy: A = ensemble of {labels[swamp]}'s particles, B = their "
                                  "weight average", cycles=cycles, claim=Claim("equivalent", ACCURACY_EFFECT)))
    hessian = st.hessian_frame(root)
    if not hessian.empty and swamp:
        lines = ["#### Hessian trace: solutions with the smaller trace", "", "| A | B | (cycle, seed) with A < B |",
                 "|---|---|---|"]
        for a, b in ((swamp, imp), (swamp, swa), (swa, imp)):
            if a and b:
                below, total = count_below(hessian, "trace", a, b)
                lines.append(f"| {labels[a]} | {labels[b]} | {below} of {total} |")
        parts.append("\n".join(lines))
        for a, b in ((swamp, imp), (swamp, swa)):
            if a and b:
                parts.append(paired_table(paired(relative_frame(hessian, "trace", b), "trace", a, b),
                                          f"Hessian trace: A = {labels[a]}, B = {labels[b]}, A − B in % of B", 1.0,
                                          1, cycles, Claim("less", TRACE_EFFECT)))
    lines = ["#### Largest barriers and hull losses over every cycle and seed", "",
             "| measurement | method | rows | max | mean |", "|---|---|---|---|---|"]
    for kind, what in (("pairs", "particle pairs"), ("consecutive", "consecutive solutions")):
        frame = st.barrier_frame(root, kind)
        if frame.empty:
            continue
        frame = frame[frame["split"] == "test"]
        for col, name, scale in (("loss_barrier", "test loss barrier", 1.0), ("error_barrier", "test error barrier (%)",
                                                                              100.0)):
            for e in extremes(frame, col):
                lines.append(f"| {name}, {what} | {labels[e.method]} | {e.count} | {scale * e.maximum:.3f} | "
                             f"{scale * e.mean:.3f} |")
    hull = st.hull_frame(root)
    if not hull.empty:
        excess = hull.assign(excess=hull["loss"] - hull["vertex_loss_max"])
        for e in extremes(excess, "excess"):
            lines.append(f"| hull sample loss − worst particle's loss | {labels[e.method]} | {e.count} | "
                         f"{e.maximum:.4f} | {e.mean:.4f} |")
    parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
