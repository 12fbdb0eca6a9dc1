"""Pruning schedules (geometric, linear), biases pruned on request and the MNIST-1D lottery-ticket MLP: the
densities each cycle trains at, pruned biases held at exactly 0, and the reproduction driver's commands."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from core.errors import run_cli
from core.models import build_model, model_spec
from core.pruning import cycle_ratios, kept_per_cycle, max_linear_cycles, target_densities
from training import swamp

QUICK = ["--model", "mlp", "--model-kwargs", '{"hidden": 16, "residual": true}', "--epochs", "1", "--particles", "1",
         "--no-swa", "--rewind-epochs", "0", "--no-progress", "--batch-size", "256", "--device", "cpu"]


def test_schedules_give_their_densities_exactly():
    assert target_densities("linear", 0.1, 5) == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6])
    assert target_densities("geometric", 0.2, 4) == pytest.approx([1.0, 0.8, 0.64, 0.512])
    ratios = cycle_ratios("linear", 0.1, 5)
    assert ratios == pytest.approx([0.1, 1 / 9, 1 / 8, 1 / 7])
    assert kept_per_cycle([99_000], ratios, 5) == [99_000, 89_100, 79_200, 69_300, 59_400]
    assert cycle_ratios("geometric", 0.2, 3) == [0.2, 0.2]  # exactly the ratio: the default runs keep their bytes
    assert max_linear_cycles(1 / 99) == 99
    with pytest.raises(ValueError, match="reaches density 0"):
        target_densities("linear", 0.25, 5)
    with pytest.raises(ValueError, match="unknown pruning schedule"):
        target_densities("cubic", 0.2, 3)


def test_residual_mlp_adds_its_second_layer_to_its_input():
    net = build_model(model_spec("mlp", 10, {"hidden": 8, "residual": True}))
    x = torch.randn(3, 40)
    h = torch.relu(net.linear1(x))
    assert torch.allclose(net(x), net.linear3(h + torch.relu(net.linear2(h))))


def test_linear_schedule_with_biases_prunes_weights_and_biases_to_each_density(tmp_path):
    out = tmp_path / "run"
    code = run_cli(swamp.main, [*QUICK, "--prune-schedule", "linear", "--prune-ratio", "0.25", "--cycles", "4",
                                "--prune-biases", "--prune-method", "layerwise", "--out", str(out)])
    assert code == 0
    with open(out / "results.csv", newline="") as f:
        densities = [float(r["density"]) for r in csv.DictReader(f)]
    assert densities == pytest.approx([1.0, 0.75, 0.5, 0.25], abs=2e-3)  # per-tensor rounding
    state = load_file(str(out / "cycle_03" / "average.safetensors"))
    masks = {k[len("mask."):]: v for k, v in state.items() if k.startswith("mask.")}
    assert set(masks) == {f"linear{i}.{kind}" for i in (1, 2, 3) for kind in ("weight", "bias")}
    for name, mask in masks.items():
        assert bool((state[name][mask == 0] == 0).all()), f"pruned entries of {name} are not 0"
    for i in (1, 2, 3):  # each layer, its weight and bias ranked together, at the schedule's density
        layer = torch.cat([masks[f"linear{i}.weight"].flatten(), masks[f"linear{i}.bias"].flatten()])
        assert float(layer.mean()) == pytest.approx(0.25, abs=2 / layer.numel()), i
        assert 0 < int(masks[f"linear{i}.weight"].sum()) < masks[f"linear{i}.weight"].numel()
    config = json.loads((out / "config.json").read_text())
    assert config["prune_schedule"] == "linear" and config["prune_biases"] is True


def test_default_schedule_and_weights_only_stay_out_of_the_checkpoint_config(tmp_path):
    """Settings added after checkpoints existed are recorded in a checkpoint only when set, so default runs
    write the bytes they wrote before."""
    out = tmp_path / "run"
    assert run_cli(swamp.main, [*QUICK, "--cycles", "2", "--out", str(out)]) == 0
    from core.artifacts.checkpoint import load_checkpoint

    config = load_checkpoint(out / "cycle_01" / "average.safetensors").config
    assert "prune_schedule" not in config and "prune_biases" not in config
    masks = load_file(str(out / "cycle_01" / "average.safetensors"))
    assert not any(k.startswith("mask.") and k.endswith(".bias") for k in masks)


def test_lottery_reproduction_commands_follow_the_notebooks_schedule():
    from pathlib import Path

    from studies.reproductions.lottery import RATIO, TABLE_CYCLES, lottery_command, random_command

    command = lottery_command(0, Path("l"))
    settings = dict(zip(command[3::1], command[4::1], strict=False))
    assert settings["--prune-schedule"] == "linear" and float(settings["--prune-ratio"]) == pytest.approx(1 / 99)
    assert int(settings["--cycles"]) == max(TABLE_CYCLES) + 1 <= max_linear_cycles(RATIO)
    assert "--prune-biases" in command and settings["--optimizer"] == "adam" and settings["--lr"] == "0.02"
    r = random_command(1, 49, Path("r"))
    assert float(r[r.index("--prune-ratio") + 1]) == pytest.approx(49 / 99) and r[r.index("--cycles") + 1] == "2"


def test_lottery_driver_reads_each_runs_results_into_one_table(tmp_path, monkeypatch):
    """run_all gathers each run's results.csv (sparsity, final test accuracy) into lottery.csv and the table,
    beside the published numbers (the runs are replaced by files of known accuracies)."""
    from studies.reproductions import lottery

    def fake_run(command: list[str], out) -> None:
        cycles = int(command[command.index("--cycles") + 1])
        out.mkdir(parents=True)
        rows = ["cycle,density,sparsity,average_test_acc"]
        rows += [f"{c},{1 - c / 99},{c / 99},{0.5 + c / 1000 + 0.1 * ('random' in out.name)}" for c in range(cycles)]
        (out / "results.csv").write_text("\n".join(rows) + "\n")

    monkeypatch.setattr(lottery, "run_resuming", fake_run)
    rows = lottery.run_all(tmp_path, [0, 1], quick=True)
    with open(tmp_path / "lottery.csv", newline="") as f:
        assert [dict(r) for r in csv.DictReader(f)] == [{k: str(v) for k, v in r.items()} for r in rows]
    table = lottery.table(rows)
    assert "| 0.0% | 66.4, 64.8 (66.4, 65.4) | 50.0 ± 0.0 | 60.6, 61.4 (63.8, 65.2) | 50.0 ± 0.0 |" in table
    assert "| MLP | 68 | 50.0 ± 0.0 |" in table and "| CNN | 94 | 50.0 ± 0.0 |" in table
    assert [r["cycle"] for r in rows if r["method"] == "magnitude" and r["seed"] == 0] == [0, 1, 2, 3]
    lottery.figure(rows, tmp_path / "lottery.png")
    assert (tmp_path / "lottery.png").read_bytes().startswith(b"\x89PNG")
