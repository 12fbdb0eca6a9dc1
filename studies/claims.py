"""Paired evidence for SWAMP's claims: differences between methods on the same seed, per cycle.

Sub-runs of one seed share the dense ticket and the data order of their first particle, so method A
and method B are compared *paired*: for every cycle k and seed s, d_{k,s} = A_{k,s} - B_{k,s}. A
:class:`Paired` row gives the mean and sample standard deviation of d over seeds, how many seeds
have d > 0 (wins), d = 0 (ties) and d < 0 (losses), and the two-sided paired t-test p-value (Student
1908; ``scipy.stats.ttest_rel``), which with three seeds is a weak test: it is reported, not used to
hide anything. Where every seed gives the same difference the t statistic is infinite (p = 0) for a
non-zero difference and undefined for zero (p = 1: no evidence of any difference). :class:`Extremes` gives
the largest value of a quantity over every cycle and seed (e.g. the worst barrier), which is what a
claim such as "no barrier" must be checked against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from studies import tables as st


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
                           int((d == 0).sum()), int((d < 0).sum())))
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


def paired_table(rows: list[Paired], title: str, scale: float = 100.0, digits: int = 2,
                 cycles: list[int] | None = None) -> str:
    """A Markdown table of :func:`paired` rows."""
    lines = [f"#### {title}", "", "| pruned | A − B (mean ± std) | seeds A > B / = / < | paired t-test p |",
             "|---|---|---|---|"]
    for r in rows:
        if cycles is not None and r.cycle not in cycles:
            continue
        lines.append(f"| {100 * r.sparsity:.1f}% | {_fmt(r.mean, scale, digits)} ± "
                     f"{_fmt(r.std, scale, digits, sign=False)} | {r.record()} | "
                     f"{'–' if math.isnan(r.p_value) else f'{r.p_value:.3f}'} |")
    return "\n".join(lines)


def claims_report(root: str | Path, cycles: list[int] | None = None) -> str:
    """Markdown: the paired comparisons and extremes behind each verdict of docs/earlier-results.md."""
    roles, labels = st.roles(root), st.method_labels(root)
    acc = st.accuracy_frame(root)
    swamp, imp, swa, particles = roles["swamp"], roles["imp"], roles["swa"], roles["particles"]
    parts = ["### Paired differences between methods (same seed), for the verdicts",
             "A − B per cycle over seeds; accuracies in points of test accuracy."]
    if swamp is None:
        parts.append("No method of this study plays SWAMP (role `swamp` in study.json), so the comparisons with "
                     "SWAMP are left out.")
    comparisons = [(swamp, imp), (swamp, swa), (swamp, particles), (swa, imp), (particles, imp)]
    comparisons += [(n, swamp) for n in roles.methods("swamp-n", "swamp-plus")]
    for a, b in comparisons:
        if a and b:
            parts.append(paired_table(paired(acc, "average_test_acc", a, b),
                                      f"Test accuracy: A = {labels[a]}, B = {labels[b]}", cycles=cycles))
    if swamp:
        parts.append(paired_table(paired(ensemble_frame(root), "acc", "ensemble", "average", column="kind"),
                                  f"Test accuracy: A = ensemble of {labels[swamp]}'s particles, B = their "
                                  "weight average", cycles=cycles))
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
                parts.append(paired_table(paired(hessian, "trace", a, b),
                                          f"Hessian trace: A = {labels[a]}, B = {labels[b]}", 1.0, 1, cycles))
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
