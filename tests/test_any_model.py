"""SWAMP on the user's own model and data: torchvision models and datasets, user factories, the Python API,
logging and ``--prune-exclude``, each through the real command line and analysed by the landscape tools."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR
from safetensors import safe_open

import training
from core.errors import run_cli
from landscape.tools import barrier as barrier_cli
from landscape.tools import hessian as hessian_cli
from training import context as context_module
from training.swamp import main as _swamp_main


def swamp_main(argv: list[str]) -> int:
    return run_cli(_swamp_main, argv)


def barrier(argv: list[str]) -> int:
    return run_cli(barrier_cli.main, argv)


QUICK = ["--epochs", "1", "--cycles", "2", "--particles", "2", "--rewind-epochs", "0", "--no-progress"]
FAKE = ["--dataset", "torchvision:FakeData", "--dataset-kwargs", '{"size": 64, "image_size": [3, 32, 32], '
        '"num_classes": 4}', "--batch-size", "32", "--eval-batch-size", "64"]


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


def _check_contract(run: Path, cycles: int, particles: int) -> None:
    """Every contract file exists; masks are 0/1, shared by a cycle, of density 0.8^k; pruned weights are 0."""
    assert (run / "config.json").is_file() and (run / "ticket.safetensors").is_file()
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [int(r["cycle"]) for r in rows] == list(range(cycles))
    for k in range(cycles):
        folder = run / f"cycle_{k:02d}"
        paths = [folder / f"particle_{p:02d}.safetensors" for p in range(particles)] + [folder / "average.safetensors"]
        masks = None
        for path in paths:
            tensors, meta = _tensors(path)
            these = {n[len("mask."):]: t for n, t in tensors.items() if n.startswith("mask.")}
            assert these, path
            for name, mask in these.items():
                assert bool(((mask == 0) | (mask == 1)).all())
                assert bool((tensors[name][mask == 0] == 0).all()), f"{path}: pruned entries of {name} are not zero"
            masks = masks or these
            assert all(torch.equal(masks[n], these[n]) for n in masks)
            kept = sum(float(m.sum()) for m in these.values()) / sum(m.numel() for m in these.values())
            assert kept == pytest.approx(0.8 ** k, abs=1e-3)
            assert float(meta["density"]) == pytest.approx(kept)
        assert json.loads((folder / "metrics.json").read_text())["cycle"] == k


@pytest.fixture(scope="module")
def torchvision_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tv") / "run"
    assert swamp_main([*QUICK, *FAKE, "--model", "torchvision:resnet18", "--out", str(out),
                       "--data-dir", str(out.parent / "data")]) == 0
    return out


def test_torchvision_model_on_torchvision_data_keeps_the_contract(torchvision_run):
    _check_contract(torchvision_run, cycles=2, particles=2)
    config = json.loads((torchvision_run / "config.json").read_text())
    assert config["model"] == "torchvision:resnet18" and config["dataset"] == "torchvision:FakeData"
    assert json.loads(config["dataset_kwargs"]) == {"size": 64, "image_size": [3, 32, 32], "num_classes": 4}
    _, meta = _tensors(torchvision_run / "cycle_01" / "average.safetensors")
    assert json.loads(meta["model"]) == {"name": "torchvision:resnet18", "kwargs": {"num_classes": 4}}
    assert json.loads(meta["dataset"])["name"] == "torchvision:FakeData"


def test_landscape_tools_analyse_a_torchvision_run(torchvision_run, tmp_path):
    cycle = torchvision_run / "cycle_01"
    out = tmp_path / "barrier.json"
    assert barrier([str(cycle / "particle_00.safetensors"), str(cycle / "particle_01.safetensors"),
                             "--points", "3", "--bn-recal", "64", "--data-dir", str(tmp_path / "data"),
                             "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert len(result["lambdas"]) == 3
    hess = tmp_path / "hessian.json"
    assert run_cli(hessian_cli.main, [str(cycle / "average.safetensors"), "--probes", "2", "--samples", "32",
                             "--data-dir", str(tmp_path / "data"), "--json", str(hess), "--no-progress"]) == 0
    assert json.loads(hess.read_text())


USER_CODE = '''
import torch
from torch import nn


def small_net(num_classes, width=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(12, width), nn.ReLU(), nn.Linear(width, num_classes))


class Points(torch.utils.data.Dataset):
    num_classes = 3

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x = torch.randn(n, 12, generator=g) + self.y[:, None].float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def points(n=96):
    return Points(n, 0), Points(n // 2, 1)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module ``usercode_<test>`` in the working directory, forgotten again after the test."""
    name = f"usercode_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def _user_args(name: str, out: Path) -> list[str]:
    return [*QUICK, "--model", f"{name}:small_net", "--dataset", f"{name}:points", "--batch-size", "16",
            "--eval-batch-size", "48", "--out", str(out)]


def test_user_model_and_dataset_train_and_analyse_only_with_trust(user_module, tmp_path, capsys):
    run = tmp_path / "run"
    assert swamp_main(_user_args(user_module, run)) == 0
    _check_contract(run, cycles=2, particles=2)
    sys.modules.pop(user_module, None)
    a, b = (str(run / "cycle_01" / f"particle_{p:02d}.safetensors") for p in (0, 1))
    capsys.readouterr()
    out = tmp_path / "barrier.json"
    assert barrier([a, b, "--points", "3", "--json", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--trust-code" in err[0]
    assert user_module not in sys.modules and not out.exists()
    assert barrier([a, b, "--points", "3", "--json", str(out), "--no-progress", "--trust-code"]) == 0
    assert len(json.loads(out.read_text())["lambdas"]) == 3


class Killed(Exception):
    """Stands in for the process being killed."""


def test_killed_user_code_run_resumes_only_with_trust_and_equals_an_uninterrupted_one(user_module, tmp_path,
                                                                                     monkeypatch, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert swamp_main(_user_args(user_module, whole)) == 0
    saves = []
    real = context_module.save_train_state

    def save_then_die(path, state):
        real(path, state)
        saves.append(path)
        if len(saves) == 2:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(context_module, "save_train_state", save_then_die)
        with pytest.raises(Killed):
            swamp_main(_user_args(user_module, cut))
    capsys.readouterr()
    assert swamp_main(["--resume", "--out", str(cut), "--no-progress"]) == 2
    assert "--trust-code" in capsys.readouterr().err
    assert swamp_main(["--resume", "--out", str(cut), "--no-progress", "--trust-code"]) == 0
    for path in sorted(whole.rglob("*.safetensors")):
        assert path.read_bytes() == (cut / path.relative_to(whole)).read_bytes(), path


MLP = ["--model", "mlp", "--cycles", "2", "--epochs", "1", "--particles", "2", "--rewind-epochs", "1",
       "--no-progress", "--data-dir", str(DATA_DIR)]


def test_python_api_writes_the_same_bytes_as_the_command_line(tmp_path):
    cli, api = tmp_path / "cli", tmp_path / "api"
    assert swamp_main([*MLP, "--out", str(cli)]) == 0
    result = training.run_swamp(model="mlp", cycles=2, epochs=1, particles=2, rewind_epochs=1, progress=False,
                                data_dir=str(DATA_DIR), out=str(api))
    assert result.run_dir == api and [c["cycle"] for c in result.cycles] == [0, 1]
    files = sorted(p.relative_to(cli) for p in cli.rglob("*.safetensors"))
    assert files == sorted(p.relative_to(api) for p in api.rglob("*.safetensors"))
    for name in files:
        assert (cli / name).read_bytes() == (api / name).read_bytes(), name
    drop = {"out"}
    load = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if k not in drop}  # noqa: E731
    assert load(cli / "config.json") == load(api / "config.json")


class Net(torch.nn.Sequential):
    """A plain module the way a user writes one in a script."""

    def __init__(self, num_classes: int):
        super().__init__(torch.nn.Flatten(), torch.nn.Linear(40, 32), torch.nn.ReLU(), torch.nn.Linear(32, num_classes))


def test_python_api_trains_a_plain_module_on_in_memory_datasets(tmp_path):
    from core.data import load_mnist1d, mnist1d_spec

    data = load_mnist1d(mnist1d_spec(str(DATA_DIR)))
    train_set = torch.utils.data.TensorDataset(data.x_train[:512], data.y_train[:512])
    test_set = torch.utils.data.TensorDataset(data.x_test[:256], data.y_test[:256])
    train_set.num_classes = 10
    result = training.run_swamp(model_fn=Net, train_set=train_set, test_set=test_set, cycles=2, epochs=1,
                                particles=2, rewind_epochs=0, batch_size=64, progress=False, out=str(tmp_path / "r"))
    assert [round(c["density"], 3) for c in result.cycles] == [1.0, 0.8]
    assert result.config.model == f"{__name__}:Net"
    _check_contract(tmp_path / "r", cycles=2, particles=2)


def test_python_api_refuses_what_it_cannot_record(tmp_path):
    with pytest.raises(ValueError, match="importable name"):
        training.run_swamp(model_fn=lambda num_classes: Net(num_classes), out=str(tmp_path / "x"))
    with pytest.raises(TypeError, match="unknown setting 'partcles'"):
        training.run_swamp(partcles=3, out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_tensorboard_scalars_equal_results_csv(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert swamp_main([*MLP, "--out", str(run), "--log", "tensorboard"]) == 0
    events = EventAccumulator(str(run / "logs" / "tensorboard"))
    events.Reload()
    rows = list(csv.DictReader((run / "results.csv").open()))
    for column in ("density", "average_test_acc", "ensemble_test_loss", "particle_test_acc_mean", "seconds"):
        logged = [(e.step, e.value) for e in events.Scalars(f"cycle/{column}")]
        assert [s for s, _ in logged] == [0, 1]
        assert [v for _, v in logged] == pytest.approx([float(r[column]) for r in rows], rel=1e-6)
    epochs = events.Scalars("epoch/cycle_00_particle_01/train_loss")
    assert len(epochs) == 1 and epochs[0].value > 0
    assert {t for t in events.Tags()["scalars"] if t.startswith("epoch/ticket/")} == {"epoch/ticket/train_loss",
                                                                                       "epoch/ticket/lr"}
    # a run with logs is still a run of ours: --overwrite replaces it
    assert swamp_main([*MLP, "--out", str(run), "--overwrite"]) == 0 and not (run / "logs").exists()


def test_prune_exclude_keeps_matching_weights_dense(tmp_path, capsys):
    run = tmp_path / "run"
    assert swamp_main([*MLP, "--out", str(run), "--prune-exclude", r"^1\.", "--prune-exclude", r"^5\."]) == 0
    tensors, _ = _tensors(run / "cycle_01" / "average.safetensors")
    assert sorted(k for k in tensors if k.startswith("mask.")) == ["mask.3.weight"]
    assert float((tensors["1.weight"] == 0).float().mean()) < 0.01
    assert json.loads((run / "config.json").read_text())["prune_exclude"] == [r"^1\.", r"^5\."]
    for bad, says in ((["--prune-exclude", "("], "not a regular expression"),
                      (["--prune-exclude", "^conv"], "matches none"),
                      (["--prune-exclude", "weight"], "leaves no prunable weight")):
        capsys.readouterr()
        assert swamp_main([*MLP, "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0] and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("args, says", [
    (["--model", "torchvision:resnet81"], "resnet18"),
    (["--dataset", "torchvision:FakeDat"], "FakeData"),
    (["--model", "nosuchpackage_xyz:net"], "cannot import"),
    (["--model", "torchvision:resnet18", "--dataset", "mnist1d"], "does not fit"),
])
def test_bad_models_and_datasets_are_one_line_before_any_run_directory(tmp_path, capsys, args, says):
    out = tmp_path / "run"
    assert swamp_main([*QUICK, *args, "--out", str(out), "--data-dir", str(DATA_DIR)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and says in err[0], err
    assert not out.exists()


def test_readme_training_example_runs(tmp_path, monkeypatch, capsys):
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"<!-- own-training-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("epochs=4", "epochs=1").replace("cycles=3", "cycles=2"), "README", "exec"),
         {"__name__": "__main__"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["density 1.00", "density 0.80"]
    assert lines[2].startswith("loaded the average of cycle 1: ") and len(lines) == 3
    assert (tmp_path / "runs" / "own-net" / "cycle_01" / "average.safetensors").is_file()


def test_transformer1d_is_pruned_in_every_linear_layer_and_keeps_the_contract(tmp_path):
    from core.models import build_model, model_spec
    from core.pruning import prunable_names

    net = build_model(model_spec("transformer1d", 10))
    linear = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(prunable_names(net)) == linear and len(linear) == 14
    assert not any("norm" in n or "position" in n for n in prunable_names(net))
    run = tmp_path / "run"
    assert swamp_main([*MLP[:-2], "--model", "transformer1d", "--data-dir", str(DATA_DIR), "--out", str(run)]) == 0
    _check_contract(run, cycles=2, particles=2)
    tensors, _ = _tensors(run / "cycle_01" / "average.safetensors")
    assert {k[len("mask."):] for k in tensors if k.startswith("mask.")} == linear
    hess = tmp_path / "hessian.json"  # double backward through attention (the math kernel)
    assert run_cli(hessian_cli.main, [str(run / "cycle_01" / "average.safetensors"), "--probes", "2", "--samples",
                                      "64", "--data-dir", str(DATA_DIR), "--json", str(hess), "--no-progress"]) == 0
    assert json.loads(hess.read_text())["trace"] != 0


def test_timm_model_trains_and_is_analysed(tmp_path):
    run = tmp_path / "run"
    assert swamp_main([*QUICK, *FAKE, "--model", "timm:test_vit", "--out", str(run),
                       "--data-dir", str(tmp_path / "data")]) == 0
    _check_contract(run, cycles=2, particles=2)
    a, b = (str(run / "cycle_01" / f"particle_{p:02d}.safetensors") for p in (0, 1))
    assert barrier([a, b, "--points", "3", "--data-dir", str(tmp_path / "data"), "--no-progress"]) == 0
