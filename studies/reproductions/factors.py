"""Which factor breaks linear connectivity, one at a time, on the three architectures of the controls grid.

Two solutions of different seeds differ in four factors at once: the initialisation, the dense ticket trained from
it, the mask and the batch order. :mod:`studies.reproductions.connectivity` separates the batch order and the mask
on cnn1d and the MLP; this study adds the **initialisation alone** (``--init-seed``: the initial weights of another
seed, every other random stream of the run's own) and runs all four on cnn1d, the MLP and the Transformer in the
controls grid's setting (ticket after 2 dense epochs, 4 cycles at 50% pruning; 8, 32 and 64 epochs per cycle). At
cycle k of seed s:

=========================  ===========================================================  =========================
pair                       the two networks                                             what differs
=========================  ===========================================================  =========================
``batch order only``       particles 0 and 1 of the ingredients study's                 the batch order
                           ``particles only (N=4, no SWA)`` run
``mask only``              IMP and IMP on SWAMP's masks (``training.transplant``)        the mask
``initialisation only``    IMP and IMP from seed s + 1000's initial weights, on IMP's    the initial weights (and
                           masks (``--init-seed``, ``training.transplant``)              so the ticket)
``all four``               IMP of seed s and of the next seed (the controls' seed pair)  all four
=========================  ===========================================================  =========================

None of them uses SWA. Each barrier is the test-error (and test-loss) barrier on the straight line between the two
(:func:`studies.reproductions.connectivity.measure`: 11 points, BatchNorm recomputed at every point). A factor
*breaks* connectivity when its pair's error barrier exceeds the batch-order pair's of the same seed by at least 1
point (``greater``; :func:`studies.verdict.paired_verdicts`, Holm over the architectures x cycles of each factor).

``python -m studies.reproductions.factors --out runs/controls --seeds 0-11 --jobs 2`` trains the two transplanted
IMP runs per model and seed under ``OUT/factors`` (the grid's runs are those of
``studies.reproductions.controls``, the particles those of ``studies.reproductions.ingredients``, under the same
``--out``), measures the barriers (cached per pair under ``OUT/analysis/factors``) and writes
``OUT/factors.csv``; ``--from-csv docs/data/factors-mnist1d.csv`` prints the tables from the committed data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from studies.reproductions import common, connectivity
from studies.reproductions.common import SEED_LIMIT, study_main
from studies.reproductions.controls import CYCLES, GRID, train_commands
from studies.reproductions.lottery import run_all_resuming

MODELS = tuple(GRID)
PAIRS = ("batch order only", "mask only", "initialisation only", "all four")
WORDS = {"mask only": "their mask only", "initialisation only": "their initial weights only (and so their ticket)",
         "all four": "all four factors (different seeds)"}
write_csv, read_csv = connectivity.write_csv, connectivity.read_csv


def runs(out: Path, seeds: Sequence[int], data_dir: Path, quick: bool = False
         ) -> dict[tuple[str, str, int], tuple[list[str], Path]]:
    """(model, name, seed) -> (command, run folder) of the transplanted IMP runs: ``imp-on-swamp-masks`` (the grid's
    IMP on the grid's SWAMP's masks) and ``imp-init`` (the grid's IMP from seed s + 1000's initial weights on its
    own masks).

    Example:
        >>> cmd, run = runs(Path("r"), [3], Path("data"))["mlp", "imp-init", 3]
        >>> run.as_posix(), cmd[2], cmd[-7:]
        ('r/factors/mlp-imp-init-s3', 'training.transplant', ['--particles', '1', '--no-swa', '--masks-from', \
'r/grid/mlp-imp-s3', '--init-seed', '1003'])
    """
    grid = {run.name: (cmd, run) for cmd, run in train_commands(out, seeds, data_dir, quick)
            if run.parent.name == "grid"}
    plan = {}
    for model in MODELS:
        for seed in seeds:
            imp, at = grid[f"{model}-imp-s{seed}"][0], grid[f"{model}-imp-s{seed}"][0].index("--out")
            for name, donor, extra in (("imp-on-swamp-masks", f"{model}-swamp-s{seed}", []),
                                       ("imp-init", f"{model}-imp-s{seed}", ["--init-seed", str(seed + SEED_LIMIT)])):
                run = out / "factors" / f"{model}-{name}-s{seed}"
                cmd = [*imp[:2], "training.transplant", *imp[3:at + 1], str(run), *imp[at + 2:], "--particles", "1",
                       "--no-swa", "--masks-from", str(grid[donor][1]), *extra]
                plan[model, name, seed] = (cmd, run)
    return plan


def endpoints(out: Path, model: str, pair: str, seed: int, cycle: int, seeds: Sequence[int]) -> tuple[Path, Path]:
    """The two checkpoint files of ``pair`` (one of :data:`PAIRS`) at ``cycle`` of ``seed``.

    Example:
        >>> [p.parent.parent.name for p in endpoints(Path("r"), "cnn1d", "all four", 11, 1, range(12))]
        ['cnn1d-imp-s11', 'cnn1d-imp-s0']
    """
    c = f"cycle_{cycle:02d}"
    if pair == "batch order only":
        run = out / "ingredients" / f"{model}-particles-s{seed}" / c
        return run / "particle_00.safetensors", run / "particle_01.safetensors"
    imp = out / "grid" / f"{model}-imp-s{seed}" / c / "average.safetensors"
    if pair == "all four":
        ordered = sorted(seeds)
        other = ordered[(ordered.index(seed) + 1) % len(ordered)]
        return imp, out / "grid" / f"{model}-imp-s{other}" / c / "average.safetensors"
    name = "imp-on-swamp-masks" if pair == "mask only" else "imp-init"
    return imp, out / "factors" / f"{model}-{name}-s{seed}" / c / "average.safetensors"


def run_all(out: Path, seeds: Sequence[int], jobs: int = 1, quick: bool = False,
            data_dir: Path = Path("data")) -> list[dict[str, object]]:
    """Train (or resume) the transplanted runs, then :func:`measure_all`. Returns the rows of ``factors.csv``."""
    cycles = 2 if quick else CYCLES
    run_all_resuming(runs(out, seeds, data_dir, quick).values(), jobs, f"cycle_{cycles - 1:02d}")
    return measure_all(out, seeds, jobs, data_dir, cycles)


def measure_all(out: Path, seeds: Sequence[int], jobs: int = 1, data_dir: Path = Path("data"),
                cycles: int = CYCLES) -> list[dict[str, object]]:
    """Measure (or read) every pair's barriers at cycles 1 to ``cycles`` − 1 and write ``OUT/factors.csv``; pairs
    whose runs are not finished are left out. Returns the rows."""
    cache = out / "analysis" / "factors"
    cache.mkdir(parents=True, exist_ok=True)

    def ready(model: str, pair: str, seed: int, cycle: int) -> bool:
        return all(p.is_file() and (p.parent / "metrics.json").is_file()
                   for p in endpoints(out, model, pair, seed, cycle, seeds))

    tasks = [(model, pair, seed, cycle) for model in MODELS for seed in seeds for cycle in range(1, cycles)
             for pair in PAIRS if ready(model, pair, seed, cycle)]

    rows = connectivity.barrier_rows(tasks, lambda task: endpoints(out, *task, seeds), cache, data_dir, jobs)
    write_csv(rows, out / "factors.csv")
    return rows


def tables(rows: Sequence[dict[str, object]]) -> str:
    """The tables of :func:`studies.reproductions.connectivity.tables` for this study's pairs and architectures.

    Example:
        >>> rows = [{"model": "transformer1d", "pair": p, "seed": s, "cycle": 1, "sparsity": 0.5,
        ...          "error_barrier": PAIRS.index(p) + 0.1 * s, "loss_barrier": 0.01} for p in PAIRS for s in range(6)]
        >>> print(tables(rows).splitlines()[2][:60])
        | transformer1d | 50.0% | 0.25 ± 0.08 | 1.25 ± 0.08 | 2.25 ±
    """
    return connectivity.tables(rows, PAIRS, MODELS, WORDS)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "factors", __doc__, common.trainer(run_all), read_csv, tables, quick=True,
                      default_out="runs/controls",
                      runs_help="folder of the controls grid's runs (and the ingredients study's)")


if __name__ == "__main__":
    raise SystemExit(main())
