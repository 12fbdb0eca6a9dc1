"""Start-up cost of the command-line tools against ``python -c "import torch"``, measured side by side.

Each command is a whole process; the configurations are run in alternating rounds (every round runs
each command once, in the same order), and the table gives min / median / max seconds over the rounds
and the ratio of medians to ``import torch`` of the same rounds. A barrier without ``--plot`` needs a
run directory: pass ``--run DIR`` (e.g. one made by ``python -m training.swamp --cycles 2 --epochs 1``);
without it that row is skipped.

    python -m benchmarks.bench_startup --rounds 7 [--run RUN]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def commands(run: str | None) -> dict[str, list[str]]:
    py = sys.executable
    out = {"import torch": [py, "-c", "import torch"],
           "landscape.barrier --help": [py, "-m", "landscape.barrier", "--help"],
           "training.swamp --help": [py, "-m", "training.swamp", "--help"],
           "landscape.hessian --help": [py, "-m", "landscape.hessian", "--help"]}
    if run:
        a, b = (str(Path(run) / "cycle_00" / f"particle_0{p}.safetensors") for p in (0, 1))
        out["barrier, 3 points, no plot"] = [py, "-m", "landscape.barrier", a, b, "--points", "3", "--bn-recal", "0",
                                             "--split", "test"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--run", default=None, help="a run directory for the barrier row")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmds = commands(args.run)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(args.rounds):
        for name, cmd in cmds.items():
            start = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["import torch"])
    print(f"{'command':<30} {'min':>6} {'median':>7} {'max':>6}  ratio to import torch (medians)")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<30} {min(values):>6.2f} {med:>7.2f} {max(values):>6.2f}  {med / base:.2f}x")


if __name__ == "__main__":
    main()
