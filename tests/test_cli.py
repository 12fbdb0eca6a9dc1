"""Command lines: bad input gives one clear line and exit status 2; presets resolve as documented."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import DATA_DIR

from core.errors import run_cli
from training import imp, swamp
from training.config import parse_config


@pytest.mark.parametrize("args, message", [
    (["--prune-ratio", "1.5"], "--prune-ratio must lie in (0, 1)"),
    (["--prune-ratio", "0"], "--prune-ratio must lie in (0, 1)"),
    (["--prune-schedule", "linear", "--prune-ratio", "0.25", "--cycles", "5"],
     "--prune-schedule linear with --prune-ratio 0.25 reaches density 0 at cycle 4; use at most --cycles 4"),
    (["--prune-schedule", "cubic"], "--prune-schedule"),
    (["--particles", "0"], "--particles must be at least 1"),
    (["--swa-start", "1.0"], "--swa-start must lie in [0, 1)"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--lr", "-1"], "learning rates must be positive"),
    (["--model-kwargs", "{bad"], "--model-kwargs is not valid JSON"),
    (["--model", "nonet"], "unknown model 'nonet'"),
    (["--preset", "nothere"], "unknown preset 'nothere'"),
    (["--device", "cuda:7"], "GPU"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar10 not found"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    code = run_cli(swamp.main, [*args, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists(), "a refused run leaves no directory behind"


def test_existing_run_is_not_overwritten_without_a_flag(tiny_run, capsys):
    before = (tiny_run / "config.json").read_text()
    code = run_cli(swamp.main, ["--out", str(tiny_run), "--cycles", "1"])
    assert code == 2 and "--resume" in capsys.readouterr().err
    assert (tiny_run / "config.json").read_text() == before


def test_resume_with_changed_hyperparameters_is_refused(tiny_run, capsys):
    code = run_cli(swamp.main, ["--out", str(tiny_run), "--resume", "--lr", "0.3"])
    assert code == 2 and "--lr was 0.1, now 0.3" in capsys.readouterr().err


def test_resume_of_a_finished_run_needs_no_flags_and_changes_nothing(tiny_run, capsys):
    before = {p: p.read_bytes() for p in tiny_run.rglob("*") if p.is_file()}
    assert run_cli(swamp.main, ["--out", str(tiny_run), "--resume", "--no-progress"]) == 0
    assert "cycle" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in tiny_run.rglob("*") if p.is_file()} == before


def test_presets_and_imp_defaults():
    cfg = parse_config([], "swamp", "")
    assert (cfg.preset, cfg.dataset, cfg.model, cfg.particles, cfg.swa) == ("mnist1d", "mnist1d", "cnn1d", 4, True)
    assert (cfg.prune_ratio, cfg.swa_start, cfg.swa_lr) == (0.2, 0.75, 0.05)
    assert 0.8 ** (cfg.cycles - 1) < 0.1, "the default run reaches at least 90% sparsity"
    cifar = parse_config(["--dataset", "cifar10"], "swamp", "")
    assert (cifar.model, cifar.epochs, cifar.swa_lr, cifar.particles) == ("wrn28x2", 150, 0.05, 4)
    assert parse_config(["--preset", "imagenet-resnet50"], "swamp", "").epochs == 40
    imp_cfg = parse_config([], "imp", "", imp.IMP_DEFAULTS)
    assert (imp_cfg.particles, imp_cfg.swa) == (1, False)
    assert parse_config(["--particles", "3"], "imp", "", imp.IMP_DEFAULTS).particles == 3


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "training.swamp", "--particles", "-2", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --particles must be at least 1"


def test_the_one_shot_command_is_the_library_run_and_refuses_particles(tmp_path, capsys):
    from training import oneshot

    flags = ["--cycles", "2", "--epochs", "1", "--rewind-epochs", "0", "--no-progress", "--data-dir", str(DATA_DIR)]
    assert run_cli(oneshot.main, [*flags, "--out", str(tmp_path / "cli")]) == 0
    assert "run directory:" in capsys.readouterr().out
    oneshot.run_oneshot(parse_config([*flags, "--out", str(tmp_path / "lib")], "oneshot", "", oneshot.IMP_DEFAULTS))
    for name in ("cycle_00/average.safetensors", "cycle_01/average.safetensors"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes()
    config = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert (config["pruning_schedule"], config["particles"], config["swa"]) == ("one-shot", 1, False)
    assert run_cli(oneshot.main, [*flags, "--particles", "2", "--out", str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err.strip() == ("error: python -m training.oneshot trains one particle per density; "
                                               "--particles 2 is not a one-shot baseline")


def test_a_one_shot_run_cannot_be_resumed_as_iterative_pruning(tmp_path, capsys):
    from training.config import parse_config
    from training.oneshot import run_oneshot

    out = str(tmp_path / "oneshot")
    run_oneshot(parse_config(["--cycles", "1", "--epochs", "1", "--particles", "1", "--no-swa",
                              "--rewind-epochs", "0", "--no-progress", "--out", out], "oneshot", ""))
    assert run_cli(swamp.main, ["--out", out, "--resume", "--cycles", "1"]) == 2
    assert "pruning_schedule was 'one-shot', now None" in capsys.readouterr().err
