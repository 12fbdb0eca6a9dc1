"""SWAMP's gain over IMP against the training budget per cycle, from several studies.

Each study (:mod:`studies.grid.cli`) is one budget: the epochs E every particle trains per cycle (its
``--epochs``, or the preset's). Every study's SWAMP (its method of role ``swamp``) and IMP sub-runs are
*arms* named ``SWAMP@E`` and ``IMP@E``, and two arms are compared paired per seed and cycle,
d_{k,s} = acc_A - acc_B (:func:`studies.claims.paired`; the same seed gives the same ticket):

* at the same budget, SWAMP@E against IMP@E (:func:`budget_frame`), which is the paper's comparison:
  SWAMP costs N times IMP's particle-epochs;
* at the same cost, SWAMP@E with N particles against IMP@(N E) (:func:`equal_cost_frame`): both
  spend r + N E (k + 1) particle-epochs to reach cycle k (r: the ticket's epochs).

Each table is judged by the project's one rule (:func:`studies.verdict.paired_verdicts`: claim "SWAMP is more
accurate", δ = 0.5 points, Holm over the table's rows). ``python -m studies.budget DIR [DIR ...] [--cycles K,...]``
prints both tables in Markdown;
``analysis_notebooks/06_training_budget.ipynb`` draws :func:`budget_figure`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from core.artifacts.jsonfile import brief_repr
from core.errors import ArgumentParser, UserError, run_cli
from landscape.tools.cli import cycle_list
from studies import tables as st
from studies.claims import paired
from studies.figures import panels
from studies.grid.manifest import MANIFEST
from studies.report import finished_accuracy
from studies.verdict import ACCURACY_EFFECT, Claim, paired_verdicts
from training.presets import PRESETS


def epochs_per_cycle(root: str | Path) -> int:
    """The study's epochs per cycle: its ``--epochs`` override, else its preset's."""
    manifest = st.read_manifest(root)
    settings, preset = manifest.get("settings"), manifest.get("preset")
    epochs = settings.get("epochs") if isinstance(settings, dict) else None
    if type(epochs) is int and epochs >= 1:
        return epochs
    if epochs is None and isinstance(preset, str) and preset in PRESETS:
        return int(PRESETS[preset]["epochs"])
    raise UserError(f"{Path(root) / MANIFEST} is damaged (no epochs per cycle: its 'settings' is {brief_repr(settings)}"
                    f" and its 'preset' {brief_repr(preset)}); restore it, or start the study again in another --out")


def arms_frame(studies: Sequence[str | Path]) -> pd.DataFrame:
    """Every finished cycle of the studies' SWAMP and IMP sub-runs, with ``arm`` (``SWAMP@E``,
    ``IMP@E``), ``role``, ``epochs`` and the columns of :func:`studies.tables.accuracy_frame`."""
    frames = []
    for root in studies:
        roles, epochs = st.roles(root), epochs_per_cycle(root)
        if roles["swamp"] is None or roles["imp"] is None:
            raise UserError(f"study {root} has no SWAMP (swamp-nN) or no IMP sub-runs to compare")
        acc = finished_accuracy(root)
        for role in ("swamp", "imp"):
            rows = acc[acc["method"] == roles[role]]
            frames.append(rows.assign(arm=f"{role.upper()}@{epochs}", role=role, epochs=epochs))
    frame = pd.concat(frames, ignore_index=True)
    twice = frame.loc[frame.duplicated(["arm", "seed", "cycle"]), "epochs"]
    if len(twice):
        raise UserError(f"two studies train {twice.iloc[0]} epochs per cycle; give one study per budget")
    return frame


def compare(arms: pd.DataFrame, a: str, b: str) -> list[dict]:
    """Per cycle: :func:`paired` ``a`` - ``b`` rows, plus each arm's mean and std accuracy over the
    compared seeds and its particle-epochs to reach that cycle (``a_acc``, ``a_acc_std``, ``a_cost``...)."""
    wide = arms[arms["arm"].isin([a, b])].pivot_table(["average_test_acc", "particle_epochs"], ["cycle", "seed"],
                                                      "arm").dropna()
    if wide.empty:
        return []
    acc, cost = wide["average_test_acc"].groupby(level="cycle"), wide["particle_epochs"].groupby(level="cycle")
    mean, std, spent = acc.mean(), acc.std(ddof=1), cost.mean()
    epochs = arms.drop_duplicates("arm").set_index("arm")["epochs"]
    return [{"a": a, "b": b, "a_epochs": int(epochs[a]), "b_epochs": int(epochs[b]), **dataclasses.asdict(row),
             **{f"{side}_{key}": table.at[row.cycle, arm] for side, arm in (("a", a), ("b", b))
                for key, table in (("acc", mean), ("acc_std", std), ("cost", spent))}}
            for row in paired(arms, "average_test_acc", a, b, column="arm")]


def _frame(rows: list[dict]) -> pd.DataFrame:
    columns = ["a", "b", "a_epochs", "b_epochs", "cycle", "sparsity", "mean", "std", "seeds", "positive", "ties",
               "negative", "p_value", "differences",
               "a_acc", "a_acc_std", "a_cost", "b_acc", "b_acc_std", "b_cost"]
    return pd.DataFrame(rows, columns=columns).sort_values(["a_epochs", "b_epochs", "cycle"], ignore_index=True)


def budget_frame(studies: Sequence[str | Path] | pd.DataFrame) -> pd.DataFrame:
    """SWAMP@E - IMP@E for every study's E, per cycle (columns of :func:`compare`); ``studies`` may
    also be their :func:`arms_frame`."""
    arms = studies if isinstance(studies, pd.DataFrame) else arms_frame(studies)
    rows = [r for e in sorted(arms["epochs"].unique()) for r in compare(arms, f"SWAMP@{e}", f"IMP@{e}")]
    if not rows:
        raise UserError("no cycle is finished by both SWAMP and IMP in these studies")
    return _frame(rows)


def equal_cost_frame(studies: Sequence[str | Path] | pd.DataFrame) -> pd.DataFrame:
    """SWAMP@E (N particles) - IMP@(N E), for every E whose N E is also among the studies' budgets;
    ``studies`` may also be their :func:`arms_frame`."""
    arms = studies if isinstance(studies, pd.DataFrame) else arms_frame(studies)
    swamp = arms[arms["role"] == "swamp"].drop_duplicates("arm")
    imp_epochs = set(arms.loc[arms["role"] == "imp", "epochs"])
    rows = [r for e, n in zip(swamp["epochs"], swamp["particles"], strict=True) if n * e in imp_epochs
            for r in compare(arms, f"SWAMP@{e}", f"IMP@{n * e}")]
    return _frame(rows)


def comparison_table(frame: pd.DataFrame, cycles: Sequence[int] | None = None) -> str:
    """Markdown: per comparison and cycle, both arms' accuracy and cost, their paired difference and the one rule's
    verdict on "SWAMP is more accurate" (:func:`studies.verdict.paired_verdicts`, claim ``greater``, δ = 0.5 points,
    Holm over the rows shown)."""
    shown = [r for r in frame.itertuples() if cycles is None or r.cycle in cycles]
    verdicts = paired_verdicts({str(k): [100 * d for d in r.differences] for k, r in enumerate(shown)},
                               Claim("greater", ACCURACY_EFFECT))
    lines = [f"Claim: SWAMP − IMP greater, δ = {ACCURACY_EFFECT} points; Holm over the {len(shown)} rows.", "",
             "| SWAMP epochs per cycle | IMP epochs per cycle | pruned | particle-epochs SWAMP / IMP | IMP | SWAMP | "
             "SWAMP − IMP (mean ± std) | seeds SWAMP > / = / < IMP | simultaneous interval | Holm p | verdict |",
             "|---" * 11 + "|"]
    for r, v in zip(shown, verdicts, strict=True):
        std = "–" if math.isnan(r.std) else f"{100 * r.std:.2f}"
        lines.append(f"| {r.a_epochs} | {r.b_epochs} | {100 * r.sparsity:.1f}% | {r.a_cost:.0f} / {r.b_cost:.0f} | "
                     f"{100 * r.b_acc:.2f} ± {100 * r.b_acc_std:.2f} | {100 * r.a_acc:.2f} ± {100 * r.a_acc_std:.2f} | "
                     f"{100 * r.mean:+.2f} ± {std} | {r.positive}/{r.ties}/{r.negative} | " + " | ".join(v.cells())
                     + " |")
    return "\n".join(lines)


def budget_figure(same_budget: pd.DataFrame) -> Figure:
    """(a) SWAMP - IMP at the same budget against sparsity, one line (+- 1 std between seeds) per budget;
    (b) at each budget's final sparsity, IMP's and SWAMP's accuracy (+- 1 std) against their cost in
    particle-epochs, each point labelled with its epochs per cycle."""
    fig, (left, right) = panels(2)
    for epochs, group in same_budget.groupby("a_epochs"):
        xs, mean, std = 100 * group["sparsity"], 100 * group["mean"], 100 * group["std"].fillna(0.0)
        left.plot(xs, mean, marker="o", markersize=3, label=f"{epochs} epochs per cycle")
        left.fill_between(xs, mean - std, mean + std, alpha=0.2, color=left.lines[-1].get_color())
    left.axhline(0.0, color="black", linewidth=0.8)
    left.set(xlabel="sparsity (%)", ylabel="SWAMP − IMP test accuracy (points)",
             title="(a) paired gain of SWAMP over IMP, same budget")
    left.legend(fontsize="small")
    last = same_budget.loc[same_budget.groupby("a_epochs")["cycle"].idxmax()]
    for side, name, marker in (("b", "IMP", "s"), ("a", "SWAMP", "o")):
        right.errorbar(last[f"{side}_cost"], 100 * last[f"{side}_acc"], yerr=100 * last[f"{side}_acc_std"].fillna(0.0),
                       marker=marker, capsize=3, label=name)
        for x, y, e in zip(last[f"{side}_cost"], 100 * last[f"{side}_acc"], last[f"{side}_epochs"], strict=True):
            right.annotate(f"{e}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize="x-small")
    right.set_xscale("log", base=2)
    costs = sorted({round(c) for c in (*last["a_cost"], *last["b_cost"])})
    right.set_xticks(costs, [str(c) for c in costs])
    right.minorticks_off()
    sparsity = ", ".join(sorted({f"{100 * s:.1f}%" for s in last["sparsity"]}))
    right.set(xlabel="particle-epochs (log scale); labels: epochs per cycle", ylabel="test accuracy (%)",
              title=f"(b) at the final sparsity ({sparsity}) against cost")
    right.legend(fontsize="small")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m studies.budget", description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", metavar="DIR", help="study directories, one per budget")
    parser.add_argument("--cycles", type=cycle_list, default=None, metavar="K,K,...",
                        help="cycles to show (default all)")
    args = parser.parse_args(argv)
    arms = arms_frame(args.studies)  # read every study once
    print("SWAMP against IMP at the same epochs per cycle:\n")
    print(comparison_table(budget_frame(arms), args.cycles))
    equal = equal_cost_frame(arms)
    if not equal.empty:
        print("\nSWAMP with N particles against IMP with N times the epochs per cycle (the same particle-epochs):\n")
        print(comparison_table(equal, args.cycles))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
