"""The GPU device check in one command: engine table, masked SWA step, Hessian trace and scans against the peers.

Runs the sections of :mod:`benchmarks.gpu_sections` in order (engines and the SWA step first, then the
Hessian trace and the scans), each under its share of ``--budget`` seconds (what one leaves goes to the
next), each sized from its own first measurement and stopped before a round that would not fit. A section
that fails records its error and the others still run. ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``
are rewritten (atomically) after every section, so a run killed at a time limit leaves the finished ones.
``--reduced`` shrinks everything (N = 1, 2; a few batches; one round) to run on a CPU in seconds.

From the repository root::

    PYTHONPATH=. python -m benchmarks.gpu_check --device auto --budget 330 --out gpu-check
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.gpu_report import markdown, section_markdown, targets
from benchmarks.gpu_sections import SECTIONS, Budget, OutOfBudget, Setup, describe
from benchmarks.harness import machine
from core.artifacts.atomic import atomic_write_text
from core.errors import ArgumentParser, UserError, run_cli
from landscape.tools.hessian_report import _finite  # NaN and infinities (a ratio of a zero time) become null

MARKER = "gpu_check"  # the key every JSON this tool writes holds (an earlier output may be replaced)
MD_TITLE = "# GPU device check"
RESERVE = 0.05  # of the budget, kept for start-up, data generation and writing


def machine_info(device: torch.device) -> dict:
    """GPU name, driver, torch, CUDA and cuDNN versions, date, CPU count (and the CPU's line)."""
    driver = None
    if device.type == "cuda":
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            pass
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    memory = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None
    return {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "gpu_gib": memory,
            "driver": driver,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
            "machine": machine()}


def machine_line(info: dict) -> str:
    gpu = f"{info['gpu']} ({info['gpu_gib']:.0f} GiB)" if info["gpu"] else "no GPU"
    return (f"{gpu}, driver {info['driver'] or 'n/a'}, torch {info['torch']}, "
            f"CUDA {info['cuda'] or 'n/a'}, cuDNN {info['cudnn'] or 'n/a'}, {info['date']}, {info['cpus']} CPUs")


def check_output_dir(out: Path) -> tuple[Path, Path]:
    """The two output files in ``out`` (created if absent), refusing files this tool did not write."""
    from core.artifacts.outputs import check_outputs

    json_path, md_path = out / "gpu_check.json", out / "gpu_check.md"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory; name a directory")
    check_outputs({"--out": json_path}, [], markers={"--out": {MARKER}})
    if md_path.is_symlink() or md_path.exists() and not md_path.is_file():
        raise UserError(f"--out {out}: {md_path} is not a regular file; it is left as it is, choose another --out")
    if md_path.is_file():
        with open(md_path, "rb") as fh:
            head = fh.read(len(MD_TITLE))
        if head != MD_TITLE.encode():
            raise UserError(f"--out {out}: {md_path} exists and is not an earlier output of this tool, so it is left "
                            "as it is; choose another --out")
    return json_path, md_path


def process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere): the budget counts the imports too."""
    try:
        with open("/proc/self/stat") as fh:
            started = int(fh.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as fh:
            return max(0.0, float(fh.read().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return 0.0


def run_check(setup: Setup, budget_s: float, write, sections: Sequence[str] = tuple(SECTIONS),
              age: float = 0.0) -> dict:
    """Run ``sections`` within ``budget_s`` seconds (of which ``age`` have passed); ``write(report)`` after each.
    Returns the report."""
    began = time.perf_counter()
    deadline = began - age + (1 - RESERVE) * budget_s
    report = {MARKER: 1, "mode": "reduced" if setup.reduced else "full", "budget_s": budget_s,
              "device": str(setup.device), "machine": machine_info(setup.device), "sections": {}, "finished": False}
    print(machine_line(report["machine"]), flush=True)
    write(report)
    for i, name in enumerate(sections):
        left_shares = sum(SECTIONS[s][1] for s in sections[i:])
        budget = Budget(deadline).share(SECTIONS[name][1] / left_shares)
        start = time.perf_counter()
        if budget.left() < 1.0:
            entry = {"status": "skipped: budget"}
        else:
            try:
                entry = {"status": "ok", **SECTIONS[name][0](setup, budget)}
            except OutOfBudget as err:
                entry = {"status": "skipped: budget", "error": str(err)}
            except Exception as err:  # recorded; the other sections still run
                entry = {"status": "error", "error": describe(err), "traceback": traceback.format_exc()[-4000:]}
                print(entry["traceback"], file=sys.stderr, flush=True)
        entry["seconds"] = time.perf_counter() - start
        entry["budget_s"] = budget.deadline - start
        report["sections"][name] = entry
        print(f"\n{section_markdown(name, entry)}", flush=True)
        write(report)
    report["finished"] = True
    report["seconds"] = time.perf_counter() - began
    report["targets"] = targets(report)
    write(report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--budget", type=float, default=330.0, help="seconds the whole check may take")
    parser.add_argument("--out", required=True, help="directory for gpu_check.json and gpu_check.md")
    parser.add_argument("--reduced", action="store_true", help="tiny sizes (N = 1, 2; one round): a CPU smoke run")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS),
                        help="the sections to run (always in the order engines, swa_step, hessian, scans)")
    parser.add_argument("--cifar-model", default="resnet20", choices=["resnet20", "wrn16x4"],
                        help="the CIFAR-sized network")
    parser.add_argument("--data-dir", default=os.environ.get("SWAMP_DATA_DIR", "data"),
                        help="where MNIST-1D is generated (offline) and cached")
    args = parser.parse_args(argv)
    if not args.out.strip():
        raise UserError("--out must name a directory, not an empty string")
    if not math.isfinite(args.budget) or args.budget <= 0:
        raise UserError("--budget must be a positive number of seconds")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device auto or cpu")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    out = Path(args.out)
    json_path, md_path = check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check-"))  # run files and resume states; removed at the end

    def write(report: dict) -> None:
        atomic_write_text(json_path, json.dumps(_finite(report), indent=1) + "\n")
        atomic_write_text(md_path, markdown(report, MD_TITLE, machine_line(report["machine"])))

    try:
        age = process_age() if __name__ == "__main__" else 0.0  # run as a program, its start-up counts
        report = run_check(Setup(device, args.reduced, args.data_dir, scratch, args.cifar_model), args.budget, write,
                           [name for name in SECTIONS if name in args.sections], age=age)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nwrote {json_path} and {md_path} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
