"""Start-up cost of the command-line tools against ``python -c "import torch"``, measured side by side.

Each command is a whole process, timed with :func:`benchmarks.harness.paired`: every round runs each
command once, the order rotated every round, after a warm-up round (page cache, ``.pyc`` files) that
is discarded; the table gives min / median / max wall seconds and the median (min-max) of the per-round
ratios to ``import torch``, wall and CPU (the child's user + system seconds). A barrier without ``--plot`` needs a
run directory: pass ``--run DIR`` (e.g. one made by ``python -m training.swamp --cycles 2 --epochs 1``);
without it that row is skipped.

    python -m benchmarks.bench_startup --rounds 7 [--run RUN] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import machine, paired


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
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--run", default=None, help="a run directory for the barrier row")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 commands: proves it runs, no figures")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmds = commands(args.run)
    if args.quick:
        args.rounds, cmds = 2, dict(list(cmds.items())[:2])
    print(machine())
    result = paired({name: lambda cmd=cmd: subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                                                          stderr=subprocess.DEVNULL) for name, cmd in cmds.items()},
                    rounds=args.rounds, warmup=args.warmup)
    print(result.line())
    print(f"{'command':<30} {'min':>6} {'median':>7} {'max':>6}  {'wall ratio':>17}  {'CPU ratio':>17}")
    for side in result.sides:
        print(f"{side.name:<30} {min(side.wall):>6.2f} {side.wall_median:>7.2f} {max(side.wall):>6.2f}  "
              f"{side.wall_ratio!s:>17}  {side.cpu_ratio!s:>17}")


if __name__ == "__main__":
    main()
