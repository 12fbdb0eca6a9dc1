"""The MNIST-1D paper's lottery-ticket experiment, run with the toolkit's command line, beside the published numbers.

Greydanus & Kobak, "Scaling down deep learning with MNIST-1D" (ICML 2024), notebook ``lottery-tickets.ipynb`` of
github.com/greydanus/mnist1d: a residual MLP (40-500-500-10, h_2 = h_1 + relu(W_2 h_1 + b_2)), Adam at a constant
learning rate 0.02, no weight decay, batches of 100, 1501 steps per round; 100 rounds at sparsities
``linspace(0, 1, 100)`` (1/99 of all weights more per round), layer-wise magnitude pruning of weights and biases,
every round rewound to the initialisation; the baseline prunes at random. The notebook prints each round's final
("last") and best ("max", over evaluations every 100 steps) test accuracy for two trials: :data:`PUBLISHED`.

The toolkit's protocol (:func:`lottery_command`): ``python -m training.swamp`` with one particle and no SWA
(IMP), ``--prune-schedule linear --prune-ratio 1/99`` for 99 cycles (sparsity k/99 in cycle k; the round at
sparsity 1, chance accuracy, is left out), ``--prune-biases --prune-method layerwise``, ``--rewind-epochs 0``
(the ticket is the initialisation), 38 epochs of 40 batches (1520 steps). The random baseline
(:func:`random_command`) trains one dense cycle and one cycle at the table's sparsity with a random mask: a
fresh random mask per sparsity, as the notebook draws one, at the cost of 2 cycles instead of all of them.
Differences that remain, documented in docs/reproductions.md: batches drawn in a shuffled order per epoch (the
notebook walks the training set in order), random pruning across all layers at once (the notebook: per
layer), 1520 steps instead of 1502, and only the final accuracy (the notebook's "max" is selected on the test set).

``python -m studies.reproductions.lottery --out runs/lottery --seeds 0 1 2 --jobs 2`` runs (or resumes) every
run and writes ``OUT/lottery.csv`` (method, seed, sparsity, test accuracy), then prints the table of
docs/reproductions.md; ``--quick`` runs a tiny version (narrow MLP, 2 epochs, a few cycles) that checks the
plumbing in seconds.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.artifacts.atomic import atomic_write_text
from studies.reproductions.common import save_png

ROUNDS = 100  # the notebook's sparsity_schedule = np.linspace(0, 1, 100)
RATIO = 1.0 / (ROUNDS - 1)
# The notebook's printed rounds #1, #50, #80, ... #99 (round = cycle + 1).
TABLE_CYCLES = (0, 49, 79, 89, 94, 96, 97, 98)
# The notebook's printed (last_acc, max_acc) of trials 0 and 1, in %, by cycle (sparsity cycle / 99).
PUBLISHED: dict[str, dict[int, tuple[tuple[float, float], tuple[float, float]]]] = {
    "magnitude": {0: ((66.4, 66.4), (64.8, 65.4)), 49: ((68.6, 68.6), (69.1, 70.4)), 79: ((72.9, 72.9), (72.1, 72.1)),
                  89: ((74.3, 74.3), (74.1, 74.1)), 94: ((69.2, 71.8), (70.5, 70.8)), 96: ((68.1, 69.0), (67.3, 68.3)),
                  97: ((63.0, 63.9), (63.8, 65.0)), 98: ((41.9, 41.9), (41.5, 42.4))},
    "random": {0: ((60.6, 63.8), (61.4, 65.2)), 49: ((63.6, 65.5), (62.1, 64.2)), 79: ((68.6, 70.4), (66.3, 69.7)),
               89: ((60.5, 64.6), (65.7, 65.7)), 94: ((55.9, 58.0), (54.6, 56.1)), 96: ((41.2, 41.2), (43.7, 43.9)),
               97: ((34.6, 35.0), (27.2, 27.4)), 98: ((16.7, 16.9), (15.4, 17.1))},
}
# The MNIST-1D README's baseline test accuracies (%).
PUBLISHED_BASELINES = {"logistic regression": 32.0, "MLP": 68.0, "CNN": 94.0, "GRU": 91.0}


def _imp_command(model: str, kwargs: dict[str, object], lr: str, epochs: int, seed: int, out: Path,
                 *extra: str) -> list[str]:
    """``python -m training.swamp`` in the paper's training setup: Adam at a constant ``lr``, no weight decay,
    batches of 100, one particle without SWA, every cycle rewound to the initialisation; then ``extra``."""
    return [sys.executable, "-m", "training.swamp", "--model", model, "--model-kwargs", json.dumps(kwargs),
            "--optimizer", "adam", "--lr", lr, "--weight-decay", "0", "--schedule", "constant",
            "--batch-size", "100", "--epochs", str(epochs), "--particles", "1", "--no-swa", "--rewind-epochs", "0",
            "--seed", str(seed), "--no-progress", "--device", "cpu", "--out", str(out), *extra]


def _lottery_mlp(seed: int, out: Path, quick: bool, *extra: str) -> list[str]:
    """The notebook's residual MLP (hidden 500; ``quick``: 32, 2 epochs), its weights and biases pruned on the
    linear schedule."""
    return _imp_command("mlp", {"hidden": 32 if quick else 500, "residual": True}, "0.02", 2 if quick else 38, seed,
                        out, "--prune-biases", "--prune-schedule", "linear", *extra)


def lottery_command(seed: int, out: Path, cycles: int = max(TABLE_CYCLES) + 1, quick: bool = False) -> list[str]:
    """The command line of one lottery-ticket run: IMP with layer-wise magnitude pruning, sparsity k/99 in cycle k.

    Example:
        >>> " ".join(lottery_command(0, Path("runs/l"))[-6:])
        '--prune-method layerwise --prune-ratio 0.010101010101010102 --cycles 99'
    """
    return _lottery_mlp(seed, out, quick, "--prune-method", "layerwise", "--prune-ratio", repr(RATIO),
                        "--cycles", str(cycles))


def random_command(seed: int, cycle: int, out: Path, quick: bool = False) -> list[str]:
    """The command line of one random-pruning run: a dense cycle, then one at sparsity ``cycle``/99 with a random mask.

    Example:
        >>> " ".join(random_command(0, 49, Path("runs/r"))[-6:])
        '--prune-method random --prune-ratio 0.494949494949495 --cycles 2'
    """
    return _lottery_mlp(seed, out, quick, "--prune-method", "random", "--prune-ratio", repr(cycle * RATIO),
                        "--cycles", "2")


BASELINES = {"MLP": ("mlp", {"residual": True}), "CNN": ("cnn1d", {})}  # the README's row: our residual MLP and cnn1d


def baseline_command(name: str, seed: int, out: Path, quick: bool = False) -> list[str]:
    """The command line of one dense baseline of the MNIST-1D README's table in the paper's training setup
    (``notebooks/train.py``: Adam at a constant 0.01, no weight decay, batches of 100, 8000 steps = 200 epochs).
    ``MLP`` is the paper's own (residual, hidden 100); ``CNN`` is the toolkit's ``cnn1d`` (four convolutions with
    BatchNorm), not the paper's three-convolution ``ConvBase``.

    Example:
        >>> " ".join(baseline_command("MLP", 0, Path("b"))[3:7])
        '--model mlp --model-kwargs {"residual": true}'
    """
    model, kwargs = BASELINES[name]
    return _imp_command(model, kwargs, "0.01", 2 if quick else 200, seed, out, "--cycles", "1")


def run_resuming(command: list[str], out: Path) -> None:
    """Run ``command`` (with ``--resume`` where ``out`` already holds a run), one torch thread unless
    ``OMP_NUM_THREADS`` says otherwise; a failure raises RuntimeError with the command's last error line."""
    if (out / "config.json").is_file():
        command = [*command, "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"{' '.join(command[2:4])} --out {out} failed (exit {done.returncode}): {tail}")


def run_all_resuming(tasks: Iterable[tuple[list[str], Path]], jobs: int = 1, finished: str | None = None) -> None:
    """:func:`run_resuming` of every (command, run folder) in ``tasks``, ``jobs`` at once; with ``finished`` (a
    cycle folder such as ``cycle_03``) a run whose ``finished/metrics.json`` exists is not started again."""
    todo = [task for task in tasks if finished is None or not (task[1] / finished / "metrics.json").is_file()]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda task: run_resuming(*task), todo))


def accuracies(out: Path, column: str = "average_test_acc") -> dict[int, tuple[float, float]]:
    """cycle -> (sparsity, test accuracy in %) of a finished run's results.csv (``column``: which accuracy)."""
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {int(r["cycle"]): (float(r["sparsity"]), 100.0 * float(r[column])) for r in rows}


def run_all(out: Path, seeds: Sequence[int], jobs: int = 1, quick: bool = False) -> list[dict[str, object]]:
    """Run (or resume) the lottery and random runs of ``seeds`` under ``out``; returns the rows of ``lottery.csv``."""
    cycles = 4 if quick else max(TABLE_CYCLES) + 1
    wanted = [c for c in TABLE_CYCLES if c < cycles]
    tasks: list[tuple[list[str], Path]] = []
    for seed in seeds:
        tasks.append((lottery_command(seed, out / f"lottery-s{seed}", cycles, quick), out / f"lottery-s{seed}"))
        tasks += [(random_command(seed, c, out / f"random-c{c}-s{seed}", quick), out / f"random-c{c}-s{seed}")
                  for c in wanted if c > 0]
        tasks += [(baseline_command(name, seed, out / f"baseline-{name.lower()}-s{seed}", quick),
                   out / f"baseline-{name.lower()}-s{seed}") for name in BASELINES]
    run_all_resuming(tasks, jobs)
    rows: list[dict[str, object]] = []
    for seed in seeds:
        lottery = accuracies(out / f"lottery-s{seed}")
        rows += [{"method": "magnitude", "seed": seed, "cycle": c, "sparsity": s, "test_acc": acc}
                 for c, (s, acc) in sorted(lottery.items())]  # every cycle: the whole curve
        for c in wanted:
            random = lottery[0] if c == 0 else accuracies(out / f"random-c{c}-s{seed}")[1]
            rows.append({"method": "random", "seed": seed, "cycle": c, "sparsity": random[0], "test_acc": random[1]})
        for name in BASELINES:
            dense = accuracies(out / f"baseline-{name.lower()}-s{seed}")[0]
            rows.append({"method": f"baseline {name}", "seed": seed, "cycle": 0, "sparsity": 0.0, "test_acc": dense[1]})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["method", "seed", "cycle", "sparsity", "test_acc"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "lottery.csv", buffer.getvalue())
    return rows


def _mean_se(values: Sequence[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "-"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) / len(values) ** 0.5:.1f}"


def table(rows: Sequence[dict[str, object]]) -> str:
    """The markdown table of docs/reproductions.md: per sparsity and method, the published last (max) accuracies
    of the notebook's two trials and the toolkit's mean ± standard error over seeds.

    Example:
        >>> row = {"seed": 0, "cycle": 0, "sparsity": 0.0, "test_acc": 66.0}
        >>> rows = [{**row, "method": m} for m in ("magnitude", "random")]
        >>> print(table(rows).splitlines()[2])
        | 0.0% | 66.4, 64.8 (66.4, 65.4) | 66.0 | 60.6, 61.4 (63.8, 65.2) | 66.0 |
    """
    lines = ["| sparsity | magnitude, published: last (max) | magnitude, toolkit | random, published: last (max) "
             "| random, toolkit |", "| --- | --- | --- | --- | --- |"]
    for c in [c for c in TABLE_CYCLES if any(r["cycle"] == c for r in rows)]:
        cells = [f"{100 * c / (ROUNDS - 1):.1f}%"]
        for method in ("magnitude", "random"):
            (l0, m0), (l1, m1) = PUBLISHED[method][c]
            ours = [float(r["test_acc"]) for r in rows if r["method"] == method and r["cycle"] == c]  # type: ignore[arg-type]
            cells += [f"{l0}, {l1} ({m0}, {m1})", _mean_se(ours)]
        lines.append("| " + " | ".join(cells) + " |")
    baselines = [name for name in PUBLISHED_BASELINES if any(r["method"] == f"baseline {name}" for r in rows)]
    if baselines:
        lines += ["", "| dense baseline | published | toolkit |", "| --- | --- | --- |"]
        for name in baselines:
            ours = [float(r["test_acc"]) for r in rows if r["method"] == f"baseline {name}"]  # type: ignore[arg-type]
            lines.append(f"| {name} | {PUBLISHED_BASELINES[name]:.0f} | {_mean_se(ours)} |")
    return "\n".join(lines)


def figure(rows: Sequence[dict[str, object]], path: Path) -> None:
    """Test accuracy against sparsity: the toolkit's lottery tickets (mean over seeds, every cycle, with the
    seeds' range) and random masks (mean and range at the table's sparsities) beside the notebook's two trials
    (final accuracies, open markers); written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=150)
    for method, color, label in (("magnitude", "tab:blue", "lottery ticket (layer-wise magnitude)"),
                                 ("random", "tab:red", "random mask")):
        cycles = sorted({int(r["cycle"]) for r in rows if r["method"] == method})  # type: ignore[call-overload]
        accs = [[float(r["test_acc"]) for r in rows if r["method"] == method and r["cycle"] == c]  # type: ignore[arg-type]
                for c in cycles]
        x = 100 * np.array(cycles) / (ROUNDS - 1)
        seeds = len(accs[0]) if accs else 0
        ax.plot(x, [np.mean(a) for a in accs], "-" if method == "magnitude" else "o-", color=color, ms=4,
                label=f"{label}: toolkit, mean of {seeds} seeds")
        ax.fill_between(x, [min(a) for a in accs], [max(a) for a in accs], color=color, alpha=0.2, lw=0)
        published = PUBLISHED[method]
        px = [100 * c / (ROUNDS - 1) for c in published for _ in range(2)]
        py = [trial[0] for c in published for trial in published[c]]
        ax.plot(px, py, "s" if method == "magnitude" else "^", mfc="none", color=color, ms=6,
                label=f"{label}: published notebook, 2 trials (final accuracy)")
    ax.set_xlabel("sparsity (% of weights and biases pruned)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MNIST-1D lottery tickets: residual MLP 40-500-500-10, Adam, rewind to initialisation")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.reproductions.lottery", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/lottery"),
                        help="folder of the runs (default %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a tiny version that checks the plumbing")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    try:
        rows = run_all(args.out, args.seeds, args.jobs, args.quick)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table(rows))
    figure(rows, args.out / "lottery.png")
    print(f"figure: {args.out / 'lottery.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
