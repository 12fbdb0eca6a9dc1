"""Which factor breaks linear connectivity? Barriers between solutions that differ in one factor, or in all.

The earlier control (solutions of different seeds) changes four factors at once: the initialisation, the dense
ticket, the mask and the batch order. The runs of :mod:`studies.reproductions.mechanisms` give pairs that differ
in fewer, at cycle k of seed s:

====================  ======================================================  ================================
pair                  the two networks                                        what differs
====================  ======================================================  ================================
``batch order only``  particles 0 and 1 of ``particles only (N=4, no SWA)``   the batch order
``mask only``         IMP and ``IMP on SWAMP's masks``                        the mask (same ticket, same batch
                                                                              order: particle 0 of seed s)
``all four``          IMP of seeds s and s + 1000                             initialisation, ticket, mask,
                                                                              batch order
====================  ======================================================  ================================

None of them uses SWA, so all are networks trained as IMP trains them. Each barrier is the test-error (and
test-loss) barrier on the straight line between the two (:func:`landscape.tools.barrier.checkpoint_barrier`:
11 points, BatchNorm recomputed at every point on 2,048 training samples; networks with different masks are
interpolated weight by weight, the pruned weights as the zeros they are). Verdicts
(:func:`studies.verdict.paired_verdicts`, Holm over the architectures x cycles of each family): a factor
*breaks* connectivity when its pair's error barrier exceeds the batch-order pair's of the same seed by at least
delta = :data:`EFFECT` points (``greater``).

``python -m studies.reproductions.connectivity --out runs/ensembles --seeds 0-11`` measures (cached per pair in
``OUT/connectivity``) and writes ``OUT/connectivity.csv``; ``--from-csv`` prints the tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.artifacts.atomic import atomic_write_text
from studies.reproductions.common import csv_pair, mean_se, seed_values, study_main, verdict_lines
from studies.reproductions.ensembles import MODELS
from studies.verdict import BARRIER_EFFECT, Claim

PAIRS = ("batch order only", "mask only", "all four")
CYCLES = (1, 3, 5)
EFFECT = BARRIER_EFFECT  # points of test error
FIELDS = ["model", "pair", "seed", "cycle", "sparsity", "error_barrier", "loss_barrier"]
TYPES = {k: str if k in ("model", "pair") else int if k in ("seed", "cycle") else float for k in FIELDS}
write_csv, read_csv = csv_pair(FIELDS, TYPES, "connectivity")


def endpoints(out: Path, model: str, pair: str, seed: int, cycle: int) -> tuple[Path, Path]:
    """The two checkpoint files of ``pair`` (one of :data:`PAIRS`) at ``cycle`` of ``seed``.

    Example:
        >>> [p.parent.parent.name for p in endpoints(Path("runs"), "mlp", "all four", 3, 1)]
        ['mlp-imp-j0-s3', 'mlp-imp-j1-s3']
    """
    c = f"cycle_{cycle:02d}"
    if pair == "batch order only":
        run = out / f"{model}-particles-s{seed}" / c
        return run / "particle_00.safetensors", run / "particle_01.safetensors"
    other = (out / f"{model}-imp-on-swamp-masks-s{seed}" if pair == "mask only"
             else out / f"{model}-imp-j1-s{seed}")  # trained with seed + 1000
    return out / f"{model}-imp-j0-s{seed}" / c / "average.safetensors", other / c / "average.safetensors"


def measure(a: Path, b: Path, cache: Path, name: str, data_dir: Path) -> dict[str, float]:
    """Test error and loss barrier between ``a`` and ``b`` (cached as ``cache/name.json``)."""
    path = cache / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from landscape.tools.artifacts import EvalOptions
    from landscape.tools.barrier import checkpoint_barrier

    result = checkpoint_barrier(a, b, 11, EvalOptions(splits=("test",), device="cpu", data_dir=str(data_dir),
                                                      progress=False), allow_mask_union=True)
    barrier = result.barrier["test"]
    value = {"error_barrier": 100 * barrier.error, "loss_barrier": barrier.loss,
             "sparsity": 1.0 - float(json.loads((b.parent / "metrics.json").read_text())["density"])}
    atomic_write_text(path, json.dumps(value))
    return value


def measure_all(out: Path, seeds: Sequence[int], jobs: int = 1, data_dir: Path = Path("data"),
                cycles: Sequence[int] = CYCLES) -> list[dict[str, object]]:
    """Measure (or read) every pair's barriers for ``seeds``; returns the rows of ``connectivity.csv`` (also
    written). Pairs whose runs are not finished are left out."""
    cache = out / "connectivity"
    cache.mkdir(parents=True, exist_ok=True)
    tasks = [(model, pair, seed, cycle) for model in MODELS for seed in seeds for cycle in cycles for pair in PAIRS
             if all(p.is_file() for p in endpoints(out, model, pair, seed, cycle))
             and all((p.parent / "metrics.json").is_file() for p in endpoints(out, model, pair, seed, cycle))]

    rows = barrier_rows(tasks, lambda task: endpoints(out, *task), cache, data_dir, jobs)
    write_csv(rows, out / "connectivity.csv")
    return rows


def barrier_rows(tasks: Sequence[tuple[str, str, int, int]],
                 ends: Callable[[tuple[str, str, int, int]], tuple[Path, Path]], cache: Path, data_dir: Path,
                 jobs: int = 1) -> list[dict[str, object]]:
    """One row of ``connectivity.csv``'s columns per (model, pair, seed, cycle) task: :func:`measure` of the two
    checkpoints ``ends(task)`` (cached as ``cache/MODEL-PAIR-sS-cCC.json``), ``jobs`` at once."""
    def one(task: tuple[str, str, int, int]) -> dict[str, object]:
        model, pair, seed, cycle = task
        v = measure(*ends(task), cache, f"{model}-{pair.replace(' ', '-')}-s{seed}-c{cycle:02d}", data_dir)
        return {"model": model, "pair": pair, "seed": seed, "cycle": cycle, "sparsity": round(v["sparsity"], 6),
                "error_barrier": round(v["error_barrier"], 4), "loss_barrier": round(v["loss_barrier"], 6)}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, tasks))


def _by_seed(rows: Sequence[dict[str, object]], model: str, pair: str, cycle: int, key: str) -> dict[int, float]:
    return seed_values(rows, key, model=model, pair=pair, cycle=cycle)


def tables(rows: Sequence[dict[str, object]], pairs: Sequence[str] = PAIRS, models: Sequence[str] = tuple(MODELS),
           words: Mapping[str, str] | None = None) -> str:
    """The Markdown tables: error and loss barriers per pair (mean +- standard error over seeds), then the
    verdicts of each factor against the batch-order pair (``pairs[0]``); ``words`` names what differs in each
    other pair (default: ``their PAIR``).

    Example:
        >>> rows = [{"model": "mlp", "pair": p, "seed": s, "cycle": 1, "sparsity": 0.5,
        ...          "error_barrier": {"batch order only": 0.1, "mask only": 3.0, "all four": 20.0}[p] + 0.1 * s,
        ...          "loss_barrier": 0.01} for p in PAIRS for s in range(6)]
        >>> print(tables(rows).splitlines()[2])
        | mlp | 50.0% | 0.35 ± 0.08 | 3.25 ± 0.08 | 20.25 ± 0.08 | 0.010 ± 0.000 | 0.010 ± 0.000 | 0.010 ± 0.000 |
    """
    words = {"mask only": "their mask only", "all four": "all four factors"} if words is None else words
    cells = sorted({(str(r["model"]), int(r["cycle"]), float(r["sparsity"])) for r in rows},  # type: ignore
                   key=lambda c: (list(models).index(c[0]), c[1]))
    lines = ["| model | sparsity | " + " | ".join(f"{p}: error barrier (points)" for p in pairs) + " | "
             + " | ".join(f"{p}: loss barrier" for p in pairs) + " |", "|---|---|" + "---|" * 2 * len(pairs)]
    for model, cycle, sparsity in cells:
        errors = [mean_se(list(_by_seed(rows, model, p, cycle, "error_barrier").values())) for p in pairs]
        losses = [mean_se(list(_by_seed(rows, model, p, cycle, "loss_barrier").values()), 3) for p in pairs]
        lines.append(f"| {model} | {100 * sparsity:.1f}% | " + " | ".join(errors + losses) + " |")
    for pair in pairs[1:]:
        family = {}
        for model, cycle, sparsity in cells:
            a = _by_seed(rows, model, pair, cycle, "error_barrier")
            b = _by_seed(rows, model, pairs[0], cycle, "error_barrier")
            family[f"{model} | {100 * sparsity:.1f}%"] = [a[s] - b[s] for s in sorted(a) if s in b]
        lines += verdict_lines(f"**Solutions that differ in {words.get(pair, f'their {pair}')} are less connected "
                               f"than particles** (A = {pair}, B = {pairs[0]}; test-error barrier in points; claim: "
                               f"greater by {EFFECT:g} point", family, Claim("greater", EFFECT))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return study_main(argv, "connectivity", __doc__, lambda a: measure_all(a.out, a.seeds, a.jobs, a.data_dir),
                      read_csv, tables, runs_help="folder of the runs of studies.reproductions.mechanisms")


if __name__ == "__main__":
    raise SystemExit(main())
