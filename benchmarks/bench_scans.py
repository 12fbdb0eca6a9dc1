"""Landscape scans: a K-point barrier of ``landscape.tools.barrier`` against loss-landscapes' ``linear_interpolation``.

Whole processes, as a user runs them, on the same two checkpoints and the same test split, one torch
thread each (``OMP_NUM_THREADS=1``):

- ours: ``python -m landscape.barrier A B --points K --split test --bn-recal 0`` (no BatchNorm
  recalibration: the stored statistics are interpolated like the weights), and with the default
  recalibration (``--bn-recal`` unset: recomputed at every point on 2,048 training samples);
- peer: ``python -m benchmarks.bench_scans --peer A B --points K``, a script that builds the two models
  from the checkpoints (safetensors + the toolkit's model zoo, no validation), loads the test split
  with the toolkit's loader and calls ``loss_landscapes.linear_interpolation(a, b, Loss(cross_entropy,
  x, y), steps=K, deepcopy_model=True)`` under ``torch.no_grad()`` (its best case). It computes less:
  K losses at lambda = 1/K, ..., 1 (not lambda = 0), BatchNorm buffers left at A's, no accuracy.

The commands of one K are timed by :func:`benchmarks.harness.paired` (order rotated every round, so the
peer does not always run first; a warm-up round discarded); the table gives min / median / max wall-clock
seconds, the median (min-max) of the per-round ratios to the peer with the same K (goal: at most 1.0
without recalibration), and the same for the child process's CPU seconds (user + system), which waiting
for a busy core does not inflate.

``--in-process`` adds, in this process on ``--device``, the scan alone (checkpoints already loaded): our
loop of K evaluations (:func:`landscape.tools.barrier.checkpoint_barrier`), loss-landscapes' loop, and the K
points stacked into one batched forward (``torch.func.functional_call`` + ``vmap`` over the K
interpolated states, as ``training.engines.stacked`` stacks particles), which is the data for a measured
loop-or-stack rule.

    python -m benchmarks.bench_scans [--run RUN] [--points 11 41] [--rounds 7] [--in-process] [--device cpu] [--quick]

``RUN`` is a run directory whose ``cycle_00`` has ``particle_00`` and ``particle_01`` (or pass ``--a``
and ``--b``); by default the SWAMP run of :func:`benchmarks.harness.swamp_checkpoint` (cnn1d, MNIST-1D),
made once and cached. Needs ``pip install loss-landscapes``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import machine, paired, swamp_checkpoint


def peer(a: str, b: str, points: int, data_dir: str) -> None:
    """loss-landscapes' ``linear_interpolation`` on the test split, as a user script would call it."""
    import json

    import loss_landscapes
    import loss_landscapes.metrics
    import torch
    from safetensors import safe_open

    from core.data import load_dataset
    from core.models import build_model

    def load(path: str) -> tuple[torch.nn.Module, dict]:
        with safe_open(path, "pt") as fh:
            meta = fh.metadata()
            state = {k: fh.get_tensor(k) for k in fh.keys() if not k.startswith("mask.")}
        model = build_model(json.loads(meta["model"]))
        model.load_state_dict(state)
        return model.eval(), json.loads(meta["dataset"])

    (model_a, spec), (model_b, _) = load(a), load(b)
    data = load_dataset({**spec, "data_dir": data_dir})
    x, y = next(data.eval_batches("test", data.size("test")))
    metric = loss_landscapes.metrics.Loss(torch.nn.functional.cross_entropy, x, y)
    with torch.no_grad():
        losses = loss_landscapes.linear_interpolation(model_a, model_b, metric, steps=points, deepcopy_model=True)
    print(" ".join(f"{v:.4f}" for v in losses))


def commands(a: str, b: str, points: int, data_dir: str) -> dict[str, list[str]]:
    py = sys.executable
    flags = [a, b, "--points", str(points), "--split", "test", "--data-dir", data_dir, "--no-progress"]
    return {f"loss-landscapes, K={points}": [py, "-m", "benchmarks.bench_scans", "--peer", a, b, "--points",
                                             str(points), "--data-dir", data_dir],
            f"ours --bn-recal 0, K={points}": [py, "-m", "landscape.barrier", *flags, "--bn-recal", "0"],
            f"ours, BN recalibrated, K={points}": [py, "-m", "landscape.barrier", *flags]}


def whole_processes(a: str, b: str, points: list[int], rounds: int, warmup: int, data_dir: str) -> None:
    """Wall-clock and CPU seconds (user + system, of the child process) of every command, with
    :func:`benchmarks.harness.paired` per K (order rotated every round, warm-up discarded); CPU time is the
    steadier figure on a shared machine (waiting for a core is not counted)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print("\nwhole processes, OMP_NUM_THREADS=1")
    print("| command | wall min | median | max (s) | wall ratio | CPU median (s) | CPU ratio |\n"
          "|---|---|---|---|---|---|---|")
    for k in points:
        cmds = commands(a, b, k, data_dir)
        result = paired({name: lambda cmd=cmd: subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                                                              stderr=subprocess.DEVNULL)
                         for name, cmd in cmds.items()}, rounds=rounds, warmup=warmup)
        for side in result.sides:
            print(f"| {side.name} | {min(side.wall):.2f} | {side.wall_median:.2f} | {max(side.wall):.2f} | "
                  f"**{side.wall_ratio}** | {side.cpu_median:.2f} | **{side.cpu_ratio}** |")
    print(result.line())


def scan_functions(a: str, b: str, points: int, data_dir: str, device: str) -> dict[str, Callable[[], object]]:
    """The in-process scans of ``points`` points between checkpoints ``a`` and ``b`` on ``device``, each a call:
    ``ours`` (:func:`landscape.tools.barrier.checkpoint_barrier` on the loaded checkpoints, no BN recalibration: it
    rebuilds the model and the test split), ``ours, modules`` (:func:`landscape.connectivity.linear_barrier` on
    the two models and the test split already on the device, as loss-landscapes gets them),
    ``loss-landscapes`` (its ``linear_interpolation`` on the whole test split) and ``stacked`` (the points as
    one ``vmap`` over the interpolated states: a prototype, not a toolkit path)."""
    import copy

    import loss_landscapes
    import loss_landscapes.metrics
    import torch
    from torch.func import functional_call, vmap

    from core.artifacts.checkpoint import build_model, load_checkpoint
    from landscape.combination import Combination
    from landscape.connectivity import linear_barrier
    from landscape.tools.artifacts import EvalOptions, checkpoint_data
    from landscape.tools.barrier import checkpoint_barrier

    dev = torch.device(device)
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    options = EvalOptions(("test",), bn_recal=0, device=device, data_dir=data_dir, progress=False)
    model = build_model(ca, dev).eval()
    model_b = build_model(cb, dev).eval()
    data = checkpoint_data(ca, dev, data_dir)
    x, y = next(data.eval_batches("test", data.size("test")))
    combination = Combination(model, [ca.state, cb.state])
    net = combination.model.eval()
    lambdas = [i / (points - 1) for i in range(points)]

    def ll() -> None:
        metric = loss_landscapes.metrics.Loss(torch.nn.functional.cross_entropy, x, y)
        with torch.no_grad():
            loss_landscapes.linear_interpolation(copy.deepcopy(model), model_b, metric, steps=points)

    def stacked() -> None:
        states = [combination.state((1 - lam, lam)) for lam in lambdas]
        params = {n: torch.stack([s[n] for s in states]) for n in states[0] if states[0][n].is_floating_point()}
        with torch.no_grad():
            vmap(lambda p: torch.nn.functional.cross_entropy(functional_call(net, p, (x,)), y))(params).tolist()

    return {"ours": lambda: checkpoint_barrier(ca, cb, points, options),
            "ours, modules": lambda: linear_barrier(model, model_b, (x, y), points=points, bn_data=(),
                                                    batch_size=len(y), progress=False),
            "loss-landscapes": ll, "stacked": stacked}


def in_process(a: str, b: str, points: list[int], rounds: int, warmup: int, data_dir: str, device: str) -> None:
    import torch

    print(f"\nin process on {device}: seconds (median); ratios to loss-landscapes, paired per round (min-max)")
    print("| K | ours: loop of K evaluations | ours on loaded modules | loss-landscapes | K stacked (vmap) | "
          "ours / loss-landscapes | stacked / loss-landscapes |")
    print("|---|---|---|---|---|---|---|")
    for k in points:
        fns = scan_functions(a, b, k, data_dir, device)
        r = paired(fns, rounds=rounds, warmup=warmup, reference="loss-landscapes", device=torch.device(device))
        print(f"| {k} | {r['ours'].wall_median:.3f} | {r['ours, modules'].wall_median:.3f} | "
              f"{r['loss-landscapes'].wall_median:.3f} | {r['stacked'].wall_median:.3f} | {r['ours'].wall_ratio} | "
              f"{r['stacked'].wall_ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", nargs=2, metavar=("A", "B"), help=argparse.SUPPRESS)
    parser.add_argument("--run", default=None, help="run directory: cycle_00/particle_00 and particle_01")
    parser.add_argument("--a", default=None)
    parser.add_argument("--b", default=None)
    parser.add_argument("--points", nargs="+", type=int, default=[11, 41])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="K = 5, 1 round: proves it runs, no figures")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--in-process", action="store_true", help="also time the scans alone, in this process")
    parser.add_argument("--device", default="cpu", help="device of --in-process")
    args = parser.parse_args()
    if args.peer:
        peer(*args.peer, args.points[0], args.data_dir)
        return
    if args.quick:
        args.points, args.rounds = [5], 1
    if not (args.run or args.a or args.b):
        args.run = str(swamp_checkpoint(data_dir=args.data_dir))
    if args.run:
        args.a, args.b = (str(Path(args.run) / "cycle_00" / f"particle_0{p}.safetensors") for p in (0, 1))
    if not (args.a and args.b):
        parser.error("give --run RUN or --a A --b B")
    print(machine())
    print(f"A = {args.a}\nB = {args.b}")
    whole_processes(args.a, args.b, args.points, args.rounds, args.warmup, args.data_dir)
    if args.in_process:
        import torch

        torch.set_num_threads(1)
        in_process(args.a, args.b, args.points, args.rounds, args.warmup, args.data_dir, args.device)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
