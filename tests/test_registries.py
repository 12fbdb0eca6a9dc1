"""A model, a dataset and a study measurement are one registry entry each. A toy model registered in
:data:`core.models.REGISTRY` and a toy dataset registered in :data:`core.data.names.BUILTIN` are accepted by the
command line, trained, written, and their checkpoints checked by the schema (the dataset's own field, its bounds
and class count) and evaluated by a landscape tool; a toy measurement registered in
:data:`studies.measurements.MEASUREMENTS` is chosen with ``--only``, planned for its role's runs and cached as
the others are. No other edit. (Engines: tests/test_engines.py runs every registered one.)"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DATA_DIR, one_line
from torch import nn

from core.artifacts.checkpoint import load_checkpoint
from core.artifacts.schema import check_dataset_spec, dataset_classes
from core.data import TensorDataset, dataset_spec, load_dataset
from core.data.names import BUILTIN, Bound, BuiltinDataset, check_dataset_name
from core.models import REGISTRY, build_model, model_spec
from landscape.tools.artifacts import EvalOptions, run_particles
from landscape.tools.barrier import checkpoint_barrier
from studies.analyse import build_parser as analysis_parser
from studies.analyse import main as analyse_main
from studies.grid.cli import main as study_main
from studies.measurements import MEASUREMENTS, Measurement, Where
from training.config import parse_config
from training.swamp import main as swamp_main

TOY_CLASSES, TOY_LENGTH = 3, 6
TOY = BuiltinDataset("test_registries:load_toyset", TOY_CLASSES, (TOY_LENGTH,), {"size": Bound(8, 1000, 96)})


def toy_net(num_classes: int = 10, hidden: int = 8) -> nn.Module:
    """The toy model's factory: one hidden layer."""
    return nn.Sequential(nn.Linear(TOY_LENGTH, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def load_toyset(spec: dict, device: torch.device | str = "cpu", download: bool = False) -> TensorDataset:
    """The toy dataset's loader (the registry's signature): ``size`` seeded samples, the class the sign pattern
    of the first two inputs gives."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * spec["size"], TOY_LENGTH, generator=g)
    y = ((x[:, 0] > 0).long() + (x[:, 1] > 0).long()) % TOY_CLASSES
    n = spec["size"]
    return TensorDataset(spec, TOY_CLASSES, x[:n], y[:n], x[n:], y[n:]).to(torch.device(device))


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(REGISTRY, "toy", toy_net)
    monkeypatch.setitem(BUILTIN, "toyset", TOY)


def test_names_are_refused_until_registered():
    assert "unknown dataset 'toyset'" in one_line(check_dataset_name, "toyset")
    assert "unknown model 'toy'" in one_line(model_spec, "toy", 3)


def test_a_registered_model_and_dataset_train_and_their_checkpoints_load(registered, tmp_path):
    argv = ["--dataset", "toyset", "--model", "toy", "--model-kwargs", '{"hidden": 4}', "--cycles", "2", "--epochs",
            "1", "--particles", "2", "--rewind-epochs", "0", "--batch-size", "16", "--no-progress",
            "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "run")]
    cfg = parse_config(argv, "python -m training.swamp", "")
    spec = dataset_spec(cfg)
    assert spec == {"name": "toyset", "data_dir": str(DATA_DIR), "size": 96}, "the entry's field is written"
    assert load_dataset(spec).size("train") == 96
    assert type(build_model(model_spec("toy", TOY_CLASSES, {"hidden": 4}))[0]) is nn.Linear

    assert swamp_main(argv) == 0
    ckpt = load_checkpoint(tmp_path / "run" / "cycle_01" / "average.safetensors")
    assert ckpt.dataset == spec and dataset_classes(ckpt.dataset) == TOY_CLASSES
    assert ckpt.model == {"name": "toy", "kwargs": {"hidden": 4, "num_classes": TOY_CLASSES}}
    particles = [tmp_path / "run" / "cycle_01" / f"particle_0{p}.safetensors" for p in range(2)]
    result = checkpoint_barrier(*particles, points=3, options=EvalOptions(("test",), 0, progress=False))
    assert len(result.to_json()["test"]["loss"]) == 3


def test_the_schema_checks_a_registered_datasets_own_fields(registered):
    """The entry's bounds, its required field and the fields it does not have, as for the toolkit's own."""
    base = {"name": "toyset", "data_dir": "data", "size": 96}
    assert check_dataset_spec("f", base) == base
    assert one_line(check_dataset_spec, "f", {**base, "size": 7}) == \
        "f: metadata dataset.size must be an integer from 8 to 1,000, not 7"
    assert one_line(check_dataset_spec, "f", {"name": "toyset"}) == "f: metadata dataset.size is missing"
    assert "unknown field 'workers'" in one_line(check_dataset_spec, "f", {**base, "workers": 2})


def count_particles(at: Where) -> dict:
    """The toy measurement: how many particles the cycle has, and a setting it reads."""
    return {"particles": len(run_particles(at.run, at.cycle)), "points": at.settings.points}


def test_a_registered_measurement_is_chosen_planned_and_cached(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(MEASUREMENTS, "toy", Measurement(("swamp",), lambda done: done[-1:], count_particles,
                                                         "particles counted"))
    assert "toy = particles counted" in " ".join(analysis_parser().format_help().split())
    root = tmp_path / "study"
    assert study_main(["--quick", "--preset", "mnist1d-mlp", "--methods", "swamp-n3", "--seeds", "0", "--cycles", "2",
                       "--epochs", "1", "--rewind-epochs", "0", "--data-dir", str(DATA_DIR), "--no-progress",
                       "--out", str(root)]) == 0
    assert analyse_main([str(root), "--only", "toy", "--data-dir", str(DATA_DIR), "--no-progress"]) == 0
    written = sorted(str(p.relative_to(root / "analysis")) for p in (root / "analysis").rglob("cycle_*.json"))
    assert written == ["toy/swamp-n3-s0/cycle_01.json"], "the swamp role's run, the cycle the entry picks"
    assert json.loads((root / "analysis" / written[0]).read_text()) == {
        "particles": 3, "points": 3, "kind": "toy", "run": "swamp-n3-s0", "cycle": 1}
