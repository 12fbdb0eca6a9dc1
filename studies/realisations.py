"""Which paired effects survive the floating-point path: one study's grid run as several *realisations*.

A run is byte-deterministic for one machine type, torch thread count and torch version, and differs across
them: the same grid (``study.json``'s preset, settings and methods), the same seeds, run on another CPU type,
another ``OMP_NUM_THREADS`` or a GPU, is another realisation of the study. Its seeds are then not the only
noise, and an effect that one realisation's own paired t-test calls significant may change size or sign on
another floating-point path.

Per cycle k (one sparsity) and realisation r, the paired difference d_{r,s} = A_{r,s} - B_{r,s} on seed s
(:func:`studies.claims.paired`; A and B are the methods of roles ``a_role`` and ``b_role``,
:func:`studies.tables.roles`) is taken over the seeds that every realisation on disk finished at k, and gives
the realisation's mean m_r, sample standard deviation s_r over seeds, wins/ties/losses and paired t-test p.
Across the R realisations: the pooled mean M = mean_r m_r (every realisation counts once: it is one draw of
the floating-point path), the spread max_r m_r - min_r m_r, and the standard deviation of the m_r (ddof = 1);
per seed, whether sign(d_{r,s}) is the same in every realisation (a tie is its own sign) and the range
max_r d_{r,s} - min_r d_{r,s}, averaged over seeds.

Verdict: the project's one rule (:func:`studies.verdict.paired_verdicts`) on the per-seed differences averaged
over the on-disk realisations, dbar_s = mean_r d_{r,s} (:func:`studies.verdict.seed_means`: the paths share seeds,
initialisation and data order, so they are not independent replicates and the seeds stay the unit of replication),
Holm over the cycles of the report, under a claim (default: A greater than B by 0.5 points of accuracy).
Realisations known only from published numbers have no per-seed differences: they are shown, not judged.

Realisations that are not on disk (a published table's means, stds and wins/ties/losses, made with
:func:`published_effect`) join through ``realisation_effects(..., published=...)``; the per-seed columns then
count the on-disk ones only.

``python -m studies.realisations DIR DIR ... [--labels intel-t1,amd-t1] [--cycles K,K] [--value COLUMN]
[--claim greater|less|equivalent] [--effect DELTA] [--published LABEL:K:MEAN:STD:W/T/L ...]`` prints the table
(:func:`realisation_table`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from core.errors import ArgumentParser, LibraryArgumentError, UserError, run_cli
from landscape.tools.cli import cycle_list
from studies import tables as st
from studies.claims import paired
from studies.grid.args import parse_seeds
from studies.grid.plan import ROLES
from studies.report import finished_accuracy
from studies.verdict import (
    DIRECTIONS,
    DOES_NOT_HOLD,
    HOLDS,
    TOO_FEW,
    UNRESOLVED,
    Claim,
    PairedVerdict,
    paired_verdicts,
    seed_means,
)

__all__ = [
    "Claim",
    "CycleEffects",
    "DOES_NOT_HOLD",
    "Effect",
    "GRID_KEYS",
    "HOLDS",
    "PairedVerdict",
    "RealisationReport",
    "TOO_FEW",
    "UNRESOLVED",
    "main",
    "published_arg",
    "published_effect",
    "realisation_effects",
    "realisation_table",
    "value_scale",
]

ACCURACY_GAIN = Claim("greater", 0.5)  # the default claim: A more accurate than B by half a point
GRID_KEYS = ("preset", "settings", "methods", "quick")  # what makes two studies realisations of one grid


@dataclass(frozen=True)
class Effect:
    """One realisation's paired difference A - B at one cycle, over its seeds (:class:`studies.claims.Paired`)."""

    mean: float
    std: float  # sample std over seeds; NaN with one seed
    seeds: int
    positive: int  # seeds with A > B (wins)
    ties: int
    negative: int  # seeds with A < B (losses)
    p_value: float  # two-sided paired t-test
    differences: tuple[float, ...] | None  # per common seed (CycleEffects.seeds); None for published numbers

    def record(self) -> str:
        """``wins/ties/losses`` of A against B over the seeds."""
        return f"{self.positive}/{self.ties}/{self.negative}"


MAX_SEEDS = 10**6  # seeds a published effect may count
MAX_PUBLISHED = 1e6  # |mean| and std of a published effect of a column other than an accuracy, in its unit


def published_effect(mean: float, std: float, positive: int, ties: int, negative: int) -> Effect:
    """A realisation's effect known only from a published table (mean ± std and wins/ties/losses).

    The p-value is the paired t-test's from these numbers, t = mean / (std / sqrt(n)) with n - 1 degrees of
    freedom (n = wins + ties + losses; a zero std gives p = 0 for a non-zero mean, as
    :func:`studies.claims.paired_p_value`), so it is as exact as the rounding of the table.

    Example (issue 17: the Intel Xeon's SWAMP - IMP at 86.6%, -0.35 ± 0.16 points, 0 of 6 seeds ahead):

    >>> published_effect(-0.0035, 0.0016, 0, 0, 6).record()
    '0/0/6'
    """
    counts = (positive, ties, negative)
    if any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in counts) or not 2 <= sum(counts) <= MAX_SEEDS:
        raise LibraryArgumentError(f"a published effect needs wins/ties/losses of 2 to {MAX_SEEDS:,} seeds, not "
                                   f"{counts}")
    if not (math.isfinite(mean) and math.isfinite(std) and std >= 0):
        raise LibraryArgumentError(f"a published effect needs a finite mean and std >= 0, not {mean} ± {std}")
    n = sum(counts)
    p = (0.0 if mean else 1.0) if std == 0 else float(2 * stats.t.sf(abs(mean) / (std / math.sqrt(n)), n - 1))
    return Effect(float(mean), float(std), n, positive, ties, negative, p, None)


@dataclass(frozen=True)
class CycleEffects:
    """Every realisation's effect at one cycle, what varies across them, and the verdict."""

    cycle: int
    sparsity: float
    effects: tuple[Effect, ...]  # in the order of RealisationReport.labels
    seeds: tuple[int, ...]  # the seeds every on-disk realisation finished at this cycle
    pooled: float  # mean of the realisation means
    spread: float  # max - min of the realisation means
    means_std: float  # std (ddof = 1) of the realisation means
    same_sign: int | None  # seeds whose difference has one sign in every on-disk realisation; None with < 2
    seed_range: float  # mean over seeds of max - min of the difference across on-disk realisations; NaN with < 2
    verdict: PairedVerdict  # the one rule on the per-seed differences averaged over the on-disk realisations


@dataclass(frozen=True)
class RealisationReport:
    """Per cycle, the paired effect A - B in every realisation of one grid (:func:`realisation_effects`)."""

    labels: tuple[str, ...]
    value: str  # the results.csv column compared
    a: str  # legend labels of the two methods, e.g. "SWAMP (N=4)" and "IMP"
    b: str
    cycles: tuple[CycleEffects, ...]
    published: tuple[str, ...] = ()  # labels of the realisations known only from published numbers
    claim: Claim = ACCURACY_GAIN  # judged in the table's unit (points for accuracies)

    def at(self, cycle: int) -> CycleEffects:
        """The cycle's row; one :class:`UserError` line if it is not in the report."""
        found = next((c for c in self.cycles if c.cycle == cycle), None)
        if found is None:
            shown = ", ".join(str(c.cycle) for c in self.cycles)
            raise UserError(f"cycle {cycle} is not in the report (cycles {shown})")
        return found


def _cycle_effects(cycle: int, sparsity: float, effects: Sequence[Effect], seeds: Sequence[int],
                   judged: PairedVerdict) -> CycleEffects:
    """One cycle's :class:`CycleEffects` from its realisations' effects (on disk or published): the
    spread of their means, the per-seed agreement of those with per-seed differences, and its verdict ``judged``."""
    means = np.array([e.mean for e in effects])
    per_seed = np.array([e.differences for e in effects if e.differences is not None]).reshape(-1, len(seeds))
    compared = len(per_seed) >= 2 and len(seeds) > 0
    signs = np.sign(per_seed)
    return CycleEffects(
        cycle, sparsity, tuple(effects), tuple(seeds), float(means.mean()), float(means.max() - means.min()),
        float(means.std(ddof=1)),
        int((signs == signs[0]).all(axis=0).sum()) if compared else None,
        float((per_seed.max(axis=0) - per_seed.min(axis=0)).mean()) if compared else math.nan, judged)


def _grid(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What two realisations must share; methods without their ``role`` (an old manifest records none)."""
    grid = {key: manifest.get(key) for key in GRID_KEYS}
    if isinstance(grid["methods"], list):
        grid["methods"] = [{k: v for k, v in m.items() if k != "role"} if isinstance(m, dict) else m
                           for m in grid["methods"]]
    return grid


def _check_same_grid(studies: Sequence[Path]) -> None:
    first = _grid(st.read_manifest(studies[0]))
    for root in studies[1:]:
        grid = _grid(st.read_manifest(root))
        key = next((k for k in GRID_KEYS if grid[k] != first[k]), None)
        if key is None:
            continue
        theirs, ours = grid[key], first[key]
        if key == "methods":
            names = [[m.get("name") if isinstance(m, dict) else m for m in ms or []] for ms in (theirs, ours)]
            key, theirs, ours = ("methods' settings", theirs, ours) if names[0] == names[1] else ("methods", *names)
        raise UserError(f"{root} is not a realisation of the grid of {studies[0]}: its {key} differ in study.json "
                        f"({theirs!r} against {ours!r}); compare runs of one study (the same --preset, --methods "
                        "and settings) made on different machines or thread counts")


def _labels(studies: Sequence[Path], labels: Sequence[str] | None) -> tuple[str, ...]:
    if labels is None:
        names = [p.name for p in studies]
        return tuple(names if len(set(names)) == len(names) else map(str, studies))
    labels = tuple(labels)
    if len(labels) != len(studies):
        raise UserError(f"--labels gives {len(labels)} labels for {len(studies)} study directories; give one per "
                        "directory, in their order")
    if not all(labels) or len(set(labels)) != len(labels):
        raise UserError(f"--labels must be distinct and non-empty, not {','.join(labels)!r}")
    return labels


def _method(root: Path, role: str, flag: str) -> str:
    method = st.roles(root)[role]
    if method is None:
        raise UserError(f"study {root} has no method of role {role!r} ({flag}); its methods play "
                        f"{', '.join(sorted(set(st.roles(root).of.values())))}")
    return method


def _pairs(acc: pd.DataFrame, value: str, a: str, b: str) -> pd.DataFrame:
    """``value`` of A and B per (cycle, seed), where both finished that cycle."""
    return acc[acc["method"].isin([a, b])].groupby(["cycle", "seed", "method"])[value].mean().unstack("method") \
        .reindex(columns=[a, b]).dropna()


def _common_pairs(roots: Sequence[Path], accs: Sequence[pd.DataFrame], value: str, a: str, b: str,
                  seeds: Sequence[int] | None) -> tuple[list[pd.DataFrame], pd.MultiIndex]:
    """Every study's A and B per (cycle, seed), and the (cycle, seed) finished in every study."""
    shared = set.intersection(*(set(st.read_manifest(r).get("seeds") or []) for r in roots))
    if seeds is not None:
        missing = sorted(set(seeds) - shared)
        if missing:
            raise UserError(f"--seeds {missing[0]} is not a seed of every study (common seeds: "
                            f"{', '.join(map(str, sorted(shared))) or 'none'})")
        shared = set(seeds)
    if not shared:
        raise UserError(f"the studies have no seed in common (study.json of {roots[0]} and the others); "
                        "realisations must run the same seeds")
    if value not in accs[0]:
        raise UserError(f"--value {value!r} is not a column of results.csv; choose from "
                        f"{', '.join(st.METRIC_COLUMNS)}")
    pairs = [p[p.index.get_level_values("seed").isin(shared)] for p in (_pairs(acc, value, a, b) for acc in accs)]
    common = pairs[0].index
    for p in pairs[1:]:
        common = common.intersection(p.index)
    return pairs, common


def realisation_effects(studies: Sequence[str | Path], value: str = "average_test_acc", a_role: str = "swamp",
                        b_role: str = "imp", labels: Sequence[str] | None = None, cycles: Sequence[int] | None = None,
                        seeds: Sequence[int] | None = None,
                        published: Mapping[str, Mapping[int, Effect]] | None = None,
                        claim: Claim = ACCURACY_GAIN) -> RealisationReport:
    """Per cycle, the paired difference A - B in every realisation, its spread across them and the verdict.

    Args:
        studies: study directories (``python -m studies.grid --out DIR``) of one grid, run on different
            floating-point paths; each its own realisation.
        value: the ``results.csv`` column compared (:data:`studies.tables.METRIC_COLUMNS`).
        a_role, b_role: roles (:func:`studies.tables.roles`) of methods A and B.
        labels: one name per study (default: the directories' names).
        cycles: only these cycles (default: every cycle that A and B finished on a common seed in every study
            and that every published realisation gives).
        seeds: only these seeds (default: every seed of every study's ``study.json``).
        published: realisations known only from a published table, ``{label: {cycle: effect}}``
            (:func:`published_effect`, in the unit of ``value``); they follow the studies in the report, and the
            per-seed columns count the studies only.
        claim: what the verdicts test, its effect in the table's unit (:func:`value_scale`: points for
            accuracies); default A > B by 0.5 points.

    Returns:
        :class:`RealisationReport`; per cycle, the seeds are those that A and B finished in every study, and the
        verdict the one rule's (:func:`studies.verdict.paired_verdicts`) on the per-seed differences averaged over
        the studies (:func:`studies.verdict.seed_means`), Holm over the report's cycles.

    Refused with one :class:`UserError` line: fewer than two realisations, studies of different grids
    (``study.json``'s preset, settings, methods), no seed or no finished cycle in common, a role no method
    plays, an unknown ``value``, labels that are not one distinct name per realisation, a directory given twice.

    Example (issue 17: the lead's one- and two-thread AMD runs beside the Intel Xeon's published numbers at
    cycles 9 and 14, 86.6% and 95.6% sparsity):

    >>> intel = {9: published_effect(-0.0035, 0.0016, 0, 0, 6), 14: published_effect(0.0195, 0.0083, 6, 0, 0)}
    >>> report = realisation_effects(["runs/xm/budget-e4-t1", "runs/xm/budget-e4-t2"], seeds=range(6),
    ...                              published={"intel-t1": intel})  # doctest: +SKIP
    >>> print(realisation_table(report))  # doctest: +SKIP
    """
    roots, published = [Path(s) for s in studies], dict(published or {})
    names = _labels(roots, labels)
    if len(roots) + len(published) < 2 or not roots:
        raise UserError(f"give at least two realisations, one a study directory (the others study directories or "
                        f"--published numbers); given: {len(roots)} DIR, {len(published)} --published")
    clash = next((label for label in published if not label or label in names), None)
    if clash is not None:
        raise UserError(f"the published realisation {clash!r} needs a label of its own (labels: {', '.join(names)})")
    twice = next((r for k, r in enumerate(roots) if r.resolve() in {q.resolve() for q in roots[:k]}), None)
    if twice is not None:
        raise UserError(f"study directory {twice} is given twice; each realisation once")
    _check_same_grid(roots)
    a, b = _method(roots[0], a_role, "--a-role"), _method(roots[0], b_role, "--b-role")
    if a == b:
        raise UserError(f"--a-role {a_role} and --b-role {b_role} are the same method {a!r}; compare two methods")
    accs = [finished_accuracy(r) for r in roots]
    pairs, common = _common_pairs(roots, accs, value, a, b, seeds)
    done = sorted(int(k) for k in set(common.get_level_values("cycle")) if all(k in e for e in published.values()))
    what = f"{a} and {b} on a common seed in every study" + (" and given by every published realisation"
                                                              if published else "")
    found = []
    for cycle in st.chosen_cycles(done, cycles, what):
        keep = common[common.get_level_values("cycle") == cycle]
        cycle_seeds = tuple(int(s) for s in keep.get_level_values("seed"))
        effects, sparsity = [], []
        for acc, p in zip(accs, pairs, strict=True):
            (row,) = paired(acc[(acc["cycle"] == cycle) & acc["seed"].isin(cycle_seeds)], value, a, b)
            d = p.loc[keep, a] - p.loc[keep, b]
            effects.append(Effect(row.mean, row.std, row.seeds, row.positive, row.ties, row.negative, row.p_value,
                                  tuple(float(x) for x in d)))
            sparsity.append(row.sparsity)
        found.append((cycle, float(np.mean(sparsity)), effects + [e[cycle] for e in published.values()], cycle_seeds))
    scale = value_scale(value)
    family = {str(cycle): scale * seed_means([e.differences for e in effects if e.differences is not None])
              for cycle, _, effects, _ in found}
    judged = paired_verdicts(family, claim)
    rows = [_cycle_effects(*cycle, v) for cycle, v in zip(found, judged, strict=True)]
    legend = st.method_labels(roots[0])
    return RealisationReport((*names, *published), value, legend[a], legend[b], tuple(rows), tuple(published), claim)


def value_scale(value: str) -> float:
    """The table's unit: accuracies in points (x 100), anything else as stored."""
    return 100.0 if value.endswith("_acc") else 1.0


def _num(x: float, scale: float, digits: int, sign: bool = True) -> str:
    return "–" if math.isnan(x) else f"{scale * x:{'+' if sign else ''}.{digits}f}"


def realisation_table(report: RealisationReport, digits: int = 2) -> str:
    """Markdown: per sparsity, each realisation's mean ± std (wins/ties/losses) of A - B, the pooled mean, the
    spread of the realisation means, the per-seed agreement and the one rule's verdict on the per-seed differences
    averaged over the on-disk realisations."""
    scale = value_scale(report.value)
    unit = "points" if scale == 100.0 else "as in results.csv"
    columns = [*report.labels, "pooled mean", "spread (max − min)", "std of means", "seeds with one sign",
               "mean seed range", "verdict (mean over paths, simultaneous interval, Holm p, wins/ties/losses)"]
    lines = [f"#### {report.value}: A = {report.a}, B = {report.b}, A − B per realisation ({unit})", "",
             f"Claim: A − B {report.claim.direction}, δ = {report.claim.effect:g} ({unit}); the one rule on the "
             f"per-seed differences averaged over the on-disk realisations, Holm over the {len(report.cycles)} "
             "cycles shown.", "",
             "| pruned | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for c in report.cycles:
        cells = [f"{_num(e.mean, scale, digits)} ± {_num(e.std, scale, digits, False)} ({e.record()})"
                 for e in c.effects]
        agree = "–" if c.same_sign is None else f"{c.same_sign} of {len(c.seeds)}"
        cells += [_num(c.pooled, scale, digits), _num(c.spread, scale, digits, False),
                  _num(c.means_std, scale, digits, False), agree, _num(c.seed_range, scale, digits, False),
                  c.verdict.summary(digits)]
        lines.append(f"| {100 * c.sparsity:.1f}% | " + " | ".join(cells) + " |")
    seeds = sorted({s for c in report.cycles for s in c.seeds})
    lines += ["", f"On-disk realisations paired over seeds {', '.join(map(str, seeds))} (those every realisation "
                  "finished at the cycle); wins/ties/losses count seeds with A > / = / < B."]
    if report.published:
        lines.append(f"{', '.join(report.published)}: published numbers (no per-seed differences; the seed columns "
                     "and the verdict count the on-disk realisations only).")
    return "\n".join(lines)


def published_arg(text: str) -> tuple[str, int, Effect]:
    """argparse ``type`` of ``--published LABEL:CYCLE:MEAN:STD:W/T/L`` (mean and std in the table's unit)."""
    parts = text.split(":")
    try:
        label, cycle, mean, std, record = parts
        wins, ties, losses = (int(n) for n in record.split("/"))
        if int(cycle) < 0:
            raise ValueError(f"cycle {cycle} is negative")
        return label, int(cycle), published_effect(float(mean), float(std), wins, ties, losses)
    except (ValueError, LibraryArgumentError) as err:
        raise argparse.ArgumentTypeError(f"LABEL:CYCLE:MEAN:STD:W/T/L such as intel-t1:9:-0.35:0.16:0/0/6, not "
                                         f"{text!r} ({err})") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m studies.realisations", description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", metavar="DIR",
                        help="study directories of one grid (python -m studies.grid), one per floating-point path")
    parser.add_argument("--labels", default=None, metavar="NAME,NAME,...",
                        help="a name per DIR, in their order (default: the directories' names)")
    parser.add_argument("--cycles", type=cycle_list, default=None, metavar="K,K,...",
                        help="cycles to show (default every cycle finished in every realisation)")
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="pair over these seeds only (default every seed common to the studies)")
    parser.add_argument("--value", default="average_test_acc", choices=st.METRIC_COLUMNS,
                        help="results.csv column compared (default average_test_acc)")
    parser.add_argument("--a-role", default="swamp", choices=ROLES, help="role of method A (default swamp)")
    parser.add_argument("--b-role", default="imp", choices=ROLES, help="role of method B (default imp)")
    parser.add_argument("--claim", default="greater", choices=DIRECTIONS,
                        help="what the verdicts test of A − B (default greater)")
    parser.add_argument("--effect", type=float, default=0.5, metavar="DELTA",
                        help="the claimed effect in the table's unit, points for accuracies (default 0.5)")
    parser.add_argument("--published", type=published_arg, action="append", default=[],
                        metavar="LABEL:CYCLE:MEAN:STD:W/T/L",
                        help="one cycle of a realisation known only from a published table, mean and std in the "
                             "table's unit (points for accuracies), e.g. intel-t1:9:-0.35:0.16:0/0/6; repeat per "
                             "cycle and realisation")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.effect) and args.effect > 0):
        raise UserError(f"--effect must be a finite number > 0, not {args.effect:g}")
    scale, published = value_scale(args.value), {}
    limit = 100.0 if scale == 100.0 else MAX_PUBLISHED  # a difference of two accuracies in points
    for label, cycle, effect in args.published:
        if cycle in published.setdefault(label, {}):
            raise UserError(f"--published gives cycle {cycle} of {label} twice")
        if abs(effect.mean) > limit or effect.std > limit * math.sqrt(2):
            raise UserError(f"--published {label}:{cycle}: a mean of {effect.mean:.4g} ± {effect.std:.4g} is no "
                            f"difference of two {args.value} values (at most {limit:g} in the table's unit, the "
                            f"std {limit * math.sqrt(2):.4g})")
        published[label][cycle] = dataclasses.replace(effect, mean=effect.mean / scale, std=effect.std / scale)
    report = realisation_effects(args.studies, args.value, args.a_role, args.b_role,
                                 None if args.labels is None else args.labels.split(","), args.cycles,
                                 None if args.seeds is None else parse_seeds(args.seeds), published,
                                 Claim(args.claim, args.effect))
    print(realisation_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
