"""Flatness or averaging, the trace-matched control: IMP made as flat as SWAMP, beside SWAMP.

Where SWAMP's solutions are flatter than IMP's *and* more accurate (the controls grid, docs/controls.md: cnn1d at 8
epochs per cycle, SWAMP's raw Hessian trace 17-31% below IMP's and +0.44 points at 0-50% sparsity), is the gain the
flatness? This study makes IMP flatter by the two knobs known to flatten SGD solutions (a larger learning rate, a
smaller batch: Keskar et al. 2017, Jastrzębski et al. 2018), in a ladder of four arms chosen before the runs to
bracket SWAMP's trace, and asks, per arm and sparsity:

* is the flatter IMP as flat as SWAMP (its trace within ±10% of SWAMP's: ``equivalent``)?
* is SWAMP still more accurate than it (``greater``, δ = 0.5 points)? If SWAMP's lead survives an IMP of the same
  flatness, flatness alone does not explain it; if it vanishes, it is consistent with flatness.
* is the flatter IMP more accurate than IMP (``greater``, δ = 0.5 points)?
* with the batch size that suits IMP (32), is SWAMP still flatter (``less``, δ = 10%) and more accurate
  (``greater``, δ = 0.5 points) than IMP? This reruns SWAMP's two claims against a tuned baseline.

=========================  ======================================================================================
arm                        run (cnn1d, ticket after 2 dense epochs, 8 epochs per cycle, 4 cycles at 50% pruning)
=========================  ======================================================================================
``IMP``                    the controls grid's IMP (``OUT/grid/cnn1d-imp-sS``): LR 0.1, batches of 128
``SWAMP (N=4)``            the controls grid's SWAMP (``OUT/grid/cnn1d-swamp-sS``)
``IMP, LR 0.13`` / ``0.2`` IMP with the peak learning rate 1.3 / 2 times the grid's (``OUT/matched/cnn1d-imp-lrX-sS``)
``IMP, batch 64`` / ``32``  IMP with batches of 64 / 32 at LR 0.1 (``OUT/matched/cnn1d-imp-bX-sS``)
``SWAMP (N=4), batch 32``  the grid's SWAMP with batches of 32 (``OUT/matched/cnn1d-swamp-b32-sS``)
=========================  ======================================================================================

The learning rate and batch size also train the dense ticket, so the tuned arms start from their own ticket: they
are paired with SWAMP and IMP by seed (same initialisation and data-order seed), not by ticket. Traces are those
of :mod:`studies.controls` (raw Hutchinson trace over 32 probes of 1,024 seeded training samples, on the unpruned
coordinates, BatchNorm in eval mode; :func:`studies.controls.measurements.measure_row`), cached one JSON per
solution under ``OUT/analysis/matched``; the trace differences are relative, 100 (tr A − tr B) / tr B.

``python -m studies.reproductions.matched --out runs/controls --seeds 0-11 --jobs 2`` trains (or resumes) every run
(the grid's runs are those of ``studies.reproductions.controls`` under the same ``--out``), measures every trace,
writes ``OUT/matched.csv`` (model, method, seed, cycle, sparsity, test accuracy, raw trace) and ``OUT/matched.png``
and prints the tables of docs/reproductions.md; ``--from-csv docs/data/matched-mnist1d.csv`` prints them from the
committed per-seed data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from core.artifacts.atomic import atomic_write_text
from studies.reproductions import common
from studies.reproductions.common import (
    csv_pair,
    label_axes,
    map_processes,
    mean_half,
    mean_se,
    median,
    save_png,
    seed_values,
    study_main,
    verdict_lines,
)
from studies.reproductions.controls import CYCLES, train_commands
from studies.reproductions.lottery import run_all_resuming
from studies.verdict import ACCURACY_EFFECT, TRACE_EFFECT, Claim

MODEL = "cnn1d"
REWIND = 2
TUNED = {"IMP, LR 0.13": ("lr0.13", ["--lr", "0.13"]), "IMP, LR 0.2": ("lr0.2", ["--lr", "0.2"]),
         "IMP, batch 64": ("b64", ["--batch-size", "64"]), "IMP, batch 32": ("b32", ["--batch-size", "32"])}
# arm -> (run name, flags beside the grid's): a ladder around SWAMP's trace, which is 17-31% below IMP's
SWAMP_TUNED = {"SWAMP (N=4), batch 32": ("b32", ["--batch-size", "32"])}
# the grid's SWAMP with the batch size that suits IMP best: is SWAMP still ahead of a tuned IMP?
METHODS = ("IMP", "SWAMP (N=4)", *TUNED, *SWAMP_TUNED)
ACC_EFFECT = ACCURACY_EFFECT
FIELDS = ["model", "method", "seed", "cycle", "sparsity", "test_acc", "trace"]
TYPES = {"model": str, "method": str, "seed": int, "cycle": int, "sparsity": float, "test_acc": float,
         "trace": float}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "matched")


def runs(out: Path, seeds: Sequence[int], data_dir: Path, quick: bool = False) -> dict[tuple[str, int], tuple[list[str],
                                                                                                           Path]]:
    """(method, seed) -> (training command, run folder) of every arm.

    Example:
        >>> cmd, run = runs(Path("r"), [3], Path("data"))["IMP, LR 0.2", 3]
        >>> run.as_posix(), cmd[-2:]
        ('r/matched/cnn1d-imp-lr0.2-s3', ['--lr', '0.2'])
    """
    grid = {run.name: (cmd, run) for cmd, run in train_commands(out, seeds, data_dir, quick)
            if run.parent.name == "grid" and run.name.startswith(f"{MODEL}-")}
    plan = {}
    for seed in seeds:
        plan["IMP", seed] = grid[f"{MODEL}-imp-s{seed}"]
        plan["SWAMP (N=4)", seed] = grid[f"{MODEL}-swamp-s{seed}"]
        for kind, tuned in (("imp", TUNED), ("swamp", SWAMP_TUNED)):
            base = grid[f"{MODEL}-{kind}-s{seed}"][0]
            for method, (name, flags) in tuned.items():
                run = out / "matched" / f"{MODEL}-{kind}-{name}-s{seed}"
                cmd = [*base[:base.index("--out") + 1], str(run), *base[base.index("--out") + 2:], *flags]
                plan[method, seed] = (cmd, run)
    return plan


def solution(run: Path, cycle: int, cache: Path, data_dir: Path, known: Path | None = None) -> dict[str, float]:
    """The test accuracy (%), sparsity and raw Hessian trace of ``run``'s cycle solution, cached in ``cache``.

    The trace is :func:`studies.controls.measurements.measure_row`'s raw trace in the controls grid's settings;
    ``known``, a file of the controls grid's own cache (``OUT/analysis/controls/flatness``) holding that same
    measurement of this solution, is read instead of measuring again where it exists.
    """
    path = cache / f"{run.name}-c{cycle:02d}.json"
    if path.is_file():
        return json.loads(path.read_text())
    if known is not None and known.is_file():
        row = json.loads(known.read_text())["row"]
        value = {"trace": row["raw"], "test_acc": 100.0 * row["test_acc"], "sparsity": row["sparsity"]}
        atomic_write_text(path, json.dumps(value))
        return value
    from studies.controls.measurements import Measurement, Settings, measure_row

    row = measure_row(Measurement("flatness", path.stem, {}, (run / f"cycle_{cycle:02d}" / "average.safetensors",)),
                      Settings(rewind=REWIND, data_dir=str(data_dir)))
    metrics = json.loads((run / f"cycle_{cycle:02d}" / "metrics.json").read_text())
    value = {"trace": row["raw"], "test_acc": 100.0 * metrics["average"]["test_acc"],
             "sparsity": metrics["sparsity"]}
    atomic_write_text(path, json.dumps(value))
    return value


def solutions(tasks: Sequence[tuple[Path, int, Path, Path, Path | None]], jobs: int = 1) -> list[dict[str, float]]:
    """:func:`solution` of every ``(run, cycle, cache, data_dir, known)``, in order, ``jobs`` at once in worker
    processes (:func:`studies.reproductions.common.map_processes`: the traces are not thread-safe)."""
    return map_processes(solution, tasks, jobs)


def run_all(out: Path, seeds: Sequence[int], jobs: int = 1, quick: bool = False,
            data_dir: Path = Path("data")) -> list[dict[str, object]]:
    """Train (or resume) every run, measure every solution's trace (cached), and write ``OUT/matched.csv``; returns
    its rows."""
    plan = runs(out, seeds, data_dir, quick)
    cycles = 2 if quick else CYCLES
    run_all_resuming(plan.values(), jobs, f"cycle_{cycles - 1:02d}")
    cache = out / "analysis" / "matched"
    cache.mkdir(parents=True, exist_ok=True)
    keys = [(method, seed, cycle) for (method, seed) in plan for cycle in range(cycles)]
    found = solutions([(plan[k[0], k[1]][1], k[2], cache, data_dir, None) for k in keys], jobs)
    rows: list[dict[str, object]] = [
        {"model": MODEL, "method": method, "seed": seed, "cycle": cycle, "sparsity": v["sparsity"],
         "test_acc": round(v["test_acc"], 4), "trace": round(v["trace"], 6)}
        for (method, seed, cycle), v in zip(keys, found, strict=True)]
    write_csv(rows, out / "matched.csv")
    return rows


def _cells(rows: Sequence[dict[str, object]]) -> list[tuple[int, float]]:
    """(cycle, sparsity) of the rows, in order."""
    return sorted({(int(r["cycle"]), float(r["sparsity"])) for r in rows})  # type: ignore[call-overload]


def _paired(rows: Sequence[dict[str, object]], key: str, a: str, b: str, cycle: int, relative: bool = False
            ) -> list[float]:
    """A − B of column ``key`` per seed at ``cycle`` (in percent of B's with ``relative``)."""
    va, vb = (seed_values(rows, key, model=MODEL, method=m, cycle=cycle) for m in (a, b))
    return [100 * (va[s] - vb[s]) / vb[s] if relative else va[s] - vb[s] for s in sorted(va) if s in vb]


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The Markdown tables of docs/reproductions.md: accuracy (mean ± standard error) and median trace per arm, then
    the verdict tables of the four questions (the one rule, Holm over the tuned arms x sparsities of each).

    Example:
        >>> rows = [{"model": "cnn1d", "method": m, "seed": s, "cycle": 0, "sparsity": 0.0, "test_acc": 90.0 + s,
        ...          "trace": 50.0} for m in METHODS for s in range(2)]
        >>> line = tables(rows).splitlines()[2]
        >>> line.count("90.50 ± 0.50") == len(METHODS), line[:21]
        (True, '| 0.0% | 90.50 ± 0.50')
    """
    cells = _cells(rows)
    lines = ["| sparsity | " + " | ".join(f"{m}: test accuracy (%)" for m in METHODS) + " |",
             "|---|" + "---|" * len(METHODS)]
    for cycle, sparsity in cells:
        lines.append(f"| {100 * sparsity:.1f}% | " + " | ".join(
            mean_se(list(seed_values(rows, "test_acc", model=MODEL, method=m, cycle=cycle).values()))
            for m in METHODS) + " |")
    lines += ["", "| sparsity | " + " | ".join(f"{m}: median raw trace" for m in METHODS) + " |",
              "|---|" + "---|" * len(METHODS)]
    for cycle, sparsity in cells:
        medians = [sorted(seed_values(rows, "trace", model=MODEL, method=m, cycle=cycle).values()) for m in METHODS]
        lines.append(f"| {100 * sparsity:.1f}% | " + " | ".join(f"{median(v):.4g}" if v else "-" for v in medians)
                     + " |")
    questions = (
        ("trace", True, "SWAMP (N=4)", Claim("equivalent", TRACE_EFFECT),
         f"**The tuned IMP is as flat as SWAMP** (A = the tuned IMP, B = SWAMP; 100 (tr A − tr B) / tr B, %; claim: "
         f"equivalent within ±{TRACE_EFFECT:g}%", "%", 1),
        ("test_acc", False, "SWAMP (N=4)", None,
         f"**SWAMP is more accurate than IMP made as flat** (A = SWAMP, B = the tuned IMP; test accuracy, points; "
         f"claim: greater by {ACC_EFFECT:g}", "", 2),
        ("test_acc", False, "IMP", Claim("greater", ACC_EFFECT),
         f"**The flatter IMP is more accurate than IMP** (A = the tuned IMP, B = IMP; test accuracy, points; claim: "
         f"greater by {ACC_EFFECT:g}", "", 2))
    for key, relative, other, claim, heading, unit, digits in questions:
        family = {}
        for method in TUNED:
            for cycle, sparsity in cells:
                label = f"{method} | {100 * sparsity:.1f}%"
                family[label] = (_paired(rows, key, "SWAMP (N=4)", method, cycle) if claim is None
                                 else _paired(rows, key, method, other, cycle, relative))
        lines += verdict_lines(heading, family, claim or Claim("greater", ACC_EFFECT),
                               columns="arm | sparsity", digits=digits, unit=unit)
    swamp, imp = "SWAMP (N=4), batch 32", "IMP, batch 32"
    for key, relative, claim, heading, unit, digits in (
            ("trace", True, Claim("less", TRACE_EFFECT),
             f"**SWAMP is flatter than IMP when both train with batches of 32** (A = {swamp}, B = {imp}; "
             f"100 (tr A − tr B) / tr B, %; claim: smaller by {TRACE_EFFECT:g}%", "%", 1),
            ("test_acc", False, Claim("greater", ACC_EFFECT),
             f"**SWAMP is more accurate than IMP when both train with batches of 32** (A = {swamp}, B = {imp}; test "
             f"accuracy, points; claim: greater by {ACC_EFFECT:g}", "", 2)):
        family = {f"{100 * sparsity:.1f}%": _paired(rows, key, swamp, imp, cycle, relative)
                  for cycle, sparsity in cells}
        lines += verdict_lines(heading, family, claim, columns="sparsity", digits=digits, unit=unit)
    return "\n".join(lines)


def figure(rows: Sequence[dict[str, object]], path: Path) -> None:
    """Left: each arm's raw trace relative to SWAMP's; right: SWAMP's accuracy minus each arm's; both against
    sparsity, mean and 95% t interval over seeds; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _cells(rows)
    seeds = len(seed_values(rows, "test_acc", model=MODEL, method="IMP", cycle=cells[0][0]))
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 5.0), dpi=150)
    arms = ("IMP", *TUNED)
    for k, method in enumerate(arms):
        x = [100 * s + (k - 2) * 0.6 for _, s in cells]
        for ax, points in ((axes[0], [mean_half(_paired(rows, "trace", method, "SWAMP (N=4)", c, True))
                                      for c, _ in cells]),
                           (axes[1], [mean_half(_paired(rows, "test_acc", "SWAMP (N=4)", method, c))
                                      for c, _ in cells])):
            ax.errorbar(x, [p[0] for p in points], yerr=[p[1] for p in points], marker="osD^v"[k], ms=4, capsize=2,
                        lw=1, color=f"C{k}", label=method)
    swamp32, imp32 = "SWAMP (N=4), batch 32", "IMP, batch 32"
    if seed_values(rows, "test_acc", model=MODEL, method=swamp32, cycle=cells[0][0]):  # SWAMP at IMP's best batch
        x = [100 * s + 1.8 for _, s in cells]
        for ax, points, label in (
                (axes[0], [mean_half(_paired(rows, "trace", swamp32, "SWAMP (N=4)", c, True)) for c, _ in cells],
                 swamp32),
                (axes[1], [mean_half(_paired(rows, "test_acc", swamp32, imp32, c)) for c, _ in cells],
                 f"{swamp32} minus {imp32}")):
            ax.errorbar(x, [p[0] for p in points], yerr=[p[1] for p in points], marker="*", ms=6, capsize=2, lw=1,
                        ls="--", color="black", label=label)
    axes[0].axhspan(-TRACE_EFFECT, TRACE_EFFECT, color="grey", alpha=0.15, label=f"±{TRACE_EFFECT:g}% of SWAMP's")
    axes[0].axhline(0, color="black", lw=0.8)
    axes[1].axhline(0, color="black", lw=0.8, label="no difference")
    label_axes(axes[0], "sparsity (% of weights pruned)", "raw Hessian trace minus SWAMP's (% of SWAMP's)",
               f"cnn1d: how much sharper than SWAMP each IMP is\nmean and 95% interval of {seeds} seeds")
    label_axes(axes[1], "sparsity (% of weights pruned)", "SWAMP's test accuracy minus the arm's (points)",
               f"cnn1d: SWAMP's lead over each IMP\nmean and 95% interval of {seeds} seeds")
    for ax in axes:  # below each panel: inside, the legend would hide the points at 0% sparsity
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    fig.suptitle("IMP made flatter by a larger learning rate or smaller batches, beside SWAMP (MNIST-1D, 8 epochs per "
                 "cycle)", fontsize=10)
    save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "matched", __doc__, common.trainer(run_all), read_csv, tables, quick=True, figure=figure,
                      default_out="runs/controls")


if __name__ == "__main__":
    raise SystemExit(main())
