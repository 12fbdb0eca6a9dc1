"""Particle engines agree: sequential (reference), vectorized (one stacked model) and distributed
(two gloo processes, as torchrun would start them)."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import DATA_DIR, TINY_ARGS, make_run
from safetensors import safe_open
from torch import nn

from training.engines import VECTORIZED_FASTER, auto_engine
from training.engines.stacked import StackedModule
from training.errors import run_cli
from training.models import build_model, model_spec
from training.swamp import main as swamp_main
from training.train import Divergence

RUN_ARGS = ["--cycles", "2", "--epochs", "2", "--rewind-epochs", "1"]
MLP_ARGS = [*RUN_ARGS, "--model", "mlp", "--particles", "8"]  # enough for auto and ranks to stack them


def _resume(out: Path) -> list[str]:
    return ["--out", str(out), "--resume", "--no-progress", "--data-dir", str(DATA_DIR)]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


def _assert_runs_match(a: Path, b: Path, rtol: float, atol: float) -> None:
    files = sorted(p.relative_to(a) for p in a.glob("cycle_*/*.safetensors"))
    assert files and files == sorted(p.relative_to(b) for p in b.glob("cycle_*/*.safetensors"))
    for name in files:
        first, second = _tensors(a / name), _tensors(b / name)
        assert first.keys() == second.keys()
        for key in first:
            torch.testing.assert_close(second[key], first[key], rtol=rtol, atol=atol, msg=f"{name}: {key}")


def test_stacked_model_trains_each_particle_as_its_own_model():
    """Per-particle gradients, BatchNorm statistics and SGD steps, all particles in one computation."""
    torch.manual_seed(0)
    models = [build_model(model_spec("cnn1d", 10)) for _ in range(3)]
    stacked = StackedModule(models[0], [m.state_dict() for m in models]).train()
    opt = torch.optim.SGD(stacked.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4) for m in models]
    for _ in range(3):
        x, y = torch.randn(3, 32, 40), torch.randint(0, 10, (3, 32))
        opt.zero_grad()
        nn.functional.cross_entropy(stacked(x), y.flatten()).backward()
        opt.step()
        for i, (model, o) in enumerate(zip(models, opts, strict=True)):
            model.train()
            o.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            o.step()
    state = stacked.state_dict()
    for i, model in enumerate(models):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(state[key][i], value, rtol=1e-4, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sequential reference for the MLP (no BatchNorm: rounding differences stay at rounding level)."""
    return make_run(tmp_path_factory.mktemp("mlp") / "seq", *MLP_ARGS, "--engine", "sequential")


def test_vectorized_run_equals_sequential(mlp_run, tmp_path):
    vec = make_run(tmp_path / "vec", *MLP_ARGS, "--engine", "vectorized")
    _assert_runs_match(mlp_run, vec, rtol=1e-4, atol=1e-5)


def test_vectorized_single_particle_is_bitwise_sequential(tmp_path):
    args = [*RUN_ARGS, "--particles", "1"]
    seq = make_run(tmp_path / "seq", *args, "--engine", "sequential")
    vec = make_run(tmp_path / "vec", *args, "--engine", "vectorized")
    _assert_runs_match(seq, vec, rtol=0, atol=0)


class Killed(Exception):
    """Stands in for the process being killed."""


def test_interrupted_vectorized_run_resumes_bit_identically(tmp_path, monkeypatch):
    vectorized = importlib.import_module("training.engines.vectorized")
    args = [*MLP_ARGS, "--epochs", "3", "--engine", "vectorized"]
    whole = make_run(tmp_path / "whole", *args)
    real_save, saves = vectorized.save_train_state, []

    def save_then_die(path, state):
        real_save(path, state)
        saves.append(path)
        if len(saves) == 8 * 2 + 1:  # cycle 0: 8 particles x 2 epochs saved, then 1 of the 3rd epoch
            raise Killed

    monkeypatch.setattr(vectorized, "save_train_state", save_then_die)
    with pytest.raises(Killed):
        make_run(tmp_path / "cut", *args)
    monkeypatch.setattr(vectorized, "save_train_state", real_save)
    assert len(list((tmp_path / "cut" / ".resume").iterdir())) == 8, "one resume state per particle"
    assert swamp_main(_resume(tmp_path / "cut")) == 0  # particle 0 finished its epochs, 1-7 did not
    _assert_runs_match(whole, tmp_path / "cut", rtol=1e-6, atol=1e-7)


def test_auto_rule_follows_the_measured_table():
    for (device, model), least in VECTORIZED_FASTER.items():
        assert auto_engine(model, device, least) == "vectorized"
        assert auto_engine(model, device, least - 1) == "sequential"
        assert auto_engine(model, device, 1) == "sequential", "one particle: nothing to stack"
    assert auto_engine("cnn1d", "cpu", 4) == "sequential", "grouped convolutions measured slower on the CPU"
    assert auto_engine("cnn1d", "cpu", 4, distributed=True) == "distributed"


def test_distributed_engine_outside_torchrun_is_a_clear_error(tmp_path, capsys):
    assert run_cli(swamp_main, ["--engine", "distributed", "--out", str(tmp_path / "r")]) == 2
    assert "torchrun --nproc-per-node" in capsys.readouterr().err


# --- two processes, as `torchrun --nproc-per-node 2 -m training.swamp ...` starts them -----------

def _rank_main(rank: int, world: int, port: int, argv: list[str], fail_rank: int, out: str, die: bool) -> None:
    """One rank: torchrun's environment, then the program; ``fail_rank`` fails after its first epoch
    (raises, or with ``die`` exits at once, as a killed process would)."""
    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    if rank == fail_rank:
        distributed = importlib.import_module("training.engines.distributed")
        real = distributed.train_particles

        def failing(*args, **kwargs):
            forward = args[-1]

            def on_epoch(states):
                forward(states)
                if die:
                    os._exit(9)
                raise Divergence("training diverged (injected)")

            return real(*args[:-1], on_epoch, **kwargs)

        distributed.train_particles = failing
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_cli(swamp_main, argv)
    Path(out, f"rank{rank}.txt").write_text(f"{code}\n{err.getvalue()}")


def _torchrun(tmp_path: Path, argv: list[str], fail_rank: int = -1, world: int = 2,
              die: bool = False) -> list[tuple[int, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.start_processes(_rank_main, args=(world, port, argv, fail_rank, str(tmp_path), die), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not all(p.exitcode is not None for p in ctx.processes):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("distributed run did not finish within 120 s")
        time.sleep(0.2)
    assert [p.exitcode for p in ctx.processes] == [9 if die and r == fail_rank else 0 for r in range(world)]
    results = []
    for r in range(world):
        if die and r == fail_rank:
            results.append((9, ""))
            continue
        code, err = Path(tmp_path, f"rank{r}.txt").read_text().split("\n", 1)
        results.append((int(code), err))
    return results


def test_two_gloo_processes_equal_the_sequential_run(tiny_run, tmp_path):
    """cnn1d (BatchNorm), 3 particles over 2 ranks, one at a time: particles bitwise equal to the
    sequential run's; the average's BN statistics, all-reduced from both ranks' batches, to rounding."""
    out = tmp_path / "dist"
    argv = [*TINY_ARGS, "--out", str(out), "--data-dir", str(DATA_DIR), "--engine", "distributed"]
    assert [code for code, _ in _torchrun(tmp_path, argv)] == [0, 0]
    assert (out / "cycle_02" / "average.safetensors").is_file()
    for path in sorted(out.glob("cycle_*/particle_*.safetensors")):
        first, second = _tensors(path), _tensors(tiny_run / path.relative_to(out))
        assert all(torch.equal(first[k], second[k]) for k in first), path
    _assert_runs_match(tiny_run, out, rtol=1e-4, atol=1e-5)


def test_a_killed_rank_stops_the_others_with_one_line_and_resume_finishes_it(mlp_run, tmp_path):
    """Rank 1 exits outright after its first epoch (as a killed process would): rank 0's next
    collective fails, and it stops with one line, keeping what it saved."""
    out = tmp_path / "dist"
    argv = [*TINY_ARGS, *MLP_ARGS, "--out", str(out), "--data-dir", str(DATA_DIR), "--engine", "distributed"]
    (code0, err0), _ = _torchrun(tmp_path, argv, fail_rank=1, die=True)
    assert code0 == 2 and err0.count("\n") == 1 and "Traceback" not in err0
    assert err0.startswith("error: a collective operation failed (")
    assert err0.strip().endswith("so another rank has probably stopped; what rank 0 saved is kept: rerun with --resume")
    assert not (out / "cycle_00" / "particle_00.safetensors").exists()
    assert sorted(p.name for p in (out / ".resume").iterdir()) == [f"cycle_00_particle_0{p}.safetensors"
                                                                   for p in range(8)]
    assert [code for code, _ in _torchrun(tmp_path, _resume(out))] == [0, 0]
    _assert_runs_match(mlp_run, out, rtol=1e-4, atol=1e-5)


def test_failed_rank_stops_the_job_and_resume_finishes_it(mlp_run, tmp_path):
    """8 MLP particles: each rank stacks its 4; rank 1 fails after one epoch; the run resumes."""
    out = tmp_path / "dist"
    argv = [*TINY_ARGS, *MLP_ARGS, "--out", str(out), "--data-dir", str(DATA_DIR), "--engine", "distributed"]
    (code0, err0), (code1, err1) = _torchrun(tmp_path, argv, fail_rank=1)
    assert (code0, code1) == (2, 2)
    assert err0.strip() == ("error: rank 1 failed: training diverged (injected); what rank 0 saved is kept: "
                            "rerun with --resume")
    assert "training diverged (injected)" in err1 and "Traceback" not in err0 + err1
    assert not (out / "cycle_00" / "particle_00.safetensors").exists()
    assert sorted(p.name for p in (out / ".resume").iterdir()) == [f"cycle_00_particle_0{p}.safetensors"
                                                                   for p in range(8)]
    assert [code for code, _ in _torchrun(tmp_path, _resume(out))] == [0, 0]
    _assert_runs_match(mlp_run, out, rtol=1e-4, atol=1e-5)
