"""Raw against aligned barriers of independently trained sparse solutions (docs/alignment.md).

Entezari et al. (2022) conjecture that solutions from different initialisations are linearly connected
once their hidden units are permuted to match (weight matching, Ainsworth et al. 2023,
:mod:`landscape.tools.align`). This script measures, on a directory of runs named ``MODEL-METHOD-sSEED``
(``python -m training.imp`` / ``training.swamp`` with ``--out ROOT/MODEL-METHOD-sSEED``):

* for every pair of seeds of one model and method (``imp``, ``swamp``) and every cycle, the test-loss
  barrier (Frankle et al. 2020) between the two cycle solutions (``average.safetensors``), as trained and
  after aligning the second to the first; their masks differ, so the weights are interpolated as they are;
* the same for the particle pairs of one SWAMP cycle (one ticket, one mask);
* with ``--cost``, the seconds and iterations of one weight matching between two random initialisations
  of every registry model (``--cost-models``).

``python -m studies.alignment ROOT [--cycles 0,1,2,3] [--json OUT] [--cost]`` prints Markdown tables:
mean +- sample standard deviation over the pairs.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import torch

from core.artifacts.outputs import check_outputs
from core.errors import ArgumentParser, UserError, run_cli
from core.models import build_model, model_spec
from core.options import add_dataclass_arguments
from landscape.matching import weight_matching
from landscape.tools.artifacts import EvalOptions, run_particles
from landscape.tools.barrier import checkpoint_barrier
from landscape.tools.cli import cycle_list, write_json

TEST = EvalOptions(("test",), progress=False)
COST_MODELS = ("mlp", "cnn1d", "resnet20", "wrn28x2", "vgg19", "resnet18", "resnet50")


def _runs(root: Path) -> dict[tuple[str, str], dict[int, Path]]:
    """``(model, method) -> {seed: run directory}`` of the runs named ``MODEL-METHOD-sSEED`` under ``root``."""
    found: dict[tuple[str, str], dict[int, Path]] = {}
    for path in sorted(root.glob("*-*-s*")):
        model, method, seed = path.name.rsplit("-", 2)
        if seed[1:].isdigit() and (path / "config.json").is_file():
            found.setdefault((model, method), {})[int(seed[1:])] = path
    if not found:
        raise UserError(f"{root} holds no run directories named MODEL-METHOD-sSEED")
    return found


def _pair(a: Path, b: Path, options: EvalOptions) -> dict[str, float]:
    result = checkpoint_barrier(a, b, 11, options, allow_mask_union=True, align="weights")
    return {"raw": result.barrier["test"].loss, "aligned": result.aligned.barrier["test"].loss,
            "raw_error": result.barrier["test"].error, "aligned_error": result.aligned.barrier["test"].error,
            "density": result.mask.densities[0], "iterations": result.aligned.alignment.iterations}


def barrier_rows(root: Path, cycles: Sequence[int], *, trust_code: bool = False) -> list[dict]:
    """One row per measured pair: model, method (``imp``, ``swamp`` or ``particles``), cycle, seeds, barriers;
    ``trust_code`` allows a ``PACKAGE.MODULE:CALLABLE`` model or data set the runs name (user code)."""
    options = replace(TEST, trust_code=trust_code)
    rows = []
    for (model, method), seeds in _runs(root).items():
        for cycle in cycles:
            for i, j in combinations(sorted(seeds), 2):
                a, b = (seeds[s] / f"cycle_{cycle:02d}" / "average.safetensors" for s in (i, j))
                if a.is_file() and b.is_file():
                    rows.append({"model": model, "method": method, "cycle": cycle, "pair": [i, j],
                                 **_pair(a, b, options)})
            if method != "swamp":
                continue
            for seed, run in sorted(seeds.items()):
                particles = run_particles(run, cycle)
                rows.append({"model": model, "method": "particles", "cycle": cycle, "pair": [seed, seed],
                             **_pair(particles[0], particles[1], options)})
    return rows


def _mean_std(values: Sequence[float], scale: float = 1.0) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.fmean(values):.4f} ± {scale * std:.4f}"


def barrier_table(rows: Sequence[dict]) -> str:
    """Markdown: per model, pair kind and sparsity, the raw and aligned test-loss (and error) barriers."""
    lines = ["| model | pairs | sparsity | n | raw loss barrier | aligned loss barrier | raw error barrier (%) "
             "| aligned error barrier (%) | aligned lower/equal/higher |", "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["model"], r["method"], r["cycle"]) for r in rows})
    for model, method, cycle in keys:
        group = [r for r in rows if (r["model"], r["method"], r["cycle"]) == (model, method, cycle)]
        kind = {"imp": "IMP, seeds", "swamp": "SWAMP, seeds", "particles": "particles of one cycle"}[method]
        lower, equal = sum(r["aligned"] < r["raw"] for r in group), sum(r["aligned"] == r["raw"] for r in group)
        counts = f"{lower}/{equal}/{len(group) - lower - equal}"
        lines.append(f"| {model} | {kind} | {1 - group[0]['density']:.3f} | {len(group)} | "
                     f"{_mean_std([r['raw'] for r in group])} | {_mean_std([r['aligned'] for r in group])} | "
                     f"{_mean_std([r['raw_error'] for r in group], 100)} | "
                     f"{_mean_std([r['aligned_error'] for r in group], 100)} | {counts} |")
    return "\n".join(lines)


def alignment_costs(models: Sequence[str]) -> list[dict]:
    """Seconds and iterations of :func:`landscape.matching.weight_matching` between two random initialisations."""
    from scipy.optimize import linear_sum_assignment  # noqa: F401  imported before the clock starts

    rows = []
    for name in models:
        spec = model_spec(name, 10)
        torch.manual_seed(0)
        a = build_model(spec)
        torch.manual_seed(1)
        b = build_model(spec)
        start = time.perf_counter()
        result = weight_matching(a, b)
        rows.append({"model": name, "parameters": sum(p.numel() for p in a.parameters()),
                     "groups": len(result.spec.groups), "units": sum(g.size for g in result.spec.groups),
                     "iterations": result.iterations, "seconds": time.perf_counter() - start})
    return rows


def cost_table(rows: Sequence[dict]) -> str:
    lines = ["| model | parameters | groups | units | iterations | seconds |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['parameters']:,} | {r['groups']} | {r['units']:,} | {r['iterations']} | "
              f"{r['seconds']:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m studies.alignment", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="directory of runs named MODEL-METHOD-sSEED")
    parser.add_argument("--cycles", type=cycle_list, default=[0, 1, 2, 3], help="cycles to measure (default 0,1,2,3)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write every row as JSON")
    parser.add_argument("--cost", action="store_true", help="also time one weight matching per model")
    parser.add_argument("--cost-models", default=",".join(COST_MODELS), help="models --cost times")
    add_dataclass_arguments(parser, EvalOptions, only=("trust_code",))
    args = parser.parse_args(argv)
    check_outputs({"--json": args.json}, [args.root], {"--json": {"barriers", "costs"}})
    rows = barrier_rows(args.root, args.cycles, trust_code=args.trust_code)
    print(barrier_table(rows))
    costs = alignment_costs(args.cost_models.split(",")) if args.cost else []
    if costs:
        print("\n" + cost_table(costs))
    if args.json:
        write_json(args.json, {"barriers": rows, "costs": costs})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
