"""Inputs of the second adversarial round: each is refused with one line naming the file or flag and what
to do, or stops the program cleanly so that the same command continues it."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR, fail_nth_checkpoint_write

from core.artifacts.checkpoint import load_checkpoint
from core.artifacts.rundir import RunDir
from core.averaging import RunningAverage
from core.errors import RESUME_RUN, UserError, run_cli
from studies.grid import cli as study
from studies.grid import runner
from studies.report import main as report_main
from training import swamp
from training.resume import load_train_state, save_train_state
from training.train import TrainState

REPO = Path(__file__).resolve().parent.parent
RUNTIME = ["--data-dir", str(DATA_DIR), "--no-progress"]
STUDY_RERUN = "rerun the same command to continue (finished sub-runs are kept)"
STUDY_ARGS = ["--quick", "--methods", "imp", "--seeds", "0", "--data-dir", str(DATA_DIR), "--no-progress"]


def one_line(text: str) -> str:
    assert text.count("\n") == 1, text
    return text


def resume(out: Path, *extra: str) -> int:
    return run_cli(swamp.main, ["--out", str(out), "--resume", *RUNTIME, *extra], rerun=RESUME_RUN)


# --- 1. a resume state past the end of its unit's schedule ------------------------------------------

def _state_at(epoch: int, model: dict[str, torch.Tensor]) -> TrainState:
    return TrainState(epoch, model, {}, RunningAverage(), torch.get_rng_state())


def test_resume_state_past_the_schedule_is_refused(tmp_path):
    path = tmp_path / "unit.safetensors"
    save_train_state(path, _state_at(999, {"w": torch.ones(2)}))
    with pytest.raises(UserError, match=r"epoch 999, past the unit's 20 epochs.*delete it to restart that unit"):
        load_train_state(path, "cpu", epochs=20)
    assert load_train_state(path, "cpu").epoch == 999  # no bound given: the caller checks
    save_train_state(path, _state_at(20, {"w": torch.ones(2)}))
    assert load_train_state(path, "cpu", epochs=20).epoch == 20  # finished, not yet cleaned up


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_run_with_a_resume_state_past_the_schedule_is_refused(tiny_run, tmp_path, capsys, engine):
    out = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    run = RunDir(out)
    particle = run.particle(2, 1)
    model = load_checkpoint(particle).state
    for path in (particle, run.average(2), run.metrics(2)):
        path.unlink()
    state = run.resume_state("cycle_02_particle_01")
    state.parent.mkdir(exist_ok=True)
    save_train_state(state, _state_at(999, model))
    assert resume(out, "--engine", engine) == 2
    err = one_line(capsys.readouterr().err)
    assert str(state) in err and "epoch 999" in err and "delete it to restart that unit" in err
    assert not particle.exists(), "the particle was not counted as trained"
    state.unlink()  # the remedy
    assert resume(out, "--engine", engine) == 0
    assert particle.is_file() and run.metrics(2).is_file()


# --- 2. a damaged cycle_KK/metrics.json --------------------------------------------------------------

@pytest.mark.parametrize("text", ["[]", "{}", "{{", '"x"', '{"cycle": 1}', "\xff"])
def test_damaged_metrics_are_refused_with_the_remedy_that_works(tiny_run, tmp_path, capsys, text):
    out = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    run = RunDir(out)
    good = json.loads(run.metrics(1).read_text())
    particles = {p: run.particle(1, p).read_bytes() for p in range(3)}
    run.metrics(1).write_bytes(text.encode("latin-1"))
    assert resume(out) == 2
    err = one_line(capsys.readouterr().err)
    assert str(run.metrics(1)) in err and f"delete {run.average(1)} and rerun with --resume" in err
    run.average(1).unlink()  # the remedy: the cycle is averaged and evaluated again from its particles
    assert resume(out) == 0
    again = json.loads(run.metrics(1).read_text())
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in good.items() if k != "seconds"}
    assert {p: run.particle(1, p).read_bytes() for p in range(3)} == particles, "no particle was trained again"


def test_metrics_with_wrong_types_are_refused(tiny_run, tmp_path, capsys):
    out = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    run = RunDir(out)
    good = json.loads(run.metrics(0).read_text())
    for damaged in ({**good, "density": "1"}, {**good, "particles": []}, {**good, "average": {"test_acc": 1.0}},
                    {**good, "particles": [{"test_acc": None}]}, {**good, "cycle": 5}, {**good, "seconds": True}):
        run.metrics(0).write_text(json.dumps(damaged))
        assert resume(out) == 2
        assert str(run.metrics(0)) in one_line(capsys.readouterr().err)


# --- 3. an environment failure in a sub-run stops the study -----------------------------------------

def test_file_size_limit_stops_the_study_and_the_same_command_finishes_it(tmp_path, monkeypatch, capsys):
    fail_nth_checkpoint_write(monkeypatch, 3, errno.EFBIG, "File too large")
    args = [*STUDY_ARGS, "--out", str(tmp_path / "study")]
    assert run_cli(study.main, args, rerun=STUDY_RERUN) == 2
    captured = capsys.readouterr()
    err = one_line(captured.err)
    assert err.startswith("error: File too large (") and STUDY_RERUN in err
    assert "FAILED" not in captured.out
    runs = json.loads((tmp_path / "study" / study.MANIFEST).read_text())["runs"]
    assert [(r["name"], r["status"], r["error"]) for r in runs] == [("imp-s0", "partial", None)]
    monkeypatch.undo()  # the disk is fixed
    assert run_cli(study.main, args, rerun=STUDY_RERUN) == 0
    runs = json.loads((tmp_path / "study" / study.MANIFEST).read_text())["runs"]
    assert [r["status"] for r in runs] == ["done"]


def test_environment_failure_in_a_worker_stops_the_pool_and_leaves_its_runs_partial(monkeypatch):
    """--jobs: a worker's OSError comes back through its future; it stops the study, and every sub-run
    still in flight (the failing one included) is left partial."""
    from concurrent.futures import ThreadPoolExecutor

    released = threading.Event()

    def fake_sub_run(name: str, threads: int) -> tuple[str, None]:
        if name == "a":
            raise OSError(errno.ENOSPC, "No space left on device", "/full")
        released.wait(30)  # until the study has marked it partial
        return "done", None

    monkeypatch.setattr("studies.grid.runner.WorkerPool", lambda jobs: ThreadPoolExecutor(jobs))
    monkeypatch.setattr("studies.grid.runner.run_sub_run", fake_sub_run)
    runs = [study.SubRun(n, "imp", 0, 1, n) for n in ("a", "b", "c")]
    finished: dict[str, str] = {}

    def finish(r, began, status, error):
        finished[r.name] = status
        if r.name == "b":
            released.set()

    with pytest.raises(OSError) as raised:
        runner._run_parallel(runs, 2, lambda r: 0.0, finish, lambda r: (r.name,))
    assert raised.value.errno == errno.ENOSPC
    assert finished == {"a": "partial", "b": "partial"}, "c never started"


# --- 4. num_classes in --model-kwargs ---------------------------------------------------------------

def test_num_classes_in_model_kwargs_is_refused(tmp_path, capsys):
    args = ["--model-kwargs", '{"num_classes": 3}', "--out", str(tmp_path / "run"), *RUNTIME]
    assert run_cli(swamp.main, args) == 2
    assert "num_classes comes from the data set; leave it out of --model-kwargs" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


# --- 5. SIGTERM ---------------------------------------------------------------------------------------

def test_sigterm_stops_a_run_with_one_line_and_resume_finishes_it(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    # the MLP: the signal still finds 119 of the 120 particle epochs to do, and the resume trains them in seconds
    proc = subprocess.Popen([sys.executable, "-m", "training.swamp", "--cycles", "2", "--epochs", "30",
                             "--particles", "2", "--rewind-epochs", "1", "--model", "mlp", "--out", str(out),
                             *RUNTIME],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not list((out / ".resume").glob("cycle_00_particle_00*")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1].decode()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert stderr.decode() == "python -m training.swamp: terminated; rerun with --resume to continue the run\n"
    assert resume(out) == 0
    assert (out / "cycle_01" / "average.safetensors").is_file()


def test_sigterm_handler_is_restored_after_run_cli():
    before = signal.getsignal(signal.SIGTERM)

    def terminate(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives first

    assert run_cli(terminate, []) == 143
    assert signal.getsignal(signal.SIGTERM) is before


# --- 6. a damaged cached measurement of a study ------------------------------------------------------

@pytest.fixture(scope="module")
def imp_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study") / "imp"
    assert study.main([*STUDY_ARGS, "--out", str(root)]) == 0
    return root


@pytest.mark.parametrize("kind", ["pairs", "hull", "hessian"])
@pytest.mark.parametrize("text", ["{{", "[]", "{}", '{"run": "imp-s0", "cycle": 0}', '{"run": "imp-s1", "cycle": 0}',
                                  '{"run": "imp-s0", "cycle": 0, "pairs": [{"i": 0}], "summary": 1, "trace": 1.0}'])
def test_damaged_measurement_is_refused_naming_the_file(imp_study, tmp_path, capsys, kind, text):
    root = Path(shutil.copytree(imp_study, tmp_path / "study"))
    path = root / "analysis" / kind / "imp-s0" / "cycle_00.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert run_cli(report_main, [str(root)]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"{path} is damaged" in err
    assert f"delete it and rerun python -m studies.analyse {root} to compute it again" in err


def test_damaged_config_of_a_sub_run_is_refused(imp_study, tmp_path, capsys):
    root = Path(shutil.copytree(imp_study, tmp_path / "study"))
    config = root / "runs" / "imp-s0" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": "1"}))
    assert run_cli(report_main, [str(root)]) == 2
    assert f"{config} is damaged" in one_line(capsys.readouterr().err)
