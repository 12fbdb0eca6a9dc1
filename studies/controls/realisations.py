"""The controls' paired verdicts (SWAMP − IMP accuracy and flatness) across realisations of one grid.

A *realisation* is the same controls grid trained and measured on another floating-point path (another
CPU, another torch thread count, a GPU): the runs are byte-deterministic per path and differ across
paths. For every (model, sparsity, quantity) the paired difference SWAMP − IMP over seeds is computed in
each realisation's controls JSON (``python -m studies.controls ROOT --json OUT``) and judged by the rule
of :func:`studies.verdict.verdict` (holds only where every realisation agrees in sign, each is beyond
its seed std, and the pooled mean exceeds the spread of the realisation means).

    python -m studies.controls.realisations A.json B.json [--labels t1,t2]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from core.artifacts.jsonfile import BadJSON, read_json
from core.errors import ArgumentParser, UserError, run_cli
from studies.controls.measurements import Controls, Settings
from studies.controls.tables import _paired_rows
from studies.verdict import verdict

# (row kind, value key, label, scale to the table's unit)
QUANTITIES = (("accuracy", "test_acc", "test accuracy (points)", 100.0),
              ("flatness", "raw", "raw Hessian trace", 1.0),
              ("flatness", "normalized", "BN-invariant trace, per layer", 1.0),
              ("flatness", "channel", "BN-invariant trace, per channel", 1.0))


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
    """One row per (quantity, model, sparsity) measured in every realisation: each realisation's paired
    SWAMP − IMP ``(mean, std, wins, ties, losses)`` in the table's unit and the :class:`Verdict`."""
    if len(realisations) < 2:
        raise UserError(f"need at least two realisations of the controls grid, got {len(realisations)}")
    rewinds = {c.settings.rewind for c in realisations}
    if len(rewinds) != 1:
        raise UserError(f"the realisations' grids are at different rewind points ({sorted(rewinds)})")
    out = []
    for kind, key, label, scale in QUANTITIES:
        models = sorted(set.intersection(*({r["model"] for r in c.rows[kind]} for c in realisations)))
        for model in models:
            where = {"rewind": realisations[0].settings.rewind} if kind == "accuracy" else {}
            per = [{p.cycle: p for p in _paired_rows(c.rows[kind], key, model, **where)} for c in realisations]
            for cycle in sorted(set.intersection(*(set(p) for p in per))):
                effects = [p[cycle] for p in per]
                means, stds = [scale * e.mean for e in effects], [scale * e.std for e in effects]
                out.append({"quantity": label, "model": model, "sparsity": effects[0].sparsity,
                            "effects": [(m, s, e.positive, e.ties, e.negative)
                                        for m, s, e in zip(means, stds, effects, strict=True)],
                            "verdict": verdict(means, stds)})
    return out


def realisation_table(realisations: Sequence[Controls], labels: Sequence[str]) -> str:
    """:func:`realisation_rows` as Markdown, one column per realisation (``labels``)."""
    if len(labels) != len(realisations):
        raise UserError(f"--labels names {len(labels)} realisations, but {len(realisations)} are given")
    lines = [f"| quantity | model | sparsity | {' | '.join(labels)} | verdict |",
             "|" + "---|" * (len(labels) + 4)]
    for row in realisation_rows(realisations):
        cells = [f"{m:+.2f} ± {s:.2f} ({w}/{t}/{loss})" for m, s, w, t, loss in row["effects"]]
        v = row["verdict"]
        lines.append(f"| {row['quantity']} | {row['model']} | {100 * row['sparsity']:.1f}% | {' | '.join(cells)} | "
                     f"**{v.outcome}** ({v.reason}) |")
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
