"""SWAMP's gain over IMP against the training budget per cycle, from several studies.

Each study (:mod:`training.study`) is one budget: the epochs every particle trains per cycle (its
``--epochs``, or the preset's). All else equal, and the same seeds, SWAMP (the study's first
``swamp-nN``) and IMP are compared paired per seed and cycle, d_{k,s} = acc_SWAMP - acc_IMP
(:func:`landscape.study_claims.paired`). Budgets differ in cost too: SWAMP with N particles trains N
times IMP's particle-epochs in every budget.

``python -m landscape.study_budget DIR [DIR ...] [--cycles K,...]`` prints the Markdown table;
``analysis_notebooks/06_training_budget.ipynb`` draws :func:`budget_figure`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from landscape import study_tables as st
from landscape.study_claims import paired
from landscape.study_figures import panels
from training.errors import UserError, run_cli
from training.presets import PRESETS


def epochs_per_cycle(root: str | Path) -> int:
    """The study's epochs per cycle: its ``--epochs`` override, else its preset's."""
    manifest = st.read_manifest(root)
    return int(manifest["settings"].get("epochs") or PRESETS[manifest["preset"]]["epochs"])


def budget_frame(studies: Sequence[str | Path]) -> pd.DataFrame:
    """One row per (study, cycle): ``epochs``, ``cycle``, ``sparsity``, the paired SWAMP - IMP test
    accuracy difference (``mean``, ``std``, ``seeds``, ``positive``, ``p_value``) and both methods'
    accuracies over the same seeds, mean and std (``swamp_acc``, ``swamp_acc_std``, ``imp_acc``,
    ``imp_acc_std``), sorted by epochs and cycle."""
    rows = []
    for root in studies:
        roles = st.roles(root)
        swamp, imp = roles["swamp"], roles["imp"]
        if swamp is None or imp is None:
            raise UserError(f"study {root} has no SWAMP (swamp-nN) or no IMP sub-runs to compare")
        acc = st.accuracy_frame(root)
        both = acc[acc["method"].isin([swamp, imp])].pivot_table("average_test_acc", ["cycle", "seed"], "method")
        both = both.dropna()  # the seeds that paired() compares
        mean, std = both.groupby(level="cycle").mean(), both.groupby(level="cycle").std(ddof=1)
        for row in paired(acc, "average_test_acc", swamp, imp):
            rows.append({"study": str(root), "epochs": epochs_per_cycle(root), "swamp": swamp,
                         **dataclasses.asdict(row), "swamp_acc": mean.at[row.cycle, swamp],
                         "swamp_acc_std": std.at[row.cycle, swamp], "imp_acc": mean.at[row.cycle, imp],
                         "imp_acc_std": std.at[row.cycle, imp]})
    if not rows:
        raise UserError("no cycle is finished by both SWAMP and IMP in these studies")
    frame = pd.DataFrame(rows).sort_values(["epochs", "cycle"], ignore_index=True)
    twice = frame.groupby(["epochs", "cycle"]).size()
    if (twice > 1).any():
        raise UserError(f"two studies train {twice[twice > 1].index[0][0]} epochs per cycle; give one per budget")
    return frame


def budget_table(frame: pd.DataFrame, cycles: Sequence[int] | None = None) -> str:
    """Markdown: per budget and cycle, IMP's and SWAMP's accuracy and their paired difference (points)."""
    lines = ["| epochs per cycle | pruned | IMP | SWAMP | SWAMP − IMP (mean ± std) | seeds SWAMP > IMP | "
             "paired t-test p |", "|---|---|---|---|---|---|---|"]
    for r in frame.itertuples():
        if cycles is not None and r.cycle not in cycles:
            continue
        std = "–" if math.isnan(r.std) else f"{100 * r.std:.2f}"
        p = "–" if math.isnan(r.p_value) else f"{r.p_value:.3f}"
        lines.append(f"| {r.epochs} | {100 * r.sparsity:.1f}% | {100 * r.imp_acc:.2f} | {100 * r.swamp_acc:.2f} | "
                     f"{100 * r.mean:+.2f} ± {std} | {r.positive}/{r.seeds} | {p} |")
    return "\n".join(lines)


def budget_figure(frame: pd.DataFrame) -> Figure:
    """(a) SWAMP - IMP against sparsity, one line (+- 1 std between seeds) per budget; (b) at the
    final sparsity of each study, IMP's and SWAMP's accuracy (+- 1 std) against epochs per cycle."""
    fig, (left, right) = panels(2)
    for epochs, group in frame.groupby("epochs"):
        xs, mean, std = 100 * group["sparsity"], 100 * group["mean"], 100 * group["std"].fillna(0.0)
        left.plot(xs, mean, marker="o", markersize=3, label=f"{epochs} epochs per cycle")
        left.fill_between(xs, mean - std, mean + std, alpha=0.2, color=left.lines[-1].get_color())
    left.axhline(0.0, color="black", linewidth=0.8)
    left.set(xlabel="sparsity (%)", ylabel="SWAMP − IMP test accuracy (points)",
             title="(a) paired gain of SWAMP over IMP")
    left.legend(fontsize="small")
    last = frame.loc[frame.groupby("epochs")["cycle"].idxmax()]
    for method, marker in (("imp", "s"), ("swamp", "o")):
        right.errorbar(last["epochs"], 100 * last[f"{method}_acc"], yerr=100 * last[f"{method}_acc_std"].fillna(0.0),
                       marker=marker, capsize=3, label=method.upper())
    right.set_xscale("log", base=2)
    right.set_xticks(list(last["epochs"]), [str(e) for e in last["epochs"]])
    sparsity = ", ".join(sorted({f"{100 * s:.1f}%" for s in last["sparsity"]}))
    right.set(xlabel="epochs per cycle", ylabel="test accuracy (%)", title=f"(b) at the final sparsity ({sparsity})")
    right.legend(fontsize="small")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m landscape.study_budget", description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", metavar="DIR", help="study directories, one per budget")
    parser.add_argument("--cycles", default=None, metavar="K,K,...", help="cycles to show (default all)")
    args = parser.parse_args(argv)
    try:
        cycles = [int(k) for k in args.cycles.split(",")] if args.cycles else None
    except ValueError:
        raise UserError(f"--cycles takes integers separated by commas, not {args.cycles!r}") from None
    frame = budget_frame(args.studies)
    print(budget_table(frame, cycles))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
