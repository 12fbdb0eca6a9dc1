"""swamp_cycles(out=...): the run directory of the orchestrator around a user's loop, in the runner's format, read
by the landscape tools; and the orchestrator around a loop that does what the runner does gives the runner's
cycles."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import DATA_DIR, command_module

from core.artifacts.checkpoint import load_checkpoint
from core.data import load_dataset, mnist1d_spec
from core.errors import UserError
from core.evaluate import predict, score
from core.models import build_model, model_spec
from core.seeds import derive_seed, generator
from training import mask_optimizer, run_swamp
from training.integrations.cycles import swamp_cycles
from training.train import Hyper, Schedule, steps_per_epoch, train_particle

SPEC = model_spec("mlp", 10, {"hidden": 16})


@pytest.fixture(scope="module")
def data():
    return load_dataset(mnist1d_spec(str(DATA_DIR)), "cpu")


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(SPEC)


def few_steps(data, steps: int = 5):
    """A user's loop: a few masked SGD steps on its own batch order."""

    def train(particle, masks, seed):
        opt = torch.optim.SGD(particle.parameters(), lr=0.1, momentum=0.9)
        mask_optimizer(opt, particle, masks)
        particle.train()
        for step, (x, y) in enumerate(data.train_batches(64, torch.Generator().manual_seed(seed))):
            if step == steps:
                break
            opt.zero_grad()
            torch.nn.functional.cross_entropy(particle(x), y).backward()
            opt.step()
        return particle

    return train


def scores(data):
    def evaluate(model):
        result = score(*predict(model, data.eval_batches("test", 1000)))
        return {"test_acc": result.acc, "test_loss": result.loss}

    return evaluate


def test_the_written_run_holds_valid_checkpoints_that_the_landscape_tools_read(data, tmp_path, capsys):
    run = tmp_path / "run"
    cycles = swamp_cycles(tiny_model(), few_steps(data), cycles=2, particles=2, ratio=0.5,
                          evaluate=scores(data), out=run, model_spec=SPEC,
                          dataset_spec=mnist1d_spec(str(DATA_DIR)))
    names = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert names == [".lock", "config.json", *[f"cycle_0{k}/{f}" for k in range(2) for f in
                                               ("average.safetensors", "metrics.json", "particle_00.safetensors",
                                                "particle_01.safetensors")], "results.csv", "ticket.safetensors"]
    ticket = load_checkpoint(run / "ticket.safetensors")
    assert ticket.kind == "ticket" and ticket.density == 1.0 and ticket.model == SPEC
    for c in cycles:
        for path in [*sorted(run.glob(f"cycle_0{c.cycle}/particle_*")), run / f"cycle_0{c.cycle}/average.safetensors"]:
            ckpt = load_checkpoint(path)  # validates metadata, structure, masks, pruned weights at 0
            assert ckpt.cycle == c.cycle and ckpt.density == pytest.approx(0.5 ** c.cycle, abs=0.01)
            assert set(ckpt.masks) == {"1.weight", "3.weight", "5.weight"}
            assert all(torch.equal(ckpt.masks[k], c.masks[k].float()) for k in c.masks)
            assert all(bool((ckpt.state[k][m == 0] == 0).all()) for k, m in ckpt.masks.items())
        average = load_checkpoint(run / f"cycle_0{c.cycle}/average.safetensors")
        assert average.kind == "average" and all(torch.equal(average.state[k], v) for k, v in c.state.items())
        metrics = json.loads((run / f"cycle_0{c.cycle}/metrics.json").read_text())
        assert metrics == json.loads(json.dumps(c.metrics))
        assert set(metrics) == {"cycle", "density", "sparsity", "particles", "average", "seconds"}
        assert [p["particle"] for p in metrics["particles"]] == [0, 1] and metrics["average"]["test_acc"] > 0.1
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [r["cycle"] for r in rows] == ["0", "1"] and all(r["ensemble_test_acc"] == "" for r in rows)
    assert float(rows[1]["average_test_acc"]) == cycles[1].metrics["average"]["test_acc"]
    config = json.loads((run / "config.json").read_text())
    assert config["model_spec"] == SPEC and config["orchestrator"].endswith("swamp_cycles")

    barrier = command_module("landscape.barrier").main
    out = tmp_path / "barrier.json"
    assert barrier([str(run / "cycle_01/particle_00.safetensors"), str(run / "cycle_01/particle_01.safetensors"),
                    "--points", "3", "--data-dir", str(DATA_DIR), "--json", str(out), "--no-progress"]) == 0
    assert len(json.loads(out.read_text())["lambdas"]) == 3
    assert barrier(["--run", str(run), "--cycle", "1", "--points", "2", "--data-dir", str(DATA_DIR),
                    "--no-progress"]) == 0
    capsys.readouterr()


def test_without_evaluate_or_a_data_set_the_run_records_what_it_knows_and_the_tools_take_dataset(data, tmp_path,
                                                                                                   capsys):
    run = tmp_path / "run"
    cycles = swamp_cycles(tiny_model(), few_steps(data, 2), cycles=2, particles=1, out=run, model_spec=SPEC)
    metrics = json.loads((run / "cycle_01/metrics.json").read_text())
    assert set(metrics) == {"cycle", "density", "sparsity", "particles", "seconds"} and cycles[1].metrics == metrics
    assert metrics["particles"] == [{"particle": 0}]
    row = next(csv.DictReader((run / "results.csv").open()))
    assert row["average_test_acc"] == "" and row["particles"] == "1" and float(row["density"]) == 1.0
    assert load_checkpoint(run / "cycle_01/average.safetensors").dataset == {"name": "python:swamp_cycles"}
    barrier = command_module("landscape.barrier").main
    assert barrier([str(run / "cycle_00/average.safetensors"), str(run / "cycle_01/average.safetensors"),
                    "--allow-mask-union", "--points", "2", "--dataset", "mnist1d", "--data-dir", str(DATA_DIR),
                    "--no-progress"]) == 0
    capsys.readouterr()


def test_out_is_written_only_where_the_toolkit_may_write(data, tmp_path):
    train = few_steps(data, 1)

    def cycles(out, **kwargs):
        return swamp_cycles(tiny_model(), train, cycles=1, particles=1, out=out, **{"model_spec": SPEC, **kwargs})

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="no run of the toolkit wrote"):
        cycles(mine, overwrite=True)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    with pytest.raises(ValueError, match="model_spec"):
        cycles(tmp_path / "run", model_spec=None)
    with pytest.raises(UserError, match="shape"):  # a spec of another model is refused before anything is written
        cycles(tmp_path / "run", model_spec=model_spec("mlp", 10, {"hidden": 32}))
    with pytest.raises(UserError, match="num_classes"):
        cycles(tmp_path / "run", model_spec=model_spec("mlp", 3, {"hidden": 16}), dataset_spec=mnist1d_spec("data"))
    assert not (tmp_path / "run").exists()

    cycles(tmp_path / "run")
    with pytest.raises(UserError, match="overwrite=True"):
        cycles(tmp_path / "run")
    cycles(tmp_path / "run", overwrite=True)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="nothing was deleted"):
        cycles(tmp_path / "run", overwrite=True)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    with pytest.raises(UserError, match="not a directory"):
        cycles(tmp_path / "run" / "notes.txt")


def test_a_loop_that_does_what_the_runner_does_gives_the_runners_cycles(data, tmp_path):
    """The runner's particle training (training.train.train_particle with the seed streams of core.seeds, SWA on)
    as a user's ``train``: the orchestrator then gives the runner's masks, averages and accuracies exactly."""
    result = run_swamp(model="mlp", model_kwargs={"hidden": 16}, cycles=3, particles=2, epochs=2, rewind_epochs=1,
                       engine="sequential", device="cpu", data_dir=str(DATA_DIR), out=str(tmp_path / "runner"),
                       progress=False)
    cfg, seed = result.config, result.config.seed
    hyper = Hyper(cfg.batch_size, cfg.momentum, cfg.weight_decay, cfg.eval_batch_size)
    spe = steps_per_epoch(data, cfg.batch_size)
    bn_data = list(data.eval_batches("train", cfg.eval_batch_size))  # --bn-samples 0: all training samples, in order

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        model = build_model(SPEC)
    ticket = Schedule(cfg.rewind_epochs, spe, cfg.lr, shape="constant")
    model.load_state_dict(train_particle(model, {}, data, ticket, hyper, generator(seed, "ticket")))

    def train(particle, masks, particle_seed):
        cycle, p = divmod(particle_seed, 1000)  # swamp_cycles' seed is seed + 1000 * cycle + p (here seed 0)
        schedule = Schedule(cfg.epochs, spe, cfg.lr, cfg.swa_lr, cfg.swa_epochs())
        particle.load_state_dict(train_particle(particle, masks, data, schedule, hyper,
                                                generator(seed, "particle", cycle, p), bn_batches=lambda: bn_data))
        return particle

    cycles = swamp_cycles(model, train, cycles=cfg.cycles, particles=cfg.particles, ratio=cfg.prune_ratio,
                          method=cfg.prune_method, bn_data=bn_data, evaluate=scores(data))
    for mine, theirs in zip(cycles, result.cycles, strict=True):
        assert mine.metrics["average"]["test_acc"] == theirs["average"]["test_acc"]
        assert [p["test_acc"] for p in mine.metrics["particles"]] == [p["test_acc"] for p in theirs["particles"]]
        average = load_checkpoint(result.run_dir / f"cycle_{mine.cycle:02d}" / "average.safetensors")
        assert all(torch.equal(mine.masks[k].float(), m) for k, m in average.masks.items())
        assert all(torch.equal(mine.state[k], v) for k, v in average.state.items())
