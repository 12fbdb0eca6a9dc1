"""The runner with other optimizers and losses (--optimizer, --optimizer-kwargs, --loss, --label-smoothing;
optimizer_fn, loss_fn and on_step in run_swamp): pruned weights stay 0, resume stays byte-identical, the
stacked engines step aside, and what the run used is recorded."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from conftest import DATA_DIR, make_run
from safetensors import safe_open
from test_engines import RUN_ARGS, _assert_same_files, _interrupted, _resume

from core.artifacts.checkpoint import load_checkpoint
from core.errors import UserError, run_cli
from training import run_swamp
from training.config import resolve_config
from training.engines import auto_engine, session
from training.resume import load_train_state
from training.swamp import main as swamp_main

ADAM_ARGS = [*RUN_ARGS, "--particles", "1", "--optimizer", "adam", "--lr", "0.003",
             "--swa-lr", "0.001", "--optimizer-kwargs", '{"betas": [0.8, 0.99]}']
SMALL = {"particles": 1, "cycles": 2, "epochs": 1, "rewind_epochs": 1, "data_dir": str(DATA_DIR), "progress": False}


def nesterov_sgd(params, lr):
    """A user's optimizer_fn, importable by its name."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)


def test_interrupted_adam_run_resumes_byte_identically(tmp_path, monkeypatch):
    """Stopped after the first epoch of the particle of the pruned cycle 1 (saves: ticket, 2 epochs of
    cycle 0, then that one), the run resumes Adam's moments and step count: its files are the bytes of an
    uninterrupted run's."""
    whole = make_run(tmp_path / "whole", *ADAM_ARGS)
    cut = _interrupted(monkeypatch, tmp_path / "cut", ADAM_ARGS, 1 + 2 + 1)
    state = load_train_state(cut / ".resume" / "cycle_01_particle_00.safetensors", "cpu")
    assert set(state.optimizer_state) == {"exp_avg", "exp_avg_sq", "step"} and not state.momentum
    assert float(next(iter(state.optimizer_state["step"].values()))) > 0
    assert swamp_main(_resume(cut)) == 0
    _assert_same_files(whole, cut)
    with safe_open(str(whole / "cycle_01" / "average.safetensors"), framework="pt") as fh:
        recorded = json.loads(fh.metadata()["config"])
    assert recorded["optimizer"] == "adam" and recorded["optimizer_kwargs"] == '{"betas": [0.8, 0.99]}'


def test_pruned_weights_stay_zero_under_adamw_at_every_step(tmp_path):
    """AdamW with strong decoupled weight decay: at every step of the pruned cycle the weights under the
    cycle's mask are exactly 0; on_step sees every step of the ticket and of each particle, in order."""
    seen, states = [], []

    def on_step(info):
        seen.append((info.unit, info.cycle, info.particle, info.epoch, info.step))
        assert isinstance(info.loss, float) and info.loss == info.loss
        if info.cycle == 1:
            states.append({k: v.detach().clone() for k, v in info.model.state_dict().items()})

    result = run_swamp(optimizer="adamw", weight_decay=0.5, lr=0.01, swa_lr=0.005, out=str(tmp_path / "run"),
                       on_step=on_step, **SMALL)
    masks = load_checkpoint(result.run_dir / "cycle_01" / "particle_00.safetensors").masks
    assert states and 0 < sum(int(m.sum()) for m in masks.values()) < sum(m.numel() for m in masks.values())
    for state in states:
        assert all(bool((state[name][mask == 0] == 0).all()) for name, mask in masks.items())
    units = [s[:3] for s in seen]
    assert units[0] == ("ticket", None, None) and set(units) == {("ticket", None, None),
                                                               ("cycle_00_particle_00", 0, 0),
                                                               ("cycle_01_particle_00", 1, 0)}
    steps = [s[4] for s in seen if s[0] == "ticket"]
    assert steps == list(range(len(steps))) and len(steps) > 1


def test_optimizer_fn_is_recorded_by_name_and_resumed_only_with_consent(tmp_path, capsys):
    out = tmp_path / "run"
    result = run_swamp(optimizer_fn=nesterov_sgd, out=str(out), **{**SMALL, "cycles": 1})
    assert result.config.optimizer == f"{__name__}:nesterov_sgd"
    assert json.loads((out / "config.json").read_text())["optimizer"] == f"{__name__}:nesterov_sgd"
    assert run_cli(swamp_main, ["--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "optimizer" in err and "--trust-code" in err
    with pytest.raises(ValueError, match="no importable name"):
        run_swamp(optimizer_fn=lambda params, lr: torch.optim.Adam(params, lr), out=str(tmp_path / "x"), **SMALL)
    with pytest.raises(ValueError, match="two optimizers"):
        run_swamp(optimizer_fn=nesterov_sgd, optimizer="adam", out=str(tmp_path / "x"), **SMALL)
    with pytest.raises(ValueError, match="on_step"):
        run_swamp(on_step=print, engine="vectorized", out=str(tmp_path / "x"), **SMALL)


def test_other_optimizers_and_losses_run_on_the_sequential_engine():
    """``auto`` stacks 8 MLP particles on the CPU with SGD and cross-entropy, never with another optimizer
    or loss (the stacked engines train with those only)."""
    def auto(**settings: object) -> str:
        cfg = resolve_config(argparse.Namespace(model="mlp", particles=8, **settings))
        return auto_engine("mlp", "cpu", 8, stackable=cfg.stackable)

    assert auto() == "vectorized"
    assert auto(optimizer="adamw") == auto(loss="mse") == auto(label_smoothing=0.1) == "sequential"
    assert auto(optimizer_kwargs='{"nesterov": true}') == "sequential"


def test_label_smoothing_changes_training_and_is_recorded(tmp_path):
    plain = run_swamp(out=str(tmp_path / "plain"), **{**SMALL, "cycles": 1})
    smooth = run_swamp(label_smoothing=0.1, out=str(tmp_path / "smooth"), **{**SMALL, "cycles": 1})
    assert smooth.config.label_smoothing == 0.1
    a, b = (load_checkpoint(r.run_dir / "cycle_00" / "particle_00.safetensors") for r in (plain, smooth))
    assert any(not torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert "label_smoothing" not in a.config and b.config["label_smoothing"] == 0.1


def per_sample_loss(outputs, targets):
    """A user's loss_fn that forgets the mean: a vector, not the scalar the runner needs."""
    return torch.nn.functional.cross_entropy(outputs, targets, reduction="none")


def test_a_loss_fn_that_gives_no_scalar_is_refused_before_the_run_is_written(tmp_path):
    with pytest.raises(UserError, match=f"--loss {__name__}:per_sample_loss must give a floating-point scalar"):
        run_swamp(loss_fn=per_sample_loss, out=str(tmp_path / "run"), **SMALL)
    assert not (tmp_path / "run").exists()


def test_torchrun_with_another_optimizer_is_refused_in_one_line(monkeypatch):
    """Under torchrun ``auto`` means the distributed engine, which trains with SGD and cross-entropy only."""
    monkeypatch.setattr(session, "world_size", lambda: 2)
    cfg = resolve_config(argparse.Namespace(optimizer="adam"))
    with pytest.raises(UserError, match="torchrun runs --engine distributed, .* not --optimizer adam"):
        session.run_session(cfg, lambda c: pytest.fail("nothing is built"), lambda ctx: None)
