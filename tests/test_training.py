"""Invariants and equivalences of the training core that users rely on."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from conftest import DATA_DIR, make_run
from safetensors import safe_open
from torch import nn
from torch.nn.utils import prune

from core.artifacts.checkpoint import load_checkpoint
from core.averaging import average_states
from core.data import load_dataset, mnist1d_spec
from core.models import build_model, model_spec
from core.pruning import (
    dense_masks,
    density,
    global_magnitude_mask,
    layerwise_magnitude_mask,
    prunable_names,
    random_mask,
)
from core.seeds import derive_seed, generator


def _raw(path):
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


def _checkpoints(run):
    return sorted(run.glob("cycle_*/*.safetensors")) + [run / "ticket.safetensors"]


def test_run_writes_every_contract_file(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["particles"] == 3 and config["seed"] == 0 and "package_version" in config
    assert (tiny_run / "ticket.safetensors").is_file()
    for k in range(3):
        cycle = tiny_run / f"cycle_{k:02d}"
        assert sorted(p.name for p in cycle.iterdir()) == [
            "average.safetensors", "metrics.json", "particle_00.safetensors", "particle_01.safetensors",
            "particle_02.safetensors"]
        m = json.loads((cycle / "metrics.json").read_text())
        assert set(m) >= {"cycle", "density", "sparsity", "particles", "average", "ensemble", "seconds"}
        assert m["cycle"] == k and math.isclose(m["density"] + m["sparsity"], 1.0)
        assert [p["particle"] for p in m["particles"]] == [0, 1, 2]
        for entry in [*m["particles"], m["average"]]:
            assert set(entry) >= {"test_loss", "test_acc", "train_loss"} and 0.0 <= entry["test_acc"] <= 1.0
        assert set(m["ensemble"]) >= {"test_loss", "test_acc"}
    with open(tiny_run / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["cycle"]) for r in rows] == [0, 1, 2]
    assert set(rows[0]) >= {"cycle", "density", "sparsity", "average_test_acc", "average_test_loss",
                            "particle_test_acc_mean", "particle_test_acc_std", "ensemble_test_acc"}


def test_checkpoint_metadata_follows_contract(tiny_run):
    tensors, meta = _raw(tiny_run / "cycle_01" / "particle_02.safetensors")
    assert meta["format"] == "swamp-checkpoint/1" and meta["kind"] == "particle"
    assert meta["cycle"] == "1" and meta["particle"] == "2" and math.isclose(float(meta["density"]), 0.8, abs_tol=1e-4)
    model = json.loads(meta["model"])
    assert model["name"] == "cnn1d" and json.loads(meta["dataset"])["name"] == "mnist1d"
    assert json.loads(meta["config"])["particles"] == 3
    net = build_model(model)
    assert set(net.state_dict()) | {f"mask.{n}" for n in prunable_names(net)} == set(tensors)
    assert _raw(tiny_run / "cycle_01" / "average.safetensors")[1]["kind"] == "average"
    assert _raw(tiny_run / "ticket.safetensors")[1]["kind"] == "ticket"


def test_density_after_k_cycles_is_geometric_and_pruned_weights_are_zero(tiny_run):
    ticket = load_checkpoint(tiny_run / "ticket.safetensors")
    total = sum(m.numel() for m in ticket.masks.values())
    kept = total
    for k in range(3):
        for path in sorted((tiny_run / f"cycle_{k:02d}").glob("*.safetensors")):
            tensors, meta = _raw(path)
            masks = {n[5:]: v for n, v in tensors.items() if n.startswith("mask.")}
            assert sum(int(m.sum()) for m in masks.values()) == kept
            assert abs(kept / total - 0.8 ** k) < 1e-4
            for name, mask in masks.items():
                assert torch.all(tensors[name][mask == 0] == 0), f"{path}: {name} revived"
        kept -= round(0.2 * kept)


def test_particles_differ_but_share_the_mask_and_average_is_their_mean(tiny_run):
    for k in range(3):
        cycle = tiny_run / f"cycle_{k:02d}"
        parts = [load_checkpoint(cycle / f"particle_{p:02d}.safetensors") for p in range(3)]
        avg = load_checkpoint(cycle / "average.safetensors")
        for other in [*parts[1:], avg]:
            assert all(torch.equal(parts[0].masks[n], other.masks[n]) for n in parts[0].masks)
        for other in parts[1:]:
            assert not torch.equal(parts[0].state["classifier.weight"], other.state["classifier.weight"])
        params = [n for n, _ in build_model(avg.model).named_parameters()]
        for name in params:
            mean = torch.stack([p.state[name] for p in parts]).mean(0)
            torch.testing.assert_close(avg.state[name], mean, rtol=0, atol=1e-6)


def test_global_mask_equals_torch_global_unstructured():
    torch.manual_seed(1)
    net = build_model(model_spec("cnn1d", 10))
    reference = build_model(model_spec("cnn1d", 10))
    reference.load_state_dict(net.state_dict())
    modules = dict(reference.named_modules())
    names = prunable_names(net)
    targets = [(modules[n.rsplit(".", 1)[0]], "weight") for n in names]
    weights, masks = dict(net.named_parameters()), dense_masks(net)
    for _ in range(4):
        masks = global_magnitude_mask(weights, masks, 0.2)
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=0.2)
        for n in names:
            assert torch.equal(masks[n], modules[n.rsplit(".", 1)[0]].weight_mask)


@pytest.mark.parametrize("method", ["layerwise", "random"])
def test_other_pruning_methods_remove_the_ratio_of_what_remains(method):
    torch.manual_seed(2)
    net = build_model(model_spec("mlp", 10))
    weights, masks = dict(net.named_parameters()), dense_masks(net)
    gen = torch.Generator().manual_seed(0)
    for k in range(1, 4):
        prev = masks
        masks = (layerwise_magnitude_mask(weights, masks, 0.2) if method == "layerwise"
                 else random_mask(masks, 0.2, gen))
        assert all(torch.all(masks[n] <= prev[n]) for n in masks), "a pruned weight came back"
        assert abs(density(masks) - 0.8 ** k) < 1e-3
        if method == "layerwise":
            for m in masks.values():
                assert abs(float(m.mean()) - 0.8 ** k) < 0.01


def _reference_imp(cycles: int, epochs: int, seed: int, lr: float, wd: float, bs: int):
    """Plain IMP with weight rewinding written independently of training.train / training.run:
    masks by torch.nn.utils.prune, weights re-masked after each SGD step, cosine LR to 0."""
    data = load_dataset(mnist1d_spec(str(DATA_DIR)))
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "init"))
        net = build_model(model_spec("cnn1d", 10))

    def train(model, n_epochs, gen, schedule, masks):
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
        spe = data.size("train") // bs
        for epoch in range(n_epochs):
            model.train()
            for step, (x, y) in enumerate(data.train_batches(bs, gen)):
                for g in opt.param_groups:
                    g["lr"] = schedule(epoch * spe + step, n_epochs * spe)
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if name in masks:
                            p.mul_(masks[name])

    train(net, 1, generator(seed, "ticket"), lambda t, total: lr, {})
    ticket = {k: v.clone() for k, v in net.state_dict().items()}
    names = prunable_names(net)
    masks = {n: torch.ones_like(p) for n, p in net.named_parameters() if n in names}
    finals = []
    for cycle in range(cycles):
        net.load_state_dict(ticket)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if name in masks:
                    p.mul_(masks[name])
        train(net, epochs, generator(seed, "particle", cycle, 0),
              lambda t, total: 0.5 * lr * (1 + math.cos(math.pi * t / total)), masks)
        finals.append({k: v.clone() for k, v in net.state_dict().items()})
        scratch = build_model(model_spec("cnn1d", 10))
        scratch.load_state_dict(finals[-1])
        modules = dict(scratch.named_modules())
        targets = [(modules[n.rsplit(".", 1)[0]], "weight") for n in names]
        for n in names:
            prune.custom_from_mask(modules[n.rsplit(".", 1)[0]], "weight", masks[n])
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=0.2)
        masks = {n: modules[n.rsplit(".", 1)[0]].weight_mask.clone() for n in names}
    return finals


def test_one_particle_without_swa_is_plain_imp(tmp_path):
    run = make_run(tmp_path / "imp", "--particles", "1", "--no-swa", "--cycles", "2", "--epochs", "2")
    reference = _reference_imp(cycles=2, epochs=2, seed=0, lr=0.1, wd=5e-4, bs=128)
    for k in range(2):
        particle = load_checkpoint(run / f"cycle_{k:02d}" / "particle_00.safetensors").state
        average = load_checkpoint(run / f"cycle_{k:02d}" / "average.safetensors").state
        for key, value in reference[k].items():
            torch.testing.assert_close(particle[key], value, rtol=1e-5, atol=1e-6)
            assert torch.equal(average[key], particle[key]), "with one particle and no SWA the solution is it"


def test_same_seed_gives_identical_checkpoints(tiny_run, tmp_path):
    again = make_run(tmp_path / "again")
    for path in _checkpoints(tiny_run):
        first, _ = _raw(path)
        second, _ = _raw(again / path.relative_to(tiny_run))
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first), path


def test_init_seed_changes_the_initial_weights_alone(tmp_path):
    """--init-seed J draws the initial weights of --seed J and keeps everything else of --seed (the data order):
    the one-factor control of docs/reproductions.md (initialisation only)."""
    args = ("--particles", "1", "--no-swa", "--cycles", "1", "--epochs", "1", "--rewind-epochs", "0")
    plain, same = make_run(tmp_path / "s1", "--seed", "1", *args), make_run(tmp_path / "s1i1", "--seed", "1",
                                                                            "--init-seed", "1", *args)
    other, mixed = make_run(tmp_path / "s2", "--seed", "2", *args), make_run(tmp_path / "s1i2", "--seed", "1",
                                                                             "--init-seed", "2", *args)
    for path in _checkpoints(plain):  # giving the default explicitly changes no byte of the weights
        first, second = _raw(path)[0], _raw(same / path.relative_to(plain))[0]
        assert all(torch.equal(first[k], second[k]) for k in first), path
    ticket = {name: _raw(run / "ticket.safetensors")[0] for name, run in (("s1", plain), ("s2", other),
                                                                          ("mixed", mixed))}
    assert all(torch.equal(ticket["mixed"][k], ticket["s2"][k]) for k in ticket["s2"]), "seed 2's initial weights"
    assert not all(torch.equal(ticket["mixed"][k], ticket["s1"][k]) for k in ticket["s1"])
    trained = {name: _raw(run / "cycle_00" / "average.safetensors")[0] for name, run in (("s2", other),
                                                                                         ("mixed", mixed))}
    assert not all(torch.equal(trained["mixed"][k], trained["s2"][k]) for k in trained["s2"]), \
        "the same initial weights trained in seed 1's data order end elsewhere"
    assert json.loads((mixed / "config.json").read_text())["init_seed"] == 2
    assert json.loads((plain / "config.json").read_text())["init_seed"] is None


def test_average_states_is_the_exact_mean():
    states = [{"w": torch.randn(5, 3), "n": torch.tensor(7)} for _ in range(4)]
    avg = average_states(states)
    torch.testing.assert_close(avg["w"], sum(s["w"] for s in states) / 4)
    assert avg["n"].item() == 7


@pytest.mark.parametrize("rewind", ["lr", "none"])
def test_swamp_plus_and_rewinding_to_the_previous_solution(tmp_path, rewind):
    run = make_run(tmp_path / rewind, "--particles-from-cycle", "1", "--cycles", "2", "--epochs", "1",
                   "--rewind", rewind)
    assert len(list((run / "cycle_00").glob("particle_*.safetensors"))) == 1
    assert len(list((run / "cycle_01").glob("particle_*.safetensors"))) == 3
    solution = load_checkpoint(run / "cycle_00" / "average.safetensors")
    particle = load_checkpoint(run / "cycle_01" / "particle_00.safetensors")
    assert abs(particle.density - 0.8) < 1e-4
    # With one epoch from the previous solution the particle stays close to it (not to the ticket).
    ticket = load_checkpoint(run / "ticket.safetensors")
    name = "classifier.weight"
    to_solution = float((particle.state[name] - solution.state[name] * particle.masks[name]).norm())
    to_ticket = float((particle.state[name] - ticket.state[name] * particle.masks[name]).norm())
    assert to_solution < to_ticket
