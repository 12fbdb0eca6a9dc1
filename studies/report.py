"""``python -m studies.report DIR``: a study's numbers as Markdown tables (docs/earlier-results.md).

The tables of means are followed by the paired per-seed comparisons behind the verdicts
(:mod:`studies.claims`).

Every cell is mean ± standard deviation over seeds (:func:`studies.tables.mean_std`), with
the number of seeds in the header; accuracies and error barriers in percent. Where
``python -m studies.controls DIR`` has cached controls, they follow (:func:`directory_report`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from core.errors import ArgumentParser, UserError, run_cli
from core.options import add_dataclass_arguments
from landscape.tools.artifacts import EvalOptions
from landscape.tools.cli import cycle_list
from studies import tables as st
from studies.claims import claims_report
from studies.controls import controls_section
from studies.grid.manifest import FAMILY_MANIFEST, MANIFEST


def _pm(mean: float, std: float, scale: float, digits: int) -> str:
    if pd.isna(mean):
        return "–"
    spread = "" if pd.isna(std) else f" ± {scale * std:.{digits}f}"
    return f"{scale * mean:.{digits}f}{spread}"


def markdown_table(frame: pd.DataFrame, rows: str, columns: str, value: str, scale: float = 1.0,
                   digits: int = 2, column_name: str = "") -> str:
    """Pivot ``value`` (aggregated over seeds) into a Markdown table of ``rows`` x ``columns``."""
    agg = st.mean_std(frame, [rows, columns], [value])
    agg["cell"] = [_pm(m, s, scale, digits) for m, s in zip(agg[f"{value}_mean"], agg[f"{value}_std"], strict=True)]
    table = agg.pivot(index=rows, columns=columns, values="cell")
    table = table.reindex(columns=list(dict.fromkeys(agg[columns])), index=list(dict.fromkeys(agg[rows])))
    head = f"| {rows} | " + " | ".join(f"{column_name}{c}" for c in table.columns) + " |"
    lines = [head, "|" + "---|" * (len(table.columns) + 1)]
    lines += [f"| {i} | " + " | ".join(str(v) if isinstance(v, str) else "–" for v in row) + " |"
              for i, row in table.iterrows()]
    return "\n".join(lines)


def sparsity_columns(frame: pd.DataFrame, cycles: Sequence[int] | None = None) -> pd.DataFrame:
    """Rows of the chosen cycles, with a ``pruned`` column: the sparsity as a label such as ``48.8%``."""
    if cycles is not None:
        frame = frame[frame["cycle"].isin(cycles)]
    pct = frame.groupby("cycle")["sparsity"].transform("mean")
    return frame.assign(pruned=[f"{100 * s:.1f}%" for s in pct]).sort_values("cycle", kind="stable")


def finished_accuracy(root: str | Path) -> pd.DataFrame:
    """:func:`studies.tables.accuracy_frame`, or one :class:`UserError` line when no sub-run of the
    study has finished a cycle yet (every table needs one)."""
    if not any((Path(root) / run["path"] / "results.csv").is_file() for run in st.read_manifest(root)["runs"]):
        raise UserError(f"no sub-run of {root} has finished a cycle yet: run python -m studies.grid --out {root} "
                        f"(then python -m studies.analyse {root}) first")
    return st.accuracy_frame(root)


def study_report(root: str | Path, cycles: Sequence[int] | None = None) -> str:
    """Accuracy, cost, barriers, hull and Hessian tables of the study, as Markdown."""
    acc = finished_accuracy(root)
    if cycles is not None:
        st.chosen_cycles(sorted(set(acc["cycle"])), cycles, f"any sub-run of {root}")
    seeds = acc.groupby("method")["seed"].nunique()
    acc = acc.assign(label=[f"{lab} ({seeds[m]} seeds)" for m, lab in zip(acc["method"], acc["label"], strict=True)])
    labels = st.method_labels(root)
    parts = ["### Test accuracy (%) of the cycle's solution", markdown_table(
        sparsity_columns(acc, cycles), "pruned", "label", "average_test_acc", 100)]
    swamp = st.roles(root)["swamp"]
    if swamp is not None:
        ens = sparsity_columns(acc[acc["method"] == swamp], cycles)
        parts += [f"### Test accuracy (%) of the ensemble of {labels[swamp]}'s particles",
                  markdown_table(ens, "pruned", "label", "ensemble_test_acc", 100)]
    last = acc[acc["cycle"] == acc["cycle"].max()]
    parts += ["### Cost to reach the final sparsity", markdown_table(
        last.melt(["label", "seed"], ["particle_epochs", "cumulative_seconds"], "quantity"), "label", "quantity",
        "value", digits=0)]
    for kind, title in (("pairs", "between particle pairs of a cycle"),
                        ("consecutive", "between the solutions of cycles k-1 and k")):
        frame = st.barrier_frame(root, kind)
        if not frame.empty:
            frame = sparsity_columns(frame[frame["split"] == "test"], cycles)
            frame = frame.assign(label=frame["method"].map(labels))
            parts += [f"### Test loss barrier {title}",
                      markdown_table(frame, "pruned", "label", "loss_barrier", digits=3),
                      f"### Test error barrier (%) {title}",
                      markdown_table(frame, "pruned", "label", "error_barrier", 100)]
    hull = st.hull_frame(root)
    if not hull.empty:
        hull = sparsity_columns(hull, cycles).assign(label=lambda f: f["method"].map(labels))
        parts += ["### Mean test loss over the particles' convex hull",
                  markdown_table(hull, "pruned", "label", "loss", digits=3),
                  "### Fraction of hull samples at or below the worst particle's test loss",
                  markdown_table(hull.assign(below=hull["below_worst_vertex"].astype(float)), "pruned", "label",
                                 "below", digits=2)]
    hessian = st.hessian_frame(root)
    if not hessian.empty:
        hessian = sparsity_columns(hessian, cycles).assign(label=lambda f: f["method"].map(labels))
        parts += ["### Hessian trace of the solution (Hutchinson)",
                  markdown_table(hessian, "pruned", "label", "trace", digits=1)]
    parts.append(claims_report(root, None if cycles is None else list(cycles)))
    return "\n\n".join(parts) + "\n"


def directory_report(root: str | Path, cycles: Sequence[int] | None = None, *, trust_code: bool = False) -> str:
    """What ``python -m studies.report DIR`` prints: :func:`study_report`, then the controls that
    ``python -m studies.controls DIR`` cached (:func:`studies.controls.controls_section`: each treatment beside its
    control). A family of studies (``family.json``, its studies under ``cells/``, no ``study.json``) gets one
    pointer to each cell's report and the controls; another directory with cached controls but no ``study.json``
    (a directory of runs) the controls alone. ``cycles`` selects the study tables' cycles; ``trust_code`` allows
    the controls to build a ``PACKAGE.MODULE:CALLABLE`` model the runs name (:func:`cached_controls`)."""
    root = Path(root)
    controls = controls_section(root, trust_code=trust_code)
    if (root / MANIFEST).is_file() or (controls is None and not (root / FAMILY_MANIFEST).is_file()):
        return study_report(root, cycles) + ("" if controls is None else f"\n{controls}\n")
    parts = []
    if (root / FAMILY_MANIFEST).is_file():
        cells = sorted(p for p in (root / "cells").glob("*") if p.is_dir())
        parts.append("### Cells\n\n" + "\n".join(f"- {p.name}: `python -m studies.report {p}`" for p in cells))
    parts.append(controls or f"No controls are cached yet: run python -m studies.controls {root}")
    return "\n\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m studies.report",
                            description="Print a study's tables (mean ± std over seeds) as Markdown.")
    parser.add_argument("study", metavar="DIR", help="a study directory of python -m studies.grid; its "
                        "barrier, hull and Hessian tables need python -m studies.analyse DIR first, its controls "
                        "python -m studies.controls DIR (a family of studies, or a directory of runs: its controls)")
    parser.add_argument("--cycles", type=cycle_list, default=None, metavar="K,K,...",
                        help="cycles to show (default all)")
    add_dataclass_arguments(parser, EvalOptions, only=("trust_code",))
    args = parser.parse_args(argv)
    print(directory_report(args.study, args.cycles, trust_code=args.trust_code))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
