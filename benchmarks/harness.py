"""The one benchmark harness: paired, order-rotated timing, the machine's line, a SWAMP checkpoint, data, tables.

Every benchmark times its sides with :func:`paired`: each round runs every side once, the order rotated
by one place per round (A B C, B C A, C A B, ...: with two sides, alternating), so that load from other
jobs on a shared machine and drift (clocks, caches, frequency) hit all sides alike; the first ``warmup``
rounds are run and discarded on every side; each side's figure is the median (and min-max) of its
*paired* per-round ratio to the reference side, wall-clock (``time.perf_counter``) and CPU time
(this process's plus its finished children's, which waiting for a busy core does not inflate). Every
benchmark prints :func:`machine` first. The Hessian and scan benchmarks run on a real SWAMP average
(:func:`swamp_checkpoint`), cached under ``benchmarks/.cache`` (git-ignored).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.data import TensorDataset, load_mnist1d, mnist1d_spec
from core.data.cifar import CIFAR_MEAN, CIFAR_STD

DATA_DIR = os.environ.get("SWAMP_DATA_DIR", "data")
CACHE = Path(__file__).resolve().parent / ".cache"


def machine() -> str:
    """One line: CPU model, logical CPUs (and those this process may use), GPU, torch version and threads,
    and the load average now (the machine may be shared)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{cpu}, {os.cpu_count()} logical CPUs ({usable} usable), {gpu}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, load average {load}")


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children that have been waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class Measured:
    """What a timed function may return to report its own seconds (e.g. a child process that times one
    section of its work) in place of the harness's timing of the whole call."""

    wall: float
    cpu: float


@dataclass(frozen=True)
class Ratio:
    """Median and range of the paired per-round ratios of one side to the reference side."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.3f} ({self.low:.2f}-{self.high:.2f})"


@dataclass(frozen=True)
class Side:
    """One side's seconds per measured round (warm-up excluded) and its paired ratios to the reference."""

    name: str
    wall: tuple[float, ...]
    cpu: tuple[float, ...]
    wall_ratio: Ratio
    cpu_ratio: Ratio

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


@dataclass(frozen=True)
class Paired:
    """The result of :func:`paired`: every side (the reference first), the rounds measured and warm-up
    rounds discarded, and the order each round ran in (warm-up rounds included)."""

    reference: str
    sides: tuple[Side, ...]
    rounds: int
    warmup: int
    orders: tuple[tuple[str, ...], ...]

    def __getitem__(self, name: str) -> Side:
        return next(s for s in self.sides if s.name == name)

    def line(self) -> str:
        """How it was measured, for a benchmark's printout."""
        return (f"{self.rounds} paired rounds after {self.warmup} warm-up round(s), order rotated every round; "
                f"ratios: median (min-max) of per-round ratios to {self.reference!r}")


def _ratio(values: Sequence[float], base: Sequence[float]) -> Ratio:
    r = [v / b if b > 0 else math.nan for v, b in zip(values, base, strict=True)]
    return Ratio(statistics.median(r), min(r), max(r))


def paired(fns: Mapping[str, Callable[[], object]], rounds: int = 7, warmup: int = 1, reference: str | None = None,
           device: torch.device | None = None, wall_clock: Callable[[], float] = time.perf_counter,
           cpu_clock: Callable[[], float] = cpu_seconds, on_round: Callable[[int, dict], None] | None = None
           ) -> Paired:
    """Time every one of ``fns`` once per round, ``warmup + rounds`` rounds, in an order rotated every round.

    Round ``r`` runs the sides from index ``r mod n`` on (``n = len(fns)``): each side runs in each position
    equally often over ``n`` rounds. The first ``warmup`` rounds are discarded for every side alike. For
    side ``s``, reference ``b`` and measured round ``r`` the paired ratio is :math:`t_{s,r} / t_{b,r}`
    (wall and CPU each); the result gives the median and min-max of those ratios, not a ratio of medians,
    so a slow round (another job) cancels out within its pair. A function that returns a :class:`Measured`
    reports its own seconds. CUDA work is synchronised around each call when ``device`` is a GPU.

    Args:
        fns: name -> a call that does one side's work once; insertion order is the rotation's order.
        rounds: measured rounds (at least 1; benchmarks' full modes use at least 7).
        warmup: rounds run first and discarded (at least 1: first-call costs are no side's steady cost).
        reference: the side ratios are taken to (default: the first).
        device: synchronised before and after each call when it is a CUDA device.
        wall_clock, cpu_clock: the clocks (seconds); tests pass fake ones.
        on_round: called after each round with its index and ``{name: (wall, cpu)}`` (progress printing).

    Returns:
        A :class:`Paired`.

    >>> ticks = iter(range(100))
    >>> clock = lambda: float(next(ticks))
    >>> p = paired({"a": lambda: None, "b": lambda: None}, rounds=2, warmup=1, wall_clock=clock, cpu_clock=clock)
    >>> p.orders
    (('a', 'b'), ('b', 'a'), ('a', 'b'))
    >>> p["b"].wall_ratio.median
    1.0
    """
    names = list(fns)
    if not names:
        raise ValueError("paired needs at least one function")
    if rounds < 1 or warmup < 1:
        raise ValueError(f"paired needs rounds >= 1 and warmup >= 1, got rounds={rounds}, warmup={warmup}")
    reference = names[0] if reference is None else reference
    if reference not in fns:
        raise ValueError(f"reference {reference!r} is not one of {names}")
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    orders = []
    for r in range(warmup + rounds):
        order = tuple(names[r % len(names):] + names[:r % len(names)])
        orders.append(order)
        row = {}
        for name in order:
            if device is not None:
                sync(device)
            w0, c0 = wall_clock(), cpu_clock()
            out = fns[name]()
            if device is not None:
                sync(device)
            w1, c1 = wall_clock(), cpu_clock()
            row[name] = (out.wall, out.cpu) if isinstance(out, Measured) else (w1 - w0, c1 - c0)
        if r >= warmup:
            for name, (w, c) in row.items():
                wall[name].append(w)
                cpu[name].append(c)
        if on_round is not None:
            on_round(r, row)
    sides = tuple(Side(n, tuple(wall[n]), tuple(cpu[n]), _ratio(wall[n], wall[reference]),
                       _ratio(cpu[n], cpu[reference])) for n in [reference] + [n for n in names if n != reference])
    return Paired(reference, sides, rounds, warmup, tuple(orders))


def swamp_checkpoint(model: str = "cnn1d", cycles: int = 2, epochs: int = 2, particles: int = 2, seed: int = 0,
                     data_dir: str = DATA_DIR, cache: Path = CACHE) -> Path:
    """A SWAMP run made by the toolkit (``python -m training.swamp``, MNIST-1D), cached in ``cache``;
    returns the run directory, whose ``cycle_KK/average.safetensors`` are SWAMP averages (the last cycle's
    is the sparsest) and ``cycle_KK/particle_PP.safetensors`` its particles. Made once (about a minute on
    one CPU for the defaults), then reused.

    Args:
        model, cycles, epochs, particles, seed: the run's settings (the ``training.swamp`` flags).
        data_dir: where MNIST-1D lives.
        cache: the folder of cached runs.

    Returns:
        The run directory.
    """
    out = cache / f"swamp-{model}-c{cycles}-e{epochs}-p{particles}-s{seed}"
    last = out / f"cycle_{cycles - 1:02d}" / "average.safetensors"
    if not last.exists():
        cmd = [sys.executable, "-m", "training.swamp", "--model", model, "--cycles", str(cycles), "--epochs",
               str(epochs), "--particles", str(particles), "--seed", str(seed), "--data-dir", data_dir,
               "--out", str(out), "--overwrite", "--no-progress"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
    return out


def swamp_average(model: str = "cnn1d", data_dir: str = DATA_DIR) -> tuple[torch.nn.Module, Path]:
    """The last cycle's SWAMP average of :func:`swamp_checkpoint` (its masks applied, BatchNorm recomputed by
    the run) as an eval-mode module on the CPU, and the checkpoint's path."""
    from core.artifacts.checkpoint import build_model, load_checkpoint

    run = swamp_checkpoint(model, data_dir=data_dir)
    path = sorted(run.glob("cycle_*/average.safetensors"))[-1]
    return build_model(load_checkpoint(path), "cpu").eval(), path


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


def cifar_dataset(images: np.ndarray, labels: np.ndarray, device: torch.device, spec: dict) -> TensorDataset:
    """uint8 (N, 32, 32, 3) images and labels as the toolkit holds CIFAR-10: normalised floats on ``device``,
    crop + flip augmentation."""
    mean = torch.tensor(CIFAR_MEAN["cifar10"]).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD["cifar10"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    y = torch.from_numpy(labels)
    return TensorDataset(spec, 10, x, y, x[:1000], y[:1000], augment="crop_flip").to(device)


def cifar_like(n: int, device: torch.device, seed: int = 0) -> TensorDataset:
    """:func:`cifar_like_uint8` as the toolkit holds CIFAR-10 (:func:`cifar_dataset`)."""
    images, labels = cifar_like_uint8(n, seed)
    return cifar_dataset(images, labels, device, {"name": "cifar-like", "samples": n, "seed": seed})


def fakedata_cifar(n: int, device: torch.device, seed: int = 0) -> TensorDataset:
    """``n`` images of torchvision's ``FakeData`` (3 x 32 x 32, 10 classes) as the toolkit holds CIFAR-10
    (:func:`cifar_dataset`)."""
    from torchvision.datasets import FakeData

    fake = FakeData(size=n, image_size=(3, 32, 32), num_classes=10, random_offset=seed)
    pairs = [fake[i] for i in range(n)]
    images = np.stack([np.asarray(img, dtype=np.uint8) for img, _ in pairs])
    labels = np.array([int(label) for _, label in pairs], dtype=np.int64)
    return cifar_dataset(images, labels, device, {"name": "torchvision-fakedata", "samples": n, "seed": seed})


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
