"""Learning-rate schedules (--schedule, --schedule-kwargs, --warmup-epochs; scheduler_fn in run_swamp): the rate of
chosen steps, the default cosine unchanged, the schedule recorded and resumed byte-identically, and the engines
that follow it."""

from __future__ import annotations

import argparse
import json
import math

import pytest
from conftest import DATA_DIR, make_run
from safetensors import safe_open
from test_engines import ROUNDING, RUN_ARGS, _assert_runs_match, _assert_same_files, _interrupted, _resume

from core.errors import UserError, run_cli
from training import run_swamp
from training.config import resolve_config
from training.engines import auto_engine
from training.schedules import Schedule
from training.swamp import main as swamp_main

STEP_ARGS = [*RUN_ARGS, "--particles", "1", "--no-swa", "--schedule", "step",
             "--schedule-kwargs", '{"every": 1, "factor": 0.5}']
SMALL = {"particles": 1, "cycles": 1, "epochs": 2, "rewind_epochs": 1, "data_dir": str(DATA_DIR), "progress": False}


def halving(epoch, step, steps_per_epoch, epochs):
    """A user's schedule, importable by its name: 0.1 halved every epoch."""
    return 0.1 * 0.5 ** epoch


def negative(epoch, step, steps_per_epoch, epochs):
    return -1.0


def rates(schedule: Schedule) -> list[float]:
    return [schedule.lr_at(e, s) for e in range(schedule.epochs) for s in range(schedule.steps_per_epoch)]


def test_each_schedule_gives_its_rates_at_chosen_steps():
    """4 epochs of 4 steps, the last one SWA's window at 0.5; rates of powers of two, so exact."""
    cosine = Schedule(4, 4, lr=1.0, end_lr=0.5, swa_epochs=1)  # 12 scheduled steps, a half-period at 6
    assert [cosine.lr_at(0, 0), cosine.lr_at(1, 2), cosine.lr_at(3, 0), cosine.lr_at(3, 3)] == [1.0, 0.75, 0.5, 0.5]
    assert rates(Schedule(4, 4, 1.0, 0.5, 1, shape="constant")) == [1.0] * 12 + [0.5] * 4
    step = Schedule(4, 4, 1.0, 0.5, 1, shape="step", every=1, factor=0.5)
    assert rates(step) == [1.0] * 4 + [0.5] * 4 + [0.25] * 4 + [0.5] * 4
    no_swa = Schedule(4, 4, 1.0, shape="step", every=3, factor=0.25)
    assert rates(no_swa) == [1.0] * 12 + [0.25] * 4
    assert Schedule(4, 4, 1.0).lr_at(2, 0) == 0.5  # without SWA the cosine ends at 0
    warm = Schedule(4, 4, 1.0, 0.5, 1, shape="step", every=1, factor=0.5, warmup_epochs=1)
    assert rates(warm) == [0.25, 0.5, 0.75, 1.0] + [1.0] * 4 + [0.5] * 4 + [0.5] * 4
    warm_cosine = Schedule(4, 4, 1.0, 0.5, 1, warmup_epochs=1)  # the cosine's 8 steps after the warm-up
    assert [warm_cosine.lr_at(0, 3), warm_cosine.lr_at(1, 0), warm_cosine.lr_at(2, 0)] == [1.0, 1.0, 0.75]
    user = Schedule(4, 4, 1.0, 0.5, 1, lr_fn=halving)
    assert [user.lr_at(0, 3), user.lr_at(2, 0), user.lr_at(3, 0)] == [0.1, 0.025, 0.5]


def test_warm_up_rises_linearly_from_near_zero_to_lr():
    for shape in ("cosine", "constant", "step"):
        schedule = Schedule(10, 50, 0.1, 0.05, 2, shape=shape, every=2, warmup_epochs=3)
        warm = rates(schedule)[:150]
        assert warm[0] == pytest.approx(0.1 / 150) and warm[-1] == pytest.approx(0.1)
        assert all(b - a == pytest.approx(0.1 / 150) for a, b in zip(warm, warm[1:], strict=False))
        assert schedule.lr_at(3, 0) == pytest.approx(0.1)


def test_constant_schedule_is_lr_until_the_swa_window():
    assert set(rates(Schedule(6, 7, 0.1, shape="constant"))) == {0.1}
    assert set(rates(Schedule(6, 7, 0.1, 0.05, 2, shape="constant"))[:28]) == {0.1}


def previous_rate(s: Schedule, epoch: int, step: int) -> float:
    """The schedule before --schedule existed: cosine from lr to end_lr over the epochs before SWA."""
    decay = (s.epochs - s.swa_epochs) * s.steps_per_epoch
    t = epoch * s.steps_per_epoch + step
    return s.end_lr if t >= decay else s.end_lr + (s.lr - s.end_lr) * 0.5 * (1.0 + math.cos(math.pi * t / decay))


@pytest.mark.parametrize("epochs, spe, swa_epochs", [(16, 7, 4), (16, 7, 0), (2, 31, 1), (1, 5, 1)])
def test_default_cosine_gives_the_bits_of_the_previous_schedule(epochs, spe, swa_epochs):
    schedule = Schedule(epochs, spe, 0.1, 0.05 if swa_epochs else 0.0, swa_epochs)
    assert rates(schedule) == [previous_rate(schedule, e, s) for e in range(epochs) for s in range(spe)]


def test_a_default_run_records_no_schedule(tiny_run):
    """Checkpoints of a default run leave the schedule settings out (the bytes they had before them)."""
    with safe_open(str(tiny_run / "cycle_00" / "average.safetensors"), framework="pt") as fh:
        recorded = json.loads(fh.metadata()["config"])
    assert not {"schedule", "schedule_kwargs", "warmup_epochs"} & set(recorded)
    assert json.loads((tiny_run / "config.json").read_text())["schedule"] == "cosine"


def test_interrupted_step_schedule_run_resumes_byte_identically(tmp_path, monkeypatch):
    """Stopped after the first epoch of cycle 1's particle (rate 0.1, the next 0.05), the resumed run writes the
    bytes of an uninterrupted one; config.json and the checkpoints record the schedule."""
    whole = make_run(tmp_path / "whole", *STEP_ARGS)
    cut = _interrupted(monkeypatch, tmp_path / "cut", STEP_ARGS, 1 + 2 + 1)
    assert swamp_main(_resume(cut)) == 0
    _assert_same_files(whole, cut)
    config = json.loads((cut / "config.json").read_text())
    assert (config["schedule"], config["schedule_kwargs"]) == ("step", '{"every": 1, "factor": 0.5}')
    with safe_open(str(whole / "cycle_01" / "average.safetensors"), framework="pt") as fh:
        recorded = json.loads(fh.metadata()["config"])
    assert recorded["schedule"] == "step" and "warmup_epochs" not in recorded
    other = make_run(tmp_path / "cosine", *STEP_ARGS[:-4])
    assert (other / "cycle_00" / "particle_00.safetensors").read_bytes() != \
        (whole / "cycle_00" / "particle_00.safetensors").read_bytes()


def test_scheduler_fn_sets_every_rate_and_is_recorded_and_resumed_only_with_consent(tmp_path, capsys):
    out = tmp_path / "run"
    seen = []
    result = run_swamp(scheduler_fn=halving, swa=False, out=str(out),
                       on_step=lambda info: seen.append((info.unit, info.epoch,
                                                         info.optimizer.param_groups[0]["lr"])), **SMALL)
    assert result.config.schedule == f"{__name__}:halving"
    assert json.loads((out / "config.json").read_text())["schedule"] == f"{__name__}:halving"
    particle = [(epoch, lr) for unit, epoch, lr in seen if unit != "ticket"]
    assert {lr for epoch, lr in particle if epoch == 0} == {0.1} and {lr for e, lr in particle if e == 1} == {0.05}
    assert run_cli(swamp_main, ["--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "schedule" in err and "--trust-code" in err
    with pytest.raises(ValueError, match="no importable name"):
        run_swamp(scheduler_fn=lambda e, s, n, m: 0.1, out=str(tmp_path / "x"), **SMALL)
    with pytest.raises(ValueError, match="scheduler_fn and schedule='step' name two schedules"):
        run_swamp(scheduler_fn=halving, schedule="step", out=str(tmp_path / "x"), **SMALL)
    with pytest.raises(UserError, match="trains with SGD, cross-entropy and a built-in schedule only"):
        run_swamp(scheduler_fn=halving, engine="vectorized", out=str(tmp_path / "x"), **SMALL)


def test_a_scheduler_fn_that_gives_no_rate_is_refused_before_the_run_is_written(tmp_path):
    with pytest.raises(UserError, match=f"the schedule {__name__}:negative gave -1.0 at epoch 0 step 0"):
        run_swamp(scheduler_fn=negative, out=str(tmp_path / "run"), **SMALL)
    assert not (tmp_path / "run").exists()


def test_stacked_engines_follow_the_built_in_schedules_not_a_users():
    def auto(**settings: object) -> str:
        cfg = resolve_config(argparse.Namespace(model="mlp", particles=8, **settings))
        return auto_engine("mlp", "cpu", 8, stackable=cfg.stackable)

    assert auto(schedule="step", schedule_kwargs='{"every": 2}', warmup_epochs=1) == "vectorized"
    assert auto(schedule="constant") == "vectorized" and auto(schedule=f"{__name__}:halving") == "sequential"


def test_vectorized_engine_trains_on_the_step_schedule_as_the_sequential_one(tmp_path):
    args = [*RUN_ARGS, "--model", "mlp", "--particles", "2", "--epochs", "3", "--schedule", "step",
            "--schedule-kwargs", '{"every": 1, "factor": 0.3}', "--warmup-epochs", "1"]
    sequential = make_run(tmp_path / "sequential", *args, "--engine", "sequential")
    vectorized = make_run(tmp_path / "vectorized", *args, "--engine", "vectorized")
    _assert_runs_match(sequential, vectorized, **ROUNDING)
