"""Nothing lost, nothing executed: kills, resumes, full disks, divergence and hostile files."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR, TINY_ARGS, fail_nth_checkpoint_write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.artifacts.checkpoint import load_checkpoint, load_plain_state_dict
from core.artifacts.lock import LOCK_NAME, exclusive
from core.errors import RESUME_RUN, UserError, run_cli
from training import swamp
from training.config import parse_config
from training.resume import load_train_state

ROOT = Path(__file__).resolve().parent.parent
KILL_ARGS = ["--cycles", "2", "--epochs", "3", "--particles", "2", "--rewind-epochs", "1", "--no-progress",
             "--data-dir", str(DATA_DIR)]


# Stages long enough (4 epochs of ~0.1 s for the ticket and for each particle) that a file polled every
# 20 ms is seen, and the process killed, well before the stage it marks ends, even on a loaded machine.
STAGED_ARGS = ["--epochs", "4", "--rewind-epochs", "4"]
# (marker, stage ended): SIGKILL as soon as the marker appears; the stage must not have ended yet.
KILL_POINTS = [
    (".resume/ticket.safetensors", "ticket.safetensors"),  # during the ticket, after its first epoch
    (".resume/cycle_00_particle_00.safetensors", "cycle_00/particle_00.safetensors"),  # in a particle of cycle 0
    ("cycle_00/particle_00.safetensors", "cycle_00/particle_01.safetensors"),  # between cycle 0's particles
    (".resume/cycle_01_particle_00.safetensors", "cycle_01/particle_00.safetensors"),  # in cycle 1
]


def _start(run: Path, *extra: str) -> subprocess.Popen:
    """``python -m training.swamp ... --out run`` with ``run`` relative to its parent directory, the
    working directory: runs in different directories then record the same ``out`` in config.json."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "training.swamp", *KILL_ARGS, *STAGED_ARGS, "--out", run.name,
                             *extra], env=env, cwd=run.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, marker: Path, timeout: float = 120) -> None:
    """SIGKILL ``proc`` as soon as ``marker`` exists (files appear whole: they are renamed into place)."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before {marker} appeared: "
                        f"{proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{marker} did not appear within {timeout} s")
        time.sleep(0.02)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL, f"the run ended by itself instead of being killed at {marker}"


def _finished(run: Path) -> dict[str, tuple[int, int]]:
    """Inode and modification time of every file written once: rewriting one changes both.
    (results.csv is rewritten after every cycle, the lock by every process; resume state is transient.)"""
    return {str(p.relative_to(run)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in run.rglob("*")
            if p.is_file() and ".resume" not in p.parts and p.name not in (LOCK_NAME, "results.csv")}


def _rewritten(run: Path, before: dict[str, tuple[int, int]]) -> list[str]:
    now = _finished(run)
    return [name for name, stat in before.items() if now.get(name) != stat]


def _files(run: Path) -> dict[str, bytes]:
    """Every result file; metrics lose their wall-clock field, the only thing allowed to differ.

    config.json is compared whole: written once, when a run starts (resume reads it, never rewrites
    it), it holds the same ``out`` for two runs written to paths of the same name (see :func:`_start`).
    """
    out = {}
    for path in sorted(run.rglob("*")):
        if not path.is_file() or path.name == LOCK_NAME:  # the lock holds the last writer's pid
            continue
        data = path.read_bytes()
        if path.name == "metrics.json":
            metrics = json.loads(data)
            metrics.pop("seconds")
            data = json.dumps(metrics).encode()
        elif path.name == "results.csv":
            data = b"\n".join(b",".join(line.split(b",")[:-1]) for line in data.splitlines())
        out[str(path.relative_to(run))] = data
    return out


def test_killed_runs_resume_to_byte_identical_files(tmp_path):
    """SIGKILLed at each of KILL_POINTS in turn, every restart a --resume of what the last one left,
    the run ends with the files of an uninterrupted run, config.json included, and no finished file
    is ever written twice (each resume continued from what was saved, not from the start)."""
    (tmp_path / "reference").mkdir()
    (tmp_path / "killed").mkdir()
    # the uninterrupted run trains alongside the killed ones (the second core), not before them
    reference = _start(tmp_path / "reference" / "run")
    try:
        out = tmp_path / "killed" / "run"
        kept: dict[str, tuple[int, int]] = {}
        for number, (marker, stage_end) in enumerate(KILL_POINTS):
            assert not (out / marker).exists(), f"kill point {number} would be hit before its process starts"
            proc = _start(out, "--resume") if number else _start(out)
            _kill_when(proc, out / marker)
            assert (out / marker).is_file() and not (out / stage_end).exists(), \
                f"killed after {stage_end} was written"
            if marker.startswith(".resume/"):
                assert load_train_state(out / marker, "cpu").epoch >= 1, "a resume state is saved after an epoch"
            assert not _rewritten(out, kept), "a resume rewrote finished files"
            kept = _finished(out)
        final = _start(out, "--resume")
        assert final.wait(timeout=300) == 0, final.stderr.read().decode()
        assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    finally:
        reference.kill()
    assert not _rewritten(out, kept), "a resume rewrote finished files"
    assert {"config.json", "ticket.safetensors", "cycle_00/particle_00.safetensors",
            "cycle_00/average.safetensors"} <= kept.keys()
    assert not list(out.rglob(".*.tmp-*")), "temporary files are cleaned on resume"
    assert not list((out / ".resume").glob("*")), "no resume state is left once a run is finished"
    assert _files(out) == _files(tmp_path / "reference" / "run")


def test_stale_temporaries_are_ignored_and_removed_on_resume(tiny_run, capsys):
    stale = [tiny_run / "cycle_01" / ".average.safetensors.tmp-99999", tiny_run / ".resume" / ".x.tmp-1"]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    assert run_cli(swamp.main, ["--out", str(tiny_run), "--resume", "--no-progress"]) == 0
    assert not any(p.exists() for p in stale)


def test_a_run_in_use_is_refused_and_left_untouched(tiny_run, capsys):
    """While a process writes a run, a second one may neither resume nor overwrite it."""
    in_flight = tiny_run / "cycle_01" / ".average.safetensors.tmp-4242"  # the writer's file being written
    in_flight.write_bytes(b"half a checkpoint")
    before = _files(tiny_run)
    args = [*TINY_ARGS, "--out", str(tiny_run), "--data-dir", str(DATA_DIR)]
    with exclusive(tiny_run, "run directory"):  # another open file description: flock(2) refuses this one
        for extra in ("--resume", "--overwrite"):
            assert run_cli(swamp.main, [*args, extra]) == 2
            assert capsys.readouterr().err == (f"error: run directory {tiny_run} is in use by another process "
                                               f"(pid {os.getpid()}); wait for it to finish, or stop it and rerun\n")
    assert _files(tiny_run) == before and in_flight.is_file()
    assert run_cli(swamp.main, [*args, "--resume"]) == 0, "the lock ends with its holder"
    assert not in_flight.exists()


def test_full_disk_stops_cleanly_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    fail_nth_checkpoint_write(monkeypatch, 4, errno.ENOSPC, "No space left on device")
    args = [*KILL_ARGS, "--out", str(tmp_path / "run")]
    assert run_cli(swamp.main, args, rerun=RESUME_RUN) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "--resume" in err and err.count("\n") == 1
    monkeypatch.undo()  # the disk is fixed
    assert run_cli(swamp.main, ["--out", str(tmp_path / "run"), "--resume"]) == 0
    assert (tmp_path / "run" / "cycle_01" / "average.safetensors").is_file()


def test_divergence_names_cycle_particle_and_epoch(tmp_path, capsys):
    args = [*KILL_ARGS, "--rewind-epochs", "0", "--lr", "1e12", "--out", str(tmp_path / "run")]
    assert run_cli(swamp.main, args) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "cycle 00 particle 00 epoch 0" in err and err.count("\n") == 1
    assert load_checkpoint(tmp_path / "run" / "ticket.safetensors").kind == "ticket"


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"weight": torch.zeros(2), "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not a plain PyTorch state_dict"):
        load_plain_state_dict(tmp_path / "evil.pt", {"name": "mlp", "kwargs": {}}, {"name": "mnist1d"})
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(UserError, match="PyTorch file"):
        load_checkpoint(tmp_path / "evil.pt")


def test_plain_state_dict_is_accepted_with_weights_only(tmp_path):
    torch.save({"0.weight": torch.ones(2, 2)}, tmp_path / "ok.pt")
    ckpt = load_plain_state_dict(tmp_path / "ok.pt", {"name": "mlp", "kwargs": {}}, {"name": "mnist1d"})
    assert torch.equal(ckpt.state["0.weight"], torch.ones(2, 2))


def test_bad_checkpoint_files_are_user_errors(tiny_run, tmp_path):
    good = (tiny_run / "cycle_01" / "average.safetensors").read_bytes()
    cases = {"truncated.safetensors": good[: len(good) // 2], "empty.safetensors": b"",
             "json.safetensors": b'{"not": "a checkpoint"}', "noise.safetensors": os.urandom(4096)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError):
            load_checkpoint(tmp_path / name)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_foreign_safetensors_and_revived_weights_are_refused(tiny_run, tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(UserError, match="not a SWAMP checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    ckpt = load_checkpoint(tiny_run / "cycle_02" / "average.safetensors")
    name = next(iter(ckpt.masks))
    tensors = {**ckpt.state, **{f"mask.{k}": v for k, v in ckpt.masks.items()}}
    tensors[name] = tensors[name] + 1.0
    from safetensors import safe_open

    with safe_open(ckpt.path, framework="pt") as fh:
        meta = fh.metadata()
    save_file(tensors, str(tmp_path / "revived.safetensors"), metadata=meta)
    with pytest.raises(UserError, match="non-zero where its mask is 0"):
        load_checkpoint(tmp_path / "revived.safetensors")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_any_bytes_are_a_checkpoint_or_a_user_error(tmp_path, data):
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(data)
    with pytest.raises(UserError):
        load_checkpoint(path)


NUMERIC_FLAGS = ["--prune-ratio", "--particles", "--cycles", "--epochs", "--swa-start", "--lr", "--swa-lr",
                 "--momentum", "--weight-decay", "--batch-size", "--rewind-epochs", "--bn-samples"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NUMERIC_FLAGS),
                          st.one_of(st.integers(-5, 5).map(str), st.floats(allow_nan=True).map(str),
                                    st.text(max_size=4))), max_size=4))
def test_any_command_line_is_valid_config_or_one_clean_error(pairs):
    argv = [token for pair in pairs for token in pair]
    try:
        cfg = parse_config(argv, "swamp", "")
    except UserError as err:  # argparse's own errors (an unparsable number) too: one line, no usage dump
        assert "\n" not in str(err)
    else:
        assert 0 < cfg.prune_ratio < 1 and cfg.particles >= 1 and cfg.epochs >= 1 and 0 <= cfg.swa_start < 1


@pytest.mark.parametrize("module", ["training.swamp", "landscape.barrier", "studies.report"])
def test_ctrl_c_while_a_tool_is_still_starting_is_one_line(module, tmp_path):
    """SIGINT during the imports (torch takes a second): one line, the interrupt's exit status, no traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", module, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    time.sleep(0.25)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    if proc.returncode != 0:  # a --help that finished first exits 0
        assert proc.returncode in (130, -signal.SIGINT) and len(err.strip().splitlines()) <= 1, err
