"""What the reproduction studies share: per-seed CSV files, the seeds flag, table cells and one command line.

Each study runs (or measures) into a folder of runs, writes its per-seed rows as a small CSV (committed under
docs/data/ for the published tables), and prints its tables from those rows alone; ``--from-csv`` prints them
from a committed CSV without running anything (:func:`study_main`).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.artifacts.atomic import atomic_write_bytes, atomic_write_text
from core.artifacts.ownership import check_out_text
from core.errors import UserError

Rows = list[dict[str, object]]
SEED_LIMIT = 1000  # ensemble members and other runs of seed s use seed s + 1000 j


def label_axes(ax: Any, xlabel: str, ylabel: str, title: str, legend_size: float = 6.5) -> None:
    """Axis labels, a 9-point title, a light grid and the legend of one panel of a study's figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="best")


def save_png(fig: Any, path: Path) -> None:
    """Lay out the matplotlib figure ``fig``, write it as a PNG to ``path`` atomically, and close it."""
    from matplotlib import pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def write_rows(rows: Sequence[Mapping[str, object]], path: Path, fields: Sequence[str]) -> None:
    """``rows`` as CSV with the columns ``fields``, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_rows(path: Path, types: Mapping[str, Callable[[str], Any]]) -> Rows:
    """The rows of a CSV written by :func:`write_rows`, each column parsed by its type in ``types``.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "r.csv"
        >>> write_rows([{"model": "mlp", "seed": 3, "acc": 61.5}], p, ["model", "seed", "acc"])
        >>> read_rows(p, {"model": str, "seed": int, "acc": float})
        [{'model': 'mlp', 'seed': 3, 'acc': 61.5}]
    """
    with open(path, newline="") as f:
        return [{k: parse(r[k]) for k, parse in types.items()} for r in csv.DictReader(f)]


def csv_pair(fields: Sequence[str], types: Mapping[str, Callable[[str], Any]], name: str
             ) -> tuple[Callable[[Sequence[Mapping[str, object]], Path], None], Callable[[Path], Rows]]:
    """A study's ``write_csv(rows, path)`` (the columns ``fields``, atomically) and ``read_csv(path)`` (each column
    parsed by ``types``) for its ``NAME.csv``."""

    def write_csv(rows: Sequence[Mapping[str, object]], path: Path) -> None:
        write_rows(rows, path, fields)

    def read_csv(path: Path) -> Rows:
        return read_rows(path, types)

    write_csv.__doc__ = f"``rows`` as ``{name}.csv`` (columns {', '.join(fields)}), written atomically."
    read_csv.__doc__ = f"The rows of a ``{name}.csv``, numbers parsed."
    return write_csv, read_csv


def verdict_lines(heading: str, family: Mapping[str, Sequence[float]], claim: Any, *,
                  columns: str = "model | sparsity", digits: int = 2, unit: str = "") -> list[str]:
    """A Markdown verdict table of the one rule (:func:`studies.verdict.paired_verdicts` of ``family`` under
    ``claim``), after a blank line and ``heading`` completed with the number of comparisons Holm runs over;
    comparisons without values leave the family, and no comparison at all gives no lines.

    Example:
        >>> from studies.verdict import Claim
        >>> lines = verdict_lines("**A beats B** (points", {"mlp | 0.0%": [1.0, 1.2, 0.9, 1.1, 1.0, 1.3], "x": []},
        ...                       Claim("greater", 0.5))
        >>> lines[1]
        '**A beats B** (points, Holm over 1)'
        >>> lines[-1]
        '| mlp | 0.0% | +1.08 | [+0.93, +1.24] (95.0%) | 6/0/0 | 9.6e-06 | **holds** |'
    """
    from studies.verdict import paired_verdicts

    family = {label: list(d) for label, d in family.items() if len(d)}
    if not family:
        return []
    lines = ["", f"{heading}, Holm over {len(family)})", "",
             f"| {columns} | mean | simultaneous interval | wins/ties/losses | Holm p | verdict |",
             "|" + "---|" * (columns.count("|") + 6)]
    for v in paired_verdicts(family, claim):
        interval, holm_p, outcome = v.cells(digits, missing="-")  # too few seeds: no interval, no p-value
        lines.append(f"| {v.label} | {v.mean:+.{digits}f}{unit} | {interval} | {v.record()} | {holm_p} | {outcome} |")
    return lines


def mean_se(values: Sequence[float], digits: int = 2) -> str:
    """``mean ± standard error`` of ``values`` (the value alone for one, ``-`` for none).

    Example:
        >>> mean_se([1.0, 2.0, 3.0])
        '2.00 ± 0.58'
    """
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "-"
    mean = sum(values) / len(values)
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def seed_values(rows: Sequence[Mapping[str, object]], key: str, **match: object) -> dict[int, float]:
    """seed -> the ``key`` column of the rows whose columns equal ``match``.

    Example:
        >>> seed_values([{"seed": 0, "arm": "a", "acc": 1.0}, {"seed": 1, "arm": "b", "acc": 2.0}], "acc", arm="b")
        {1: 2.0}
    """
    return {int(r["seed"]): float(r[key]) for r in rows  # type: ignore[call-overload,arg-type]
            if all(r[k] == v for k, v in match.items())}


def mean_half(values: Sequence[float]) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its 95% Student-t interval (0 for one value).

    Example:
        >>> [round(x, 3) for x in mean_half([1.0, 2.0, 3.0])]
        [2.0, 2.484]
    """
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (sorted or not).

    Example:
        >>> median([3.0, 1.0, 2.0, 10.0])
        2.5
    """
    v, n = sorted(values), len(values)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def seeds_flag(text: str) -> list[int]:
    """``0-11`` or ``0,1,2`` (or one seed) as a list of seeds, each below :data:`SEED_LIMIT`.

    Example:
        >>> seeds_flag("2-4"), seeds_flag("0,7")
        ([2, 3, 4], [0, 7])
    """
    try:
        if "-" in text:
            low, high = (int(x) for x in text.split("-"))
            seeds = list(range(low, high + 1))
        else:
            seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0-11 or 0,1,2, not {text!r}") from None
    if not seeds or min(seeds) < 0 or max(seeds) >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"seeds must be in 0..{SEED_LIMIT - 1} (members use seed + "
                                         f"{SEED_LIMIT} j), not {text!r}")
    return seeds


def check_runs_folder(out: Path) -> None:
    """Refuse, before anything runs, an ``--out`` that is empty, a file, a FIFO or a broken link: the folder of a
    study's runs is a directory (new or existing); one :class:`UserError` line naming ``--out``.

    Example:
        >>> check_runs_folder(Path("/dev/null"))
        Traceback (most recent call last):
        ...
        core.errors.UserError: --out /dev/null exists and is not a directory; choose a new or existing folder of runs
    """
    out = check_out_text(out)
    if (out.exists() or out.is_symlink()) and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory; choose a new or existing folder of runs")


def map_processes(fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], jobs: int = 1) -> list[Any]:
    """``fn(*task)`` of every task, in order, ``jobs`` at once in worker *processes*
    (:class:`studies.grid.workers.WorkerPool`; in this process for one job): the landscape measurements trace models
    with torch.fx, which patches ``nn.Module.__call__`` process-wide while it traces, so they are not thread-safe
    (docs/reliability.md). ``fn`` must be importable by name (a module-level function)."""
    if jobs <= 1:
        return [fn(*task) for task in tasks]
    from studies.grid.workers import WorkerPool

    with WorkerPool(jobs) as pool:
        futures = [pool.submit(fn, *task) for task in tasks]
        return [f.result() for f in futures]


def trainer(run_all: Callable[..., Rows]) -> Callable[[argparse.Namespace], Rows]:
    """The ``run`` of :func:`study_main` for a study that trains: ``run_all(out, seeds, jobs, quick, data_dir)``
    called with the parsed flags."""
    return lambda a: run_all(a.out, a.seeds, a.jobs, a.quick, a.data_dir)


def study_main(argv: Sequence[str] | None, name: str, doc: str, run: Callable[[argparse.Namespace], Rows],
               read: Callable[[Path], Rows], tables: Callable[[Rows], str], *, quick: bool = False,
               figure: Callable[[Rows, Path], None] | None = None, runs_help: str = "folder of the runs",
               default_out: str = "runs/ensembles") -> int:
    """The command line of a study ``python -m studies.reproductions.NAME``: ``--out``, ``--seeds``, ``--jobs``,
    ``--data-dir`` (and ``--quick``), ``--from-csv``; prints the tables (and draws ``OUT/NAME.png`` with
    ``figure``). Failures are one ``error:`` line and exit 2."""
    parser = argparse.ArgumentParser(prog=f"python -m studies.reproductions.{name}", description=doc.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(default_out), help=f"{runs_help} (default %(default)s)")
    parser.add_argument("--seeds", type=seeds_flag, default=list(range(12)), help="seeds, e.g. 0-11 (default 0-11)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each (default %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="MNIST-1D cache (default %(default)s)")
    if quick:
        parser.add_argument("--quick", action="store_true", help="a tiny version that checks the plumbing")
    parser.add_argument("--from-csv", type=Path, metavar="CSV",
                        help=f"print the tables of a {name}.csv (e.g. docs/data/{name}-mnist1d.csv); run nothing")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    try:
        if not args.from_csv:
            check_runs_folder(args.out)
        rows = read(args.from_csv) if args.from_csv else run(args)
    except (UserError, RuntimeError, OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(tables(rows))
    if figure is not None and not args.from_csv:
        figure(rows, args.out / f"{name}.png")
        print(f"figure: {args.out / f'{name}.png'}")
    return 0
