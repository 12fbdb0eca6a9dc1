"""Particle engines side by side: sequential, vectorized and distributed (P processes), N = 1, 2, 4, 8.

Every measurement is one fresh process: one cycle of ``--epochs`` epochs of N particles through the
engine, exactly as a run trains them (per-epoch resume state, SWA, BN recalibration), timed from the
engine call to its return, after a one-epoch warm-up call that pays the one-time costs (lazy
initialisation, first-call tracing). The configurations of a model are timed by
:func:`benchmarks.harness.paired`: each of ``--rounds`` rounds (after a discarded warm-up round) measures
every (N, engine) once, the sequential N = 1 baseline included, in an order rotated every round, so load
from other jobs hits all alike; each round's cost divides by that round's baseline. Single-process
engines get ``--threads`` threads; distributed gets ``--threads`` per process, so it uses P times the
cores. Columns: median seconds; particle-epochs per second; cost = seconds / (N x sequential's seconds
for N = 1 in the same round), median and [min, max] over the rounds, where <= 1.05 means N particles
cost no more than N separate ones; training memory = peak resident
memory during training minus the resident memory before it (model, data and torch already loaded),
summed over the processes, and on GPUs the peak allocated GPU memory. From the repository root:

``python -m benchmarks.bench_engines [--device cuda] [--models mlp cnn1d] [--particles 1 2 4 8] [--rounds 7]
[--quick]``
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks.harness import (
    Measured,
    dataset_for,
    machine,
    paired,
    peak_rss_mib,
    reset_peak_rss,
    rss_mib,
    sync,
    table,
)

ENGINE_NAMES = ("sequential", "vectorized", "distributed")


def one(spec: dict) -> None:
    """Child process: time one engine; each rank writes ``OUT.rankR.json``."""
    from core.models import build_model, model_spec
    from core.pruning import dense_masks
    from training.config import parse_config
    from training.context import build_context
    from training.engines import select_engine
    from training.engines.session import run_session
    from training.run import cycle_schedule

    cfg = parse_config(["--model", spec["model"], "--particles", str(spec["particles"]), "--epochs",
                        str(spec["epochs"]), "--cycles", "1", "--engine", spec["engine"], "--device",
                        spec["device"], "--out", spec["out"], "--no-progress", "--data-dir", spec["data_dir"]],
                       "bench", "")
    baseline: list[float] = []

    def build(cfg):
        ctx = build_context(cfg)
        if spec["model"] not in ("mlp", "cnn1d"):
            mspec = model_spec(spec["model"], 10)
            ctx = dataclasses.replace(ctx, data=dataset_for(spec["model"], ctx.device, spec["samples"]),
                                      model_spec=mspec, builder=functools.partial(build_model, mspec))
        baseline.append(rss_mib())
        reset_peak_rss()
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        return ctx

    def body(ctx) -> float:
        start = ctx.fresh_model().state_dict()
        masks = dense_masks(ctx.fresh_model())
        schedule = cycle_schedule(ctx, 0)
        engine, todo = select_engine(spec["engine"]), list(range(spec["particles"]))
        # warm-up as "cycle 99" (its own seeds and resume files)
        engine(ctx, 99, start, masks, dataclasses.replace(schedule, epochs=1, swa_epochs=min(schedule.swa_epochs, 1)),
               todo, lambda p, state: None)
        sync(ctx.device)
        began, cpu = time.perf_counter(), time.process_time()
        engine(ctx, 0, start, masks, schedule, todo, lambda p, state: None)
        sync(ctx.device)
        return time.perf_counter() - began, time.process_time() - cpu

    measured = run_session(cfg, build, body)  # ranks > 0 serve rank 0 and measure nothing ([])
    seconds, cpu = measured if measured else (None, None)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    rank = int(os.environ.get("RANK", "0"))
    with open(f"{spec['out']}.rank{rank}.json", "w") as fh:
        json.dump({"rank": rank, "seconds": seconds, "cpu": cpu, "extra_rss_mib": peak_rss_mib() - baseline[0],
                   "gpu_mib": gpu}, fh)


def launch(spec: dict, threads: int, nproc: int) -> list[dict]:
    """Run :func:`one` in fresh processes (``torch.distributed.run`` for the distributed engine)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    me = [sys.executable, "-m", "benchmarks.bench_engines", "--one", json.dumps(spec)]
    if spec["engine"] == "distributed":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        me = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
              "127.0.0.1", "--master-port", str(port), *me[1:]]
    proc = subprocess.run(me, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(me)} failed:\n{proc.stderr[-3000:]}")
    results = []
    for rank in range(nproc if spec["engine"] == "distributed" else 1):
        with open(f"{spec['out']}.rank{rank}.json") as fh:
            results.append(json.load(fh))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn1d"])
    parser.add_argument("--particles", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--engines", nargs="+", default=list(ENGINE_NAMES), choices=ENGINE_NAMES)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds (after one warm-up round)")
    parser.add_argument("--samples", type=int, default=50_000, help="CIFAR-like images for the image models")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the distributed engine")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--quick", action="store_true", help="mlp, N = 1 and 2, 1 epoch, 1 round: proves it runs")
    args = parser.parse_args()
    if args.one:
        one(json.loads(args.one))
        return
    if args.quick:
        args.models, args.particles, args.epochs, args.rounds, args.samples = ["mlp"], [1, 2], 1, 1, 1024
    print(machine().replace(f"{torch.get_num_threads()} torch threads", f"{args.threads} threads per process"))
    rows, how = [], ""
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            configs = [(n, engine) for n in args.particles for engine in args.engines]
            if (1, "sequential") not in configs:
                configs.insert(0, (1, "sequential"))  # every round's baseline
            configs.sort(key=lambda c: c != (1, "sequential"))
            memory: dict[tuple, list[tuple[float, float]]] = {c: [] for c in configs}
            calls = iter(range(10**9))

            def call(n: int, engine: str, model: str = model, memory: dict = memory, calls=calls) -> Measured:
                spec = {"model": model, "particles": n, "epochs": args.epochs, "engine": engine,
                        "device": args.device, "samples": args.samples, "data_dir": args.data_dir,
                        "out": os.path.join(tmp, f"{model}-{engine}-{n}-{next(calls)}")}
                ranks = launch(spec, args.threads, args.nproc)
                memory[(n, engine)].append((sum(r["extra_rss_mib"] for r in ranks), sum(r["gpu_mib"] for r in ranks)))
                first = next(r for r in ranks if r["rank"] == 0)
                print(f"{model} N={n} {engine}: {first['seconds']:.2f} s", file=sys.stderr, flush=True)
                return Measured(first["seconds"], first["cpu"])

            result = paired({c: (lambda c=c: call(*c)) for c in configs}, rounds=args.rounds, warmup=1)
            how = result.line()
            for n, engine in configs:
                side = result[(n, engine)]
                cost = [r / n for r in (side.wall_ratio.median, side.wall_ratio.low, side.wall_ratio.high)]
                rows.append([model, n, engine, f"{side.wall_median:.2f}", f"{n * args.epochs / side.wall_median:.1f}",
                             f"{cost[0]:.2f} [{cost[1]:.2f}, {cost[2]:.2f}]",
                             f"{side.cpu_ratio.median / n:.2f}",
                             f"{max(m for m, _ in memory[(n, engine)]):.0f}",
                             f"{max(g for _, g in memory[(n, engine)]):.0f}"])
    print(how.replace("ratios:", "cost: the ratio / N,"))
    print(table(["model", "N", "engine", "seconds", "particle-epochs/s", "cost vs N x one (wall)",
                 "cost vs N x one (CPU of rank 0)", "training memory MiB (RSS)", "peak GPU MiB"], rows))


if __name__ == "__main__":
    main()
