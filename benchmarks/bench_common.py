"""What the ``bench_*`` scripts share: the machine's description, data, timing and table printing."""

from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from core.data import TensorDataset, load_mnist1d, mnist1d_spec
from core.data.cifar import CIFAR_MEAN, CIFAR_STD

DATA_DIR = os.environ.get("SWAMP_DATA_DIR", "data")


def machine() -> str:
    """One line: CPU model and cores, GPU, torch version, thread count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {gpu}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of ``fn()`` on ``clock``: wall-clock by default, GPU work included; ``time.process_time`` counts
    only this process's CPU time, which other jobs on a busy machine do not inflate (CPU work only)."""
    sync(device)
    began = clock()
    fn()
    sync(device)
    return clock() - began


def paired_rounds(fns: Sequence[Callable[[], object]], rounds: int, device: torch.device,
                  until: float = math.inf, clock: Callable[[], float] = time.perf_counter) -> list[list[float]]:
    """Seconds of every one of ``fns`` in each of ``rounds`` rounds (``result[round][i]``, on ``clock``, see
    :func:`timed`), the order reversed in every other round (A B C, C B A, ...), so that load from other jobs on
    a shared machine and any drift (clocks, caches) hit all of them alike; ratios are then taken within a round.
    A round that the previous one's duration says would end after ``until`` (a ``time.perf_counter()`` value)
    is not started."""
    times: list[list[float]] = []
    for r in range(rounds):
        if times and time.perf_counter() + sum(times[-1]) > until:
            break
        order = list(range(len(fns)))[:: -1 if r % 2 else 1]
        row = [0.0] * len(fns)
        for i in order:
            row[i] = timed(fns[i], device, clock)
        times.append(row)
    return times


def alternating(fns: Sequence[Callable[[], object]], repeats: int, device: torch.device) -> list[float]:
    """Median seconds of each of ``fns`` over ``repeats`` :func:`paired_rounds`."""
    rounds = paired_rounds(fns, repeats, device)
    return [statistics.median(r[i] for r in rounds) for i in range(len(fns))]


def ratio_summary(ratios: Sequence[float]) -> dict[str, float]:
    """Median, min and max of per-round ratios (each a time over its own round's baseline)."""
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def _status_mib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith(key))
    except (OSError, StopIteration):
        return None


def rss_mib() -> float:
    """This process's resident memory now (MiB)."""
    now = _status_mib("VmRSS:")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start a new peak-RSS measurement (Linux: ``/proc/self/clear_refs``; elsewhere the lifetime peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak resident memory (MiB) since :func:`reset_peak_rss`."""
    peak = _status_mib("VmHWM:")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cifar_like_uint8(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random CIFAR-shaped images (N, 32, 32, 3) uint8 and labels: CIFAR's size and format."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.int64)


def cifar_like(n: int, device: torch.device, seed: int = 0) -> TensorDataset:
    """:func:`cifar_like_uint8` as the toolkit holds CIFAR-10: normalised floats on ``device``, crop + flip."""
    images, labels = cifar_like_uint8(n, seed)
    mean = torch.tensor(CIFAR_MEAN["cifar10"]).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD["cifar10"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    y = torch.from_numpy(labels)
    spec = {"name": "cifar-like", "samples": n, "seed": seed}
    return TensorDataset(spec, 10, x, y, x[:1000], y[:1000], augment="crop_flip").to(device)


def dataset_for(model: str, device: torch.device, samples: int) -> TensorDataset:
    """MNIST-1D (the real, generated data) for its models, CIFAR-like data for the image models."""
    if model in ("mlp", "cnn1d"):
        return load_mnist1d(mnist1d_spec(DATA_DIR)).to(device)
    return cifar_like(samples, device)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
