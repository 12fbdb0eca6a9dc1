"""The toolkit on a GPU: every test runs on the CPU (in CI) and, marked ``cuda``, on CUDA where torch sees a
GPU (``python -m pytest -m cuda tests/test_cuda.py`` runs exactly the CUDA variants; conftest skips them
elsewhere), so that the GPU paths are asserted by the same lines that run on every commit. The tests
come in order of how exactly their tolerances are known (exact equalities first; last the compile test,
which also needs inductor's toolchain), so that ``-x`` on a GPU loses as little as possible.

Tolerances are named below with the reason for each. On CUDA, PyTorch's defaults are kept as users get
them: float32 matrix products in full float32 (``torch.backends.cuda.matmul`` without TF32) and cuDNN
convolutions in TF32 (10-bit mantissa operands, about 1e-3 relative per convolution). The CPU numbers
quoted are measured; the CUDA-only margins (CUDA_STACKED, and the TF32 part of LOSS_ATOL, ACCURACY_ATOL
and HVP_TERM_RTOL) are estimated from that arithmetic until a GPU run measures them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, make_run
from test_data_sources import batches, fakedata, same
from test_engines import (
    ONE_PROCESS,
    ROUNDING,
    _assert_runs_match,
    _assert_same_files,
    _interrupted,
    _particles,
    _resume,
    _resume_states,
    assert_stacked_trains_each_particle,
)

import core.data.loader as loader
from core.artifacts.checkpoint import build_model, load_checkpoint
from core.data import load_dataset
from landscape.curvature import hessian_trace
from landscape.tools.artifacts import EvalOptions, cached_dataset
from landscape.tools.barrier import checkpoint_barrier
from training.swamp import main as swamp_main

DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)]
# One cycle of one epoch, no ticket training: the smallest run that trains, averages and evaluates.
ONE_EPOCH = ["--cycles", "1", "--epochs", "1", "--rewind-epochs", "0"]
# --amp and --channels-last against float32 on one device: bf16 autocast (8-bit mantissa) and the
# channels-last kernels round differently, and SGD carries that into a slightly different trajectory. On
# the conv2d net (CONV2D_SOURCE) the final average must keep its test accuracy (1,000 MNIST-1D test
# samples) within SWITCH_ACCURACY (absolute) and its test loss within SWITCH_LOSS (relative) of the float32
# run's. Measured on the CPU (one epoch, 2 particles): --amp 0.1 points and 0.03%, --channels-last 0 points
# and 0.001%. (On resnet20 with a handful of CIFAR-sized images one epoch is too few steps to be stable:
# runs that differ by rounding end 10 to 30 points apart, so such a run could not test this.)
SWITCH_ACCURACY = 0.02
SWITCH_LOSS = 0.02
# A user model (naming it with --model consents to importing it): cnn1d's kind of network written with
# 2-D convolutions (1 x 5 kernels) over MNIST-1D seen as 1 x 40 images, so that --channels-last applies.
CONV2D = "conv2d_mnist1d"
CONV2D_SOURCE = """
from torch import nn


def block(cin, cout, stride):
    return [nn.Conv2d(cin, cout, (1, 5), stride=(1, stride), padding=(0, 2)), nn.BatchNorm2d(cout), nn.ReLU()]


class Conv2dNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(*block(1, 16, 1), *block(16, 32, 2), *block(32, 32, 2),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.features(x[:, None, None, :]))
"""
# The stacked cnn1d on CUDA against three separate models: cuDNN picks its algorithm (implicit GEMM,
# Winograd, FFT, all TF32 by default) per shape, so a grouped and an ungrouped convolution may round
# differently by up to about 1e-4 relative: ten times the CPU's grouped-vs-separate tolerance (test_engines).
CUDA_STACKED = {"rtol": 1e-3, "atol": 1e-5}
# Landscape numbers on CUDA against the CPU's (same checkpoints, batches and BN subsample): TF32
# convolutions change each logit by about 1e-3 relative; the mean test loss (1,000 samples) and the
# barrier (a difference of such means) move by far less than LOSS_ATOL, and only predictions that are
# near ties can flip (ACCURACY_ATOL: 10 of the 1,000).
LOSS_ATOL = 5e-3
ACCURACY_ATOL = 0.01
# Hessian-vector products on CUDA: the same probes (drawn on the CPU) give each term v^T H v to within the
# rounding of TF32 in forward, backward and double backward (about 1e-3 of the terms' mean magnitude; on
# the CPU, float32 against float64: 5e-7). HVP_TERM_RTOL leaves a margin of 50 and still fails for another
# probe, whose term would differ by about the terms' spread (42% of their mean magnitude on this model).
# The estimate must also lie within the CPU estimate's standard error (7.5% of it with 32 probes).
HVP_TERM_RTOL = 0.05


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def _average(run: Path) -> dict:
    return json.loads((run / "cycle_00" / "metrics.json").read_text())["average"]


def _assert_within_switch_tolerance(switched: Path, reference: Path) -> None:
    got, want = _average(switched), _average(reference)
    assert abs(got["test_acc"] - want["test_acc"]) <= SWITCH_ACCURACY, (got, want)
    assert abs(got["test_loss"] - want["test_loss"]) <= SWITCH_LOSS * want["test_loss"], (got, want)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two cnn1d particles (with BatchNorm) trained for one epoch on the CPU: the checkpoints the landscape
    tests evaluate on both devices."""
    return make_run(tmp_path_factory.mktemp("cnn") / "run", *ONE_EPOCH, "--particles", "2", "--device", "cpu")


@pytest.fixture(scope="module")
def conv2d_runs(tmp_path_factory: pytest.TempPathFactory):
    """``conv2d_runs(device, *switches)``: the run (one epoch, 2 particles) of the CONV2D net on ``device`` with
    ``switches``, trained once per module (the float32 run serves both switches). The sequential engine:
    --channels-last does not apply to stacked particles (docs/performance.md)."""
    root = tmp_path_factory.mktemp("conv2d")
    (root / f"{CONV2D}.py").write_text(CONV2D_SOURCE)
    done: dict[tuple[str, ...], Path] = {}

    def run(device: str, *switches: str) -> Path:
        key = (device, *switches)
        if key not in done:
            with pytest.MonkeyPatch.context() as patch:
                patch.chdir(root)  # user code is imported from the working directory
                done[key] = make_run(root / "-".join(key), *ONE_EPOCH, "--particles", "2", "--model",
                                     f"{CONV2D}:Conv2dNet", "--engine", "sequential", "--device", device,
                                     *switches)
        return done[key]

    yield run
    sys.modules.pop(CONV2D, None)


@pytest.mark.parametrize("engine", ONE_PROCESS)
@pytest.mark.parametrize("device", DEVICES)
def test_one_process_engine_equals_sequential(tmp_path, device, engine):
    """Four MLP particles trained by every registered one-process engine (vectorized: stacked into one model)
    equal the sequential engine's, trained one by one, up to the rounding of batched kernels (test_engines'
    ROUNDING; float32 matrix products on CUDA too)."""
    args = [*ONE_EPOCH, "--model", "mlp", "--particles", "4", "--device", device]
    sequential = make_run(tmp_path / "seq", *args, "--engine", "sequential")
    run = make_run(tmp_path / engine, *args, "--engine", engine)
    assert _config(run)["device"] == device
    _assert_runs_match(sequential, run, **ROUNDING)


@pytest.mark.parametrize("device", DEVICES)
def test_interrupted_run_resumes_byte_identical(tmp_path, monkeypatch, device):
    """Stopped in its second particle (the first finished) and resumed on the same device, a run ends with
    the bytes of an uninterrupted one: weights, momentum, SWA average and generators all resume exactly.
    (MLP: cuBLAS float32 products are deterministic; cuDNN may pick non-deterministic convolutions.)"""
    args = ["--cycles", "1", "--epochs", "2", "--particles", "2", "--rewind-epochs", "1", "--model", "mlp",
            "--engine", "sequential", "--device", device]
    whole = make_run(tmp_path / "whole", *args)
    cut = _interrupted(monkeypatch, tmp_path / "cut", args, 1 + 2 + 1)  # ticket, particle 0 (2), particle 1 (1)
    assert _resume_states(cut) == _particles(0, range(1, 2))
    assert swamp_main([*_resume(cut), "--device", device]) == 0
    _assert_same_files(whole, cut)


@pytest.mark.parametrize("device", DEVICES)
def test_streamed_batches_through_pinned_memory_equal_the_held_ones(monkeypatch, device):
    """A dataset streamed through a DataLoader (2 worker processes; pinned memory on CUDA, none on the CPU)
    delivers on the device exactly the batches of the same dataset held there as one tensor."""
    spec = {**fakedata(), "workers": 2}
    held = load_dataset(spec, device)
    pinned: list[bool] = []
    real = loader._unwrapped

    def recording(data_loader, *names):
        for x, y in real(data_loader, *names):
            pinned.append(x.is_pinned())
            yield x, y

    monkeypatch.setattr(loader, "_unwrapped", recording)
    monkeypatch.setattr(loader, "MATERIALISE_LIMIT", 0)
    streamed = load_dataset(spec, device)
    assert isinstance(streamed, loader.StreamingDataset) and not isinstance(held, loader.StreamingDataset)
    got = batches(streamed, 4)
    assert got[0][0].device.type == device and same(batches(held, 4), got)
    assert same(list(held.eval_batches("test", 3)), list(streamed.eval_batches("test", 3)))
    assert pinned and set(pinned) == {device == "cuda"}, "pinned memory exactly where batches go to a GPU"


@pytest.mark.parametrize("device", DEVICES)
def test_streamed_run_equals_the_held_run(tmp_path, monkeypatch, device):
    """A whole run (MLP, FakeData) reading its data through the DataLoader (in the main process, pinning
    on CUDA) trains the same weights as one holding the data on the device: the same batches in the same
    order give the same numbers."""
    args = [*ONE_EPOCH, "--particles", "2", "--model", "mlp", "--dataset", "torchvision:FakeData",
            "--dataset-kwargs", '{"size": 200, "image_size": [8, 5], "num_classes": 10}', "--batch-size", "40",
            "--workers", "0", "--device", device]
    held = make_run(tmp_path / "held", *args)
    monkeypatch.setattr(loader, "MATERIALISE_LIMIT", 0)
    streamed = make_run(tmp_path / "streamed", *args)
    _assert_runs_match(held, streamed, rtol=0, atol=0)  # equal tensors (the metadata differ: "workers")
    assert _average(held) == _average(streamed)


@pytest.mark.parametrize("device", DEVICES)
def test_hessian_trace_on_the_device_equals_the_cpus(cnn_run, device):
    """Hutchinson with one seed draws the same probes on every device (on the CPU), so the device's estimate
    is the CPU's up to the rounding of each product: within the CPU estimate's standard error, term by term
    within HVP_TERM_RTOL."""
    ckpt = load_checkpoint(cnn_run / "cycle_00" / "particle_00.safetensors")
    data = cached_dataset(ckpt.dataset, "cpu", DATA_DIR)
    x, y = data.x_train[:256], data.y_train[:256]

    def trace(where: str):
        model = build_model(ckpt, where)
        return hessian_trace(model, (x.to(where), y.to(where)), probes=32, seed=0, masks=ckpt.masks)

    cpu, here = trace("cpu"), trace(device)
    assert here.matvecs == cpu.matvecs == 32
    assert abs(here.estimate - cpu.estimate) <= cpu.stderr, (here.estimate, cpu.estimate, cpu.stderr)
    scale = float(np.mean(np.abs(cpu.samples)))
    np.testing.assert_allclose(here.samples, cpu.samples, rtol=0, atol=HVP_TERM_RTOL * scale)


@pytest.mark.parametrize("device", DEVICES)
def test_barrier_on_the_device_equals_the_cpus(cnn_run, device):
    """The loss and error curves between two particles (BatchNorm recalibrated at every point on the same
    seeded train samples) and both barriers, on the device against the CPU (LOSS_ATOL, ACCURACY_ATOL)."""
    a, b = (cnn_run / "cycle_00" / f"particle_0{p}.safetensors" for p in (0, 1))

    def barrier(where: str):
        return checkpoint_barrier(a, b, points=5, options=EvalOptions(("test",), device=where,
                                                                       data_dir=str(DATA_DIR), progress=False))

    cpu, here = barrier("cpu"), barrier(device)
    assert here.device.startswith(device)
    np.testing.assert_allclose(here.curves["test"].loss, cpu.curves["test"].loss, rtol=0, atol=LOSS_ATOL)
    np.testing.assert_allclose(here.curves["test"].acc, cpu.curves["test"].acc, rtol=0, atol=ACCURACY_ATOL)
    for kind in ("barrier", "barrier_max"):
        got, want = getattr(here, kind)["test"], getattr(cpu, kind)["test"]
        assert abs(got.loss - want.loss) <= LOSS_ATOL and abs(got.error - want.error) <= ACCURACY_ATOL


@pytest.mark.parametrize("switch", ["--amp", "--channels-last"])
@pytest.mark.parametrize("device", DEVICES)
def test_switched_run_is_recorded_and_within_the_stated_accuracy_of_float32(conv2d_runs, device, switch):
    """``--amp`` (bf16 autocast) and ``--channels-last`` each record themselves in config.json, and the run's
    average ends within SWITCH_ACCURACY and SWITCH_LOSS of the plain float32 run's on the same device."""
    plain, switched = conv2d_runs(device), conv2d_runs(device, switch)
    field = switch.removeprefix("--").replace("-", "_")
    assert (_config(plain)[field], _config(switched)[field]) == (False, True)
    particle = "cycle_00/particle_00.safetensors"
    assert (switched / particle).read_bytes() != (plain / particle).read_bytes(), "other kernels ran"
    _assert_within_switch_tolerance(switched, plain)


@pytest.mark.cuda
def test_stacked_batchnorm_particles_equal_separate_models_on_cuda():
    """The vectorized engine's per-particle BatchNorm on CUDA (the CPU's is test_engines'): three steps of
    the stacked model against three models, where whole runs (MLP, above) have no BatchNorm to compare."""
    assert_stacked_trains_each_particle("cuda", **CUDA_STACKED)


@pytest.mark.cuda
def test_compile_run_is_recorded_and_equals_the_eager_run_on_cuda(tmp_path):
    """One MLP particle compiled with inductor on CUDA (one tiny graph: the first compile costs most of
    this test). Inductor fuses the element-wise work around cuBLAS products and so rounds differently:
    equal up to test_engines' ROUNDING. The CPU's --compile run is test_runtime_switches' (20 s there)."""
    args = [*ONE_EPOCH, "--model", "mlp", "--particles", "1", "--device", "cuda"]
    torch._dynamo.utils.counters.clear()
    eager, compiled = make_run(tmp_path / "eager", *args), make_run(tmp_path / "compiled", *args, "--compile")
    assert (_config(eager)["compile"], _config(compiled)["compile"]) == (False, True)
    counters = {k: dict(v) for k, v in torch._dynamo.utils.counters.items()}
    assert counters.get("frames", {}).get("ok", 0) >= 1, f"the training model was really compiled: {counters}"
    _assert_runs_match(eager, compiled, **ROUNDING)
