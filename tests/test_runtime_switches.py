"""--amp, --channels-last and --compile on the CPU: they run, config.json records them, and --resume
refuses a changed --amp (it changes the numbers) but accepts changed runtime fields (RUNTIME_FIELDS)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR
from safetensors import safe_open
from test_data import write_cifar10

from core.errors import run_cli
from training.swamp import main as swamp_main

# One cycle of two particles, no ticket training: the smallest run that trains, averages and resumes.
SMALL = ["--cycles", "1", "--epochs", "2", "--particles", "2", "--rewind-epochs", "0", "--no-progress"]
MLP = [*SMALL, "--model", "mlp", "--data-dir", str(DATA_DIR)]
LAST_PARTICLE = "cycle_00/particle_01.safetensors"


@pytest.fixture(scope="module")
def cifar_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A 2-D model (channels-last matters only for 2-D convolutions) on a 120-image CIFAR-10 stand-in."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root)
    return [*SMALL, "--dataset", "cifar10", "--data-dir", str(root), "--model", "resnet20",
            "--model-kwargs", '{"width": 4}', "--batch-size", "50"]


def _run(out: Path, *args: str) -> Path:
    assert run_cli(swamp_main, [*args, "--out", str(out)]) == 0
    return out


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


def _stop_before_last_particle(run: Path) -> None:
    """Leave ``run`` as a run stopped while its last particle trained (before it had saved an epoch)."""
    for name in (LAST_PARTICLE, "cycle_00/average.safetensors", "cycle_00/metrics.json", "results.csv"):
        (run / name).unlink()


def test_amp_runs_is_recorded_and_a_changed_amp_is_refused_on_resume(tmp_path, capsys):
    plain, amp = _run(tmp_path / "plain", *MLP), _run(tmp_path / "amp", *MLP, "--amp")
    assert (_config(plain)["amp"], _config(amp)["amp"]) == (False, True)
    assert (amp / LAST_PARTICLE).read_bytes() != (plain / LAST_PARTICLE).read_bytes(), "bf16 autocast took effect"
    capsys.readouterr()
    for run, was, now in ((amp, True, False), (plain, False, True)):
        _stop_before_last_particle(run)
        flag = "--amp" if now else "--no-amp"
        assert run_cli(swamp_main, ["--out", str(run), "--resume", flag]) == 2
        assert capsys.readouterr().err == (f"error: cannot resume {run}: --amp was {was}, now {now}; resume with "
                                           "the original settings (and the program that started the run)\n")
        assert not (run / LAST_PARTICLE).exists(), "a refused resume trains nothing"


@pytest.mark.parametrize("switch", ["--compile", "--channels-last"])
def test_runtime_switch_runs_is_recorded_and_may_change_on_resume(tmp_path, cifar_args, switch):
    """Each switch runs on the CPU (``--compile``: torch.compile with inductor) and is recorded. Resumed
    without it, the particle still to train is trained exactly as in a run that never had it.

    Equality of the switched particles with plain ones: ``--compile`` agrees to rounding (inductor
    fuses and reorders float32 sums; 1.2e-7 measured). ``--channels-last`` is not compared: on the CPU
    the channels-last BatchNorm backward is ~100x less exact than the contiguous one, and through
    resnet20's BatchNorms gradients differ by ~1% after one step (ticket weights 3.5e-3 after two)."""
    args = MLP if switch == "--compile" else cifar_args
    field = switch.removeprefix("--").replace("-", "_")
    torch._dynamo.utils.counters.clear()
    plain, on = _run(tmp_path / "plain", *args), _run(tmp_path / "on", *args, switch)
    assert (_config(plain)[field], _config(on)[field]) == (False, True)
    if switch == "--compile":
        assert torch._dynamo.utils.counters["frames"]["ok"] >= 1, "the training model was really compiled"
        first = "cycle_00/particle_00.safetensors"
        reference, compiled = _tensors(plain / first), _tensors(on / first)
        for key in reference:
            torch.testing.assert_close(compiled[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)
    _stop_before_last_particle(on)
    _run(on, "--resume", switch.replace("--", "--no-"))
    assert (on / LAST_PARTICLE).read_bytes() == (plain / LAST_PARTICLE).read_bytes()
    assert _config(on)[field] is True, "config.json keeps what the run started with"
