"""The controls' paired verdicts (SWAMP − IMP accuracy and flatness) across realisations of one grid.

A *realisation* is the same controls grid trained and measured on another floating-point path (another
CPU, another torch thread count, a GPU): the runs are byte-deterministic per path and differ across
paths. For every (quantity, model, sparsity) the paired difference SWAMP − IMP per seed is computed in each
realisation's controls JSON (``python -m studies.controls ROOT --json OUT``): test accuracy in points, Hessian
traces in percent of IMP's (as :mod:`studies.controls.verdicts`). The table shows each realisation's mean ± std
and wins/ties/losses; the verdict is the project's one rule (:func:`studies.verdict.paired_verdicts`) on the
per-seed differences averaged over the realisations (:func:`studies.verdict.seed_means`: the paths share seeds,
initialisation and data order, so the seeds stay the unit of replication), over the seeds every realisation
measured, Holm over each quantity's model x sparsity family, with the claims of :mod:`studies.controls.verdicts`
(SWAMP more accurate by 0.5 points; its trace smaller by 10%).

    python -m studies.controls.realisations A.json B.json [--labels t1,t2]
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from core.artifacts.jsonfile import BadJSON, read_json
from core.errors import ArgumentParser, UserError, run_cli
from studies.controls.measurements import Controls, Settings
from studies.controls.verdicts import ACC_EFFECT, TRACE_EFFECT, label, minus, relative, rows_of, values
from studies.verdict import Claim, paired_verdicts, seed_means

# (measure of studies.controls.verdicts.rows_of, label, SWAMP - IMP per seed, claim)
QUANTITIES: tuple[tuple[str, str, Callable[[float, float], float], Claim], ...] = (
    ("test_acc", "test accuracy (points)", minus, Claim("greater", ACC_EFFECT)),
    ("trace_raw", "raw Hessian trace (% of IMP's)", relative, Claim("less", TRACE_EFFECT)),
    ("trace_layer", "BN-invariant trace, per layer (% of IMP's)", relative, Claim("less", TRACE_EFFECT)),
    ("trace_channel", "BN-invariant trace, per channel (% of IMP's)", relative, Claim("less", TRACE_EFFECT)))


def load_controls(path: str | Path) -> Controls:
    """The :class:`Controls` of a JSON written by ``python -m studies.controls ROOT --json OUT``; a missing or
    malformed file is one :class:`UserError` line naming it and the command that writes it.

    Example::

        controls = load_controls("runs/controls/controls.json")
        sorted(controls.rows)  # ['accuracy', 'flatness', 'particle_hulls', ...]
    """
    path = Path(path)
    hint = f"write it with python -m studies.controls ROOT --json {path}"
    try:
        obj = read_json(path)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: {hint}") from None
    except BadJSON as exc:
        raise UserError(f"{path} is not JSON ({exc}): {hint}") from None
    kinds = {"accuracy", "particle_pairs", "seed_pairs", "particle_hulls", "seed_hulls", "flatness"}
    if not isinstance(obj, dict) or not {"settings", "rows", "unalignable"} <= obj.keys() \
            or not isinstance(obj["rows"], dict) or not kinds <= set(obj["rows"]):
        raise UserError(f"{path} is not the JSON of python -m studies.controls (settings, rows of {sorted(kinds)}, "
                        f"unalignable): {hint}")
    try:
        settings = Settings(**obj["settings"])
    except TypeError as exc:
        raise UserError(f"{path} has settings this version does not know ({exc}): {hint}") from None
    return Controls(settings, obj["rows"], obj["unalignable"], obj.get("seconds", {}))


def realisation_rows(realisations: Sequence[Controls]) -> list[dict]:
    """One row per (quantity, model, sparsity) measured in every realisation: each realisation's SWAMP − IMP
    ``(mean, std, wins, ties, losses)`` over the common seeds, in the quantity's unit, and the one rule's
    :class:`~studies.verdict.PairedVerdict` on the per-seed differences averaged over the realisations."""
    if len(realisations) < 2:
        raise UserError(f"need at least two realisations of the controls grid, got {len(realisations)}")
    rewinds = {c.settings.rewind for c in realisations}
    if len(rewinds) != 1:
        raise UserError(f"the realisations' grids are at different rewind points ({sorted(rewinds)})")
    (rewind,), tables = rewinds, [rows_of(c) for c in realisations]
    out = []
    for measure, name, how, claim in QUANTITIES:
        per = []
        for rows in tables:
            swamp, imp = (values(rows, measure, method=m, rewind=rewind) for m in ("swamp", "imp"))
            per.append({cell: {s: how(v, imp[cell][s]) for s, v in va.items() if s in imp[cell]}
                        for cell, va in swamp.items() if cell in imp})
        cells = [cell for cell in per[0] if all(cell in p for p in per[1:])]
        found = []
        for cell in cells:
            seeds = sorted(set.intersection(*(set(p[cell]) for p in per)))
            if seeds:
                found.append((cell, [[p[cell][s] for s in seeds] for p in per]))
        if not found:
            continue
        judged = paired_verdicts({label(cell): seed_means(d) for cell, d in found}, claim)
        for (cell, d), verdict in zip(found, judged, strict=True):
            effects = [(statistics.fmean(x), statistics.stdev(x) if len(x) > 1 else math.nan, sum(v > 0 for v in x),
                        sum(v == 0 for v in x), sum(v < 0 for v in x)) for x in d]
            out.append({"quantity": name, "model": cell[0], "sparsity": cell[3], "effects": effects,
                        "verdict": verdict})
    return out


def realisation_table(realisations: Sequence[Controls], labels: Sequence[str]) -> str:
    """:func:`realisation_rows` as Markdown, one column per realisation (``labels``) and the verdict."""
    if len(labels) != len(realisations):
        raise UserError(f"--labels names {len(labels)} realisations, but {len(realisations)} are given")
    lines = [f"| quantity | model | sparsity | {' | '.join(labels)} | verdict over the mean of the realisations "
             "(mean, simultaneous interval, Holm p, wins/ties/losses) |", "|" + "---|" * (len(labels) + 4)]
    for row in realisation_rows(realisations):
        cells = [f"{m:+.2f} ± {s:.2f} ({w}/{t}/{loss})" for m, s, w, t, loss in row["effects"]]
        lines.append(f"| {row['quantity']} | {row['model']} | {100 * row['sparsity']:.1f}% | {' | '.join(cells)} | "
                     f"{row['verdict'].summary()} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m studies.controls.realisations",
                            description="SWAMP − IMP (accuracy, flatness) of the controls grid across realisations "
                                        "(machines, thread counts), with the verdict that survives them.")
    parser.add_argument("json", nargs="+", metavar="JSON", help="controls JSON of each realisation "
                        "(python -m studies.controls ROOT --json OUT)")
    parser.add_argument("--labels", default=None, metavar="A,B,...", help="a name per realisation "
                        "(default r1, r2, ...)")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [f"r{k + 1}" for k in range(len(args.json))]
    print(realisation_table([load_controls(p) for p in args.json], labels))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
