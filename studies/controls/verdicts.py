"""The controls' verdicts under the project's one rule (:func:`studies.verdict.paired_verdicts`), from per-seed rows.

:func:`rows_of` turns the measured :class:`~studies.controls.measurements.Controls` into one row per seed and
number (model, rewind, measure, method, seed, cycle, sparsity, value); :func:`verdict_families` forms every
comparison of a treatment with its control from those rows, paired by seed. The unpaired controls (seed pairs,
seed hulls) are paired through :func:`studies.controls.measurements.seed_groups`: each seed starts one group,
and the group's number is filed under that seed.

=====================================  =============================================  =========  ==============
family (key)                           A - B per seed                                 direction  delta
=====================================  =============================================  =========  ==============
``connected``                          particle error barrier - seed pair's (SWAMP)   less       1 point
``connected_aligned``                  particle error barrier - aligned seed pair's   less       1 point
``hull``                               particle hull excess - seed hull's (SWAMP)     less       0.1 nats
``flatter_raw`` (``_layer``,           100 (SWAMP - IMP) / IMP of the raw trace (the  less       10%
``_channel``)                          BatchNorm-invariant ones)
``flatter_more_accurate``              accuracy of the flatter (raw trace) - other's  greater    0.5 points
``more_accurate``                      SWAMP - IMP test accuracy                      greater    0.5 points
``unstable``                           particle error barrier at rewind r - grid's    greater    1 point
``needs_stable``                       SWAMP - IMP accuracy at rewind r               less       0.5 points
=====================================  =============================================  =========  ==============

Holm runs over the comparisons of one family (model x sparsity; rewind point x sparsity). Barriers and accuracies
are in points (percent), hull excesses in nats (mean hull test loss minus the mean of its vertices').
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from studies.controls.measurements import Controls, seed_groups
from studies.verdict import ACCURACY_EFFECT, BARRIER_EFFECT, TRACE_EFFECT, Claim

REWIND = 2  # the grid's rewind point unless a caller says otherwise
HULL_EFFECT = 0.1  # nats of hull excess
ACC_EFFECT = ACCURACY_EFFECT
TRACES = {"trace_raw": "raw trace", "trace_layer": "BN-invariant, per layer",
          "trace_channel": "BN-invariant, per channel"}
Rows = Sequence[Mapping[str, Any]]
Values = dict[int, float]


class Family(NamedTuple):
    """One family of comparisons: its ``key``, the Markdown ``heading`` (without Holm's count), label -> per-seed
    differences, the :class:`~studies.verdict.Claim` and the unit printed after each mean."""

    key: str
    heading: str
    family: dict[str, list[float]]
    claim: Claim
    unit: str = ""


def rows_of(controls: Controls) -> list[dict[str, object]]:
    """One row per seed and number of the controls' measurements (accuracies and error barriers in points, traces
    as measured). A seed pair or seed hull is filed under the seed that starts its group.

    Example:
        >>> from studies.controls.measurements import Settings
        >>> rows = {"accuracy": [{"model": "mlp", "method": "imp", "seed": 0, "rewind": 2, "cycle": 0,
        ...                       "sparsity": 0.0, "test_acc": 0.625}],
        ...         "particle_pairs": [{"model": "mlp", "seed": 0, "rewind": 2, "cycle": 0, "sparsity": 0.0,
        ...                             "loss": 0.0, "error": e} for e in (0.001, 0.003)]}
        >>> [(r["measure"], r["value"]) for r in rows_of(Controls(Settings(), rows, {}))]
        [('test_acc', 62.5), ('particle_error', 0.2), ('particle_loss', 0.0)]
    """
    rows: list[dict[str, object]] = []
    rewind = controls.settings.rewind

    def add(r: Mapping[str, Any], measure: str, method: str, seed: int, value: float | None,
            rewind_of: int = rewind) -> None:
        if value is not None:
            rows.append({"model": r["model"], "rewind": rewind_of, "measure": measure, "method": method,
                         "seed": seed, "cycle": r["cycle"], "sparsity": r["sparsity"], "value": round(value, 6)})

    get = controls.rows.get
    seeds: dict[tuple[str, str], list[int]] = {}
    for r in get("accuracy", []):
        add(r, "test_acc", r["method"], r["seed"], 100 * r["test_acc"], r["rewind"])
        if r["rewind"] == rewind:
            seeds.setdefault((r["model"], r["method"]), []).append(r["seed"])
    pairs: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in get("particle_pairs", []):
        pairs.setdefault((r["model"], r["rewind"], r["seed"], r["cycle"]), []).append(r)
    for (_, rewind_of, seed, _), group in pairs.items():
        add(group[0], "particle_error", "swamp", seed, 100 * statistics.fmean(g["error"] for g in group), rewind_of)
        add(group[0], "particle_loss", "swamp", seed, statistics.fmean(g["loss"] for g in group), rewind_of)

    starts: dict[tuple[str, str, int], dict[tuple[int, ...], int]] = {}

    def start(r: Mapping[str, Any], k: int) -> int | None:
        """The seed that starts the row's group, None for a group :func:`seed_groups` does not form (a cache of
        an earlier planner that measured every pair)."""
        key = (r["model"], r["method"], k)
        if key not in starts:
            ordered = sorted(set(seeds.get(key[:2], [])))
            starts[key] = {g: ordered[i] for i, g in enumerate(seed_groups(ordered, k))}
        return starts[key].get(tuple(r["seeds"]))

    for r in get("seed_pairs", []):
        if (s := start(r, 2)) is None:
            continue
        for measure, key, scale in (("seed_error", "error", 100), ("seed_loss", "loss", 1),
                                    ("seed_error_aligned", "aligned_error", 100),
                                    ("seed_loss_aligned", "aligned_loss", 1)):
            add(r, measure, r["method"], s, None if r[key] is None else scale * r[key])
    for r in get("particle_hulls", []):
        add(r, "particle_hull_excess", "swamp", r["seed"], r["excess_mean"])
        add(r, "particle_hull_below", "swamp", r["seed"], r["frac_below"])
    for r in get("seed_hulls", []):
        if (s := start(r, len(r["seeds"]))) is None:
            continue
        add(r, "seed_hull_excess", r["method"], s, r["excess_mean"])
        add(r, "seed_hull_below", r["method"], s, r["frac_below"])
    for r in get("flatness", []):
        for measure, key in (("trace_raw", "raw"), ("trace_layer", "normalized"), ("trace_channel", "channel")):
            add(r, measure, r["method"], r["seed"], r[key])
    return rows


def values(rows: Rows, measure: str, **match: object) -> dict[tuple, Values]:
    """(model, rewind, cycle, sparsity) -> seed -> value of ``measure`` for the rows matching ``match``, sorted by
    model, rewind point and cycle."""
    out: dict[tuple, Values] = {}
    for r in rows:
        if r["measure"] == measure and all(r[k] == v for k, v in match.items()):
            out.setdefault((r["model"], r["rewind"], r["cycle"], r["sparsity"]), {})[r["seed"]] = r["value"]
    return dict(sorted(out.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])))


def label(cell: tuple, rewind: bool = False) -> str:
    """``model | sparsity`` (``model | rewind | sparsity``) of a cell (model, rewind, cycle, sparsity).

    Example:
        >>> label(("mlp", 2, 1, 0.5)), label(("cnn1d", 0, 0, 0.0), rewind=True)
        ('mlp | 50.0%', 'cnn1d | 0 | 0.0%')
    """
    model, r, _, sparsity = cell
    return f"{model} | {f'{r} | ' if rewind else ''}{100 * sparsity:.1f}%"


def differences(a: Mapping[tuple, Values], b: Mapping[tuple, Values], how: Callable[[float, float], float]
                ) -> dict[tuple, list[float]]:
    """cell -> how(a_s, b_s) over the seeds both have, for the cells of ``a`` that ``b`` has too."""
    return {cell: [how(va[s], b[cell][s]) for s in sorted(va) if s in b[cell]] for cell, va in a.items() if cell in b}


def minus(x: float, y: float) -> float:
    """The difference ``x - y`` (accuracies, barriers, hull excesses)."""
    return x - y


def relative(x: float, y: float) -> float:
    """``x - y`` in percent of ``y`` (Hessian traces).

    Example:
        >>> relative(90.0, 100.0)
        -10.0
    """
    return 100 * (x - y) / y


def _labelled(diff: Mapping[tuple, list[float]], rewind: bool = False) -> dict[str, list[float]]:
    return {label(c, rewind): d for c, d in diff.items()}


def verdict_families(rows: Rows, rewind: int = REWIND) -> list[Family]:
    """Every family of the module docstring, from the per-seed rows of :func:`rows_of`; ``rewind`` is the grid's
    rewind point (the other rewind points feed the two rewind families)."""
    grid = {"rewind": rewind}
    particles = values(rows, "particle_error", **grid)
    fams: list[Family] = []
    for key, measure, what in (("connected", "seed_error", "raw"),
                               ("connected_aligned", "seed_error_aligned", "after weight matching")):
        diff = differences(particles, values(rows, measure, method="swamp", **grid), minus)
        fams.append(Family(key, f"**The particles are connected, different seeds' solutions are not ({what})** "
                                f"(A = particle pairs, B = the seed pair (s, s + 1); test-error barrier in points; "
                                f"claim: less by {BARRIER_EFFECT:g} point", _labelled(diff),
                           Claim("less", BARRIER_EFFECT)))
    hull = differences(values(rows, "particle_hull_excess", **grid),
                       values(rows, "seed_hull_excess", method="swamp", **grid), minus)
    fams.append(Family("hull", "**The particles' hull is low-loss, a hull of different seeds' solutions is not** (A = "
                               "3 particles, B = the seeds (s, s + 1, s + 2); mean hull test loss - mean vertex loss, "
                               f"nats; claim: less by {HULL_EFFECT:g}", _labelled(hull), Claim("less", HULL_EFFECT)))
    for measure, name in TRACES.items():
        diff = differences(values(rows, measure, method="swamp", **grid), values(rows, measure, method="imp", **grid),
                           relative)
        fams.append(Family(f"flatter_{measure.removeprefix('trace_')}",
                           f"**SWAMP is flatter than IMP: {name}** (100 (SWAMP - IMP) / IMP, %; claim: less by "
                           f"{TRACE_EFFECT:g}%", _labelled(diff), Claim("less", TRACE_EFFECT), "%"))
    accuracy = {m: values(rows, "test_acc", method=m, **grid) for m in ("imp", "swamp")}
    traces = {m: values(rows, "trace_raw", method=m, **grid) for m in ("imp", "swamp")}
    flatter: dict[str, list[float]] = {}
    for cell, ti in traces["imp"].items():
        ts, ai, as_ = traces["swamp"].get(cell, {}), accuracy["imp"].get(cell, {}), accuracy["swamp"].get(cell, {})
        flatter[label(cell)] = [(as_[s] - ai[s]) * (1 if ts[s] < ti[s] else -1) for s in sorted(ti)
                                if s in ts and s in ai and s in as_]
    fams.append(Family("flatter_more_accurate", "**The flatter solution is the more accurate** (A = the one of SWAMP "
                                                "and IMP with the smaller raw trace, B = the other, same seed; test "
                                                f"accuracy in points; claim: greater by {ACC_EFFECT:g} point", flatter,
                       Claim("greater", ACC_EFFECT)))
    gain = differences(accuracy["swamp"], accuracy["imp"], minus)
    fams.append(Family("more_accurate", "**SWAMP is more accurate than IMP** (test accuracy, points; claim: greater "
                                        f"by {ACC_EFFECT:g} point", _labelled(gain), Claim("greater", ACC_EFFECT)))
    base = {(m, c, s): v for (m, _, c, s), v in particles.items()}
    sweep = {cell: v for cell, v in values(rows, "particle_error").items() if cell[1] != rewind}
    unstable = {label(cell, True): [v[s] - base[(cell[0], cell[2], cell[3])][s] for s in sorted(v)
                                    if s in base.get((cell[0], cell[2], cell[3]), {})] for cell, v in sweep.items()}
    fams.append(Family("unstable", "**A ticket at rewind point r is unstable to SGD noise** (A = particle error "
                                   f"barrier at rewind r, B = at rewind {rewind}, same seed; points; claim: greater by "
                                   f"{BARRIER_EFFECT:g} point", unstable, Claim("greater", BARRIER_EFFECT)))
    acc_all = {m: values(rows, "test_acc", method=m) for m in ("imp", "swamp")}
    needs = differences({c: v for c, v in acc_all["swamp"].items() if c[1] != rewind}, acc_all["imp"], minus)
    fams.append(Family("needs_stable", "**SWAMP needs a stable ticket: from rewind point r it falls below IMP** "
                                       f"(SWAMP - IMP test accuracy, points; claim: less by {ACC_EFFECT:g} point",
                       _labelled(needs, True), Claim("less", ACC_EFFECT)))
    return fams


def outcomes(controls: Controls) -> dict[tuple[str, str], str]:
    """(family key, label) -> the one rule's outcome (``holds``, ``does not hold``, ``unresolved``, ``too few
    seeds``) of every comparison of :func:`verdict_families` on ``controls``.

    Example:
        >>> from studies.controls.measurements import Settings
        >>> outcomes(Controls(Settings(), {}, {}))
        {}
    """
    from studies.verdict import paired_verdicts

    out = {}
    for fam in verdict_families(rows_of(controls), controls.settings.rewind):
        family = {k: d for k, d in fam.family.items() if d}
        if family:
            out.update({(fam.key, v.label): v.outcome for v in paired_verdicts(family, fam.claim)})
    return out
