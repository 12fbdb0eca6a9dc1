"""Particle engines side by side: sequential, vectorized and distributed (P processes), N = 1, 2, 4, 8.

Every measurement is one fresh process: one cycle of ``--epochs`` epochs of N particles through the
engine, exactly as a run trains them (per-epoch resume state, SWA, BN recalibration), timed from the
engine call to its return, after a one-epoch warm-up call that pays the one-time costs (lazy
initialisation, first-call tracing). The configurations alternate: each of ``--repeats`` rounds
measures every (model, N, engine) once, the sequential N = 1 baseline of each model included, so load
from other jobs hits all alike; each round's cost divides by that round's baseline. Single-process
engines get ``--threads`` threads; distributed gets ``--threads`` per process, so it uses P times the
cores. Columns: median seconds; particle-epochs per second; cost = seconds / (N x sequential's seconds
for N = 1 in the same round), median and [min, max] over the rounds, where <= 1.05 means N particles
cost no more than N separate ones; training memory = peak resident
memory during training minus the resident memory before it (model, data and torch already loaded),
summed over the processes, and on GPUs the peak allocated GPU memory. From the repository root:

``python -m benchmarks.bench_engines [--device cuda] [--models mlp cnn1d] [--particles 1 2 4 8]``
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks.harness import dataset_for, machine, peak_rss_mib, reset_peak_rss, rss_mib, sync, table

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
        times = []
        for cycle in range(spec["repeats"]):
            sync(ctx.device)
            began = time.perf_counter()
            engine(ctx, cycle, start, masks, schedule, todo, lambda p, state: None)
            sync(ctx.device)
            times.append(time.perf_counter() - began)
        return statistics.median(times)

    seconds = run_session(cfg, build, body)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    rank = int(os.environ.get("RANK", "0"))
    with open(f"{spec['out']}.rank{rank}.json", "w") as fh:
        json.dump({"rank": rank, "seconds": seconds, "extra_rss_mib": peak_rss_mib() - baseline[0], "gpu_mib": gpu},
                  fh)


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=50_000, help="CIFAR-like images for the image models")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the distributed engine")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    if args.one:
        one(json.loads(args.one))
        return
    print(machine().replace(f"{torch.get_num_threads()} torch threads", f"{args.threads} threads per process"))
    configs = [(model, n, engine) for model in args.models for n in args.particles for engine in args.engines]
    if not any(n == 1 and engine == "sequential" for _, n, engine in configs):
        configs = [(model, 1, "sequential") for model in args.models] + configs  # every round's baseline
    seconds: dict[tuple, list[float]] = {c: [] for c in configs}
    costs: dict[tuple, list[float]] = {c: [] for c in configs}
    memory: dict[tuple, list[tuple[float, float]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for model, n, engine in configs:
                spec = {"model": model, "particles": n, "epochs": args.epochs, "engine": engine, "repeats": 1,
                        "device": args.device, "samples": args.samples, "data_dir": args.data_dir,
                        "out": os.path.join(tmp, f"{model}-{engine}-{n}-r{round_}")}
                ranks = launch(spec, args.threads, args.nproc)
                seconds[(model, n, engine)].append(next(r["seconds"] for r in ranks if r["rank"] == 0))
                memory[(model, n, engine)].append((sum(r["extra_rss_mib"] for r in ranks),
                                                   sum(r["gpu_mib"] for r in ranks)))
                print(f"round {round_}: {model} N={n} {engine}: {seconds[(model, n, engine)][-1]:.2f} s",
                      file=sys.stderr, flush=True)
            for model, n, engine in configs:
                base = seconds[(model, 1, "sequential")][-1]
                costs[(model, n, engine)].append(seconds[(model, n, engine)][-1] / (n * base))
    rows = []
    for model, n, engine in configs:
        c = costs[(model, n, engine)]
        median = statistics.median(seconds[(model, n, engine)])
        rows.append([model, n, engine, f"{median:.2f}", f"{n * args.epochs / median:.1f}",
                     f"{statistics.median(c):.2f} [{min(c):.2f}, {max(c):.2f}]",
                     f"{max(m for m, _ in memory[(model, n, engine)]):.0f}",
                     f"{max(g for _, g in memory[(model, n, engine)]):.0f}"])
    print(f"{args.repeats} alternating rounds; cost: median [min, max] over the rounds")
    print(table(["model", "N", "engine", "seconds", "particle-epochs/s", "cost vs N x one",
                 "training memory MiB (RSS)", "peak GPU MiB"], rows))


if __name__ == "__main__":
    main()
