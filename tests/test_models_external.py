"""Models from anywhere: ``torchvision:NAME``, ``timm:NAME`` and the user's ``PACKAGE.MODULE:CALLABLE``,
and the trust rule: a checkpoint's metadata never makes a tool import user code by itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR, one_line
from safetensors.torch import save_file
from torch import nn

from core.artifacts.checkpoint import build_model as checkpoint_model
from core.artifacts.checkpoint import load_checkpoint, save_checkpoint
from core.data import mnist1d_spec
from core.errors import run_cli
from core.models import build_model, meta_model, model_spec
from landscape.tools.align import main as align_main
from landscape.tools.barrier import main as barrier_main
from landscape.tools.hessian import main as hessian_main

USER_MODULE = "usernets"
USER_CODE = '''
from pathlib import Path

from torch import nn

Path(__file__).with_name("imported.marker").write_text("imported")  # the import's visible side effect
NOT_CALLABLE = 3


def tiny(num_classes, length=40, hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(length, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def not_a_module(num_classes):
    return "a string"
'''


def tiny_state(seed: int, hidden: int = 8) -> dict[str, torch.Tensor]:
    """The state of ``usernets:tiny`` (10 classes), made here without importing the user's module."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(40, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    return net.state_dict()


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the user's module ``usernets`` (not imported yet; forgotten afterwards)."""
    (tmp_path / f"{USER_MODULE}.py").write_text(USER_CODE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, USER_MODULE, raising=False)
    yield tmp_path
    sys.modules.pop(USER_MODULE, None)


def imported(user_dir: Path) -> bool:
    return USER_MODULE in sys.modules or (user_dir / "imported.marker").exists()



def test_torchvision_model_builds_with_classes_and_kwargs_also_on_meta():
    spec = model_spec("torchvision:resnet18", 7, {"zero_init_residual": True})
    assert spec == {"name": "torchvision:resnet18", "kwargs": {"zero_init_residual": True, "num_classes": 7}}
    net = build_model(spec).eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert all(not block.bn2.weight.any() for block in net.layer1)  # the kwarg reached the constructor
    with torch.device("meta"):
        meta = build_model(spec)
    assert {t.device.type for t in meta.state_dict().values()} == {"meta"}
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


def test_timm_model_builds_on_meta_with_its_classes():
    spec = model_spec("timm:resnet18", 5)
    with torch.device("meta"):
        net = build_model(spec)
    assert net.eval()(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 5)
    assert net.get_classifier().out_features == 5 and next(net.parameters()).device.type == "meta"


def test_a_model_that_reads_its_own_tensors_is_built_on_meta_without_touching_the_rng():
    state = torch.get_rng_state()
    net = meta_model(model_spec("torchvision:regnet_y_400mf", 10))  # RegNet reads Tensor.tolist() while built
    assert {t.device.type for t in net.state_dict().values()} == {"meta"}
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(("name", "kwargs", "expected"), [
    ("torchvision:resnet19", {}, "close matches: torchvision:resnet18"),
    ("timm:resnt18", {}, "close matches: timm:resnet18"),
    ("resnet-18", {}, "choose a zoo model"),
    ("torchvision:resnet18", {"weights": "DEFAULT"}, "argument weights is not allowed"),
    ("timm:resnet18", {"checkpoint_path": "/etc/passwd"}, "argument checkpoint_path is not allowed"),
    ("torchvision:resnet18", {"width_per_group": 2**40}, "argument width_per_group must be an integer"),
    ("usernets:tiny", {"hidden": [1] * 100}, "argument hidden must be a JSON scalar or a list of at most 64"),
    ("usernets:tiny", {"num_layers": 5000}, "argument num_layers must be a count of layers from 1 to 1,000"),
], ids=lambda v: str(v)[:30])
def test_bad_model_names_and_arguments_are_one_line(name, kwargs, expected):
    assert expected in one_line(model_spec, name, 10, kwargs)


def test_without_timm_the_line_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # ``import timm`` raises ImportError
    assert one_line(model_spec, "timm:resnet18", 10) == '--model timm:resnet18 needs timm: pip install -e ".[timm]"'


def test_bad_arguments_name_the_model_and_its_kwargs():
    message = one_line(build_model, model_spec("torchvision:resnet18", 10, {"width_per_group": 16}))
    assert message.startswith('bad arguments for model torchvision:resnet18 {"width_per_group": 16, "num_classes": 10}')


def test_a_user_factory_is_imported_only_with_trust(user_dir):
    spec = model_spec("usernets:tiny", 10, {"hidden": 4})  # checked for its form only: nothing imported
    assert not imported(user_dir)
    assert "--trust-code" in one_line(build_model, spec)
    assert not imported(user_dir)
    net = build_model(spec, trust_code=True)
    assert imported(user_dir) and net(torch.randn(3, 40)).shape == (3, 10)


@pytest.mark.parametrize(("name", "kwargs", "expected"), [
    ("nosuchmodule:tiny", {}, "cannot import nosuchmodule"),
    ("usernets:missing", {}, "usernets has no attribute missing"),
    ("usernets:NOT_CALLABLE", {}, "not a callable"),
    ("usernets:not_a_module", {}, "model usernets:not_a_module returned a str object, not a torch.nn.Module"),
    ("usernets:tiny", {"width": 3}, 'bad arguments for model usernets:tiny {"width": 3, "num_classes": 10}'),
], ids=lambda v: str(v)[:30])
def test_broken_user_code_is_one_line(user_dir, name, kwargs, expected):
    assert expected in one_line(build_model, model_spec(name, 10, kwargs), trust_code=True)


def write_user_checkpoint(path: Path, seed: int, hidden: int = 8) -> Path:
    save_checkpoint(path, tiny_state(seed, hidden), {}, kind="average",
                    model={"name": f"{USER_MODULE}:tiny", "kwargs": {"num_classes": 10}},
                    dataset=mnist1d_spec(str(DATA_DIR)), config={"eval_batch_size": 1000}, cycle=0)
    return path


def test_loading_a_user_code_checkpoint_imports_nothing_and_building_needs_trust(user_dir):
    path = write_user_checkpoint(user_dir / "a.safetensors", 0)
    ckpt = load_checkpoint(path)
    assert not imported(user_dir) and not ckpt.trust_code
    message = one_line(checkpoint_model, ckpt)
    assert f"checkpoint {path} names the model usernets:tiny" in message and "--trust-code" in message
    assert not imported(user_dir)
    net = checkpoint_model(load_checkpoint(path, trust_code=True))
    assert imported(user_dir)
    assert all(torch.equal(v, ckpt.state[k]) for k, v in net.state_dict().items())


def test_the_deferred_structure_check_runs_before_the_model_is_built(user_dir):
    wrong = write_user_checkpoint(user_dir / "wrong.safetensors", 0, hidden=5)  # tiny's default hidden is 8
    ckpt = load_checkpoint(wrong)
    assert not imported(user_dir)
    assert "tensor 1.weight has shape (5, 40)" in one_line(checkpoint_model, ckpt, trust_code=True)
    assert "has shape (5, 40)" in one_line(load_checkpoint, wrong, trust_code=True)


def test_landscape_tools_refuse_user_code_without_trust_code(user_dir, capsys):
    a, b = (str(write_user_checkpoint(user_dir / f"{n}.safetensors", seed)) for seed, n in enumerate("ab"))
    out = user_dir / "barrier.json"
    argv = [a, b, "--points", "2", "--bn-recal", "0", "--no-progress", "--data-dir", str(DATA_DIR), "--json", str(out)]
    assert run_cli(barrier_main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--trust-code" in err and a in err
    assert not out.exists() and not imported(user_dir)
    hessian = [a, "--probes", "2", "--samples", "8", "--no-progress", "--data-dir", str(DATA_DIR)]
    assert run_cli(hessian_main, hessian) == 2 and "--trust-code" in capsys.readouterr().err
    assert not imported(user_dir)
    assert run_cli(barrier_main, [*argv, "--trust-code"]) == 0
    assert json.loads(out.read_text())["points"] == 2 and imported(user_dir)
    assert run_cli(hessian_main, [*hessian, "--trust-code"]) == 0


def test_align_takes_the_trust_code_it_asks_for(user_dir, capsys):
    """Issue 27 item 9: landscape.tools.align said "pass --trust-code" and then rejected the flag."""
    a, b = (str(write_user_checkpoint(user_dir / f"{n}.safetensors", seed)) for seed, n in enumerate("ab"))
    out = user_dir / "aligned.safetensors"
    assert run_cli(align_main, [a, b, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--trust-code" in err
    assert not out.exists() and not imported(user_dir)
    assert run_cli(align_main, [a, b, "--out", str(out), "--trust-code", "--json", str(user_dir / "a.json")]) == 0
    assert imported(user_dir) and load_checkpoint(out, trust_code=True).model["name"] == f"{USER_MODULE}:tiny"
    assert json.loads((user_dir / "a.json").read_text())["alignment"]["method"] == "weights"


def test_a_family_over_a_user_code_model_is_analysed_with_trust_code(user_dir, capsys):
    """The study names its model on the command line (consent); the study layer reads it from the checkpoints,
    so studies.analyse, studies.controls and studies.report refuse it in one line, importing nothing, unless
    --trust-code is given."""
    from studies.analyse import main as analyse_main
    from studies.controls.cli import main as controls_main
    from studies.grid.cli import main as study_main
    from studies.report import main as report_main

    family, data = user_dir / "family", ["--data-dir", str(DATA_DIR), "--no-progress"]
    assert study_main(["--quick", "--models", f"{USER_MODULE}:tiny", "--methods", "imp,swamp-n3", "--seeds", "0",
                       "--cycles", "1", "--out", str(family), *data]) == 0
    sys.modules.pop(USER_MODULE)
    (user_dir / "imported.marker").unlink()
    cell = family / "cells" / f"{USER_MODULE}_tiny-r1"
    controls = [str(family), "--points", "2", "--hull-samples", "1", "--hull-vertices", "2", "--probes", "2",
                "--hessian-samples", "16", *data]
    for main, argv in [(analyse_main, [str(cell), "--only", "hessian,pairs", *data]), (controls_main, controls)]:
        assert run_cli(main, argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"names the model {USER_MODULE}:tiny" in err and "--trust-code" in err, err
        assert not imported(user_dir)
    assert not (cell / "analysis" / "hessian").exists() and not (family / "analysis" / "controls" / "flatness").exists()
    assert run_cli(analyse_main, [str(cell), "--only", "hessian,pairs", "--trust-code", *data]) == 0
    assert sorted(p.parent.name for p in (cell / "analysis").glob("*/*/cycle_00.json")) == ["imp-s0", "swamp-n3-s0",
                                                                                          "swamp-n3-s0"]
    assert run_cli(controls_main, [*controls, "--trust-code"]) == 0
    assert f"| {USER_MODULE}:tiny |" in capsys.readouterr().out
    sys.modules.pop(USER_MODULE)
    assert run_cli(report_main, [str(family)]) == 2 and "--trust-code" in capsys.readouterr().err
    assert run_cli(report_main, [str(family), "--trust-code"]) == 0
    assert "## Controls" in capsys.readouterr().out


def hostile_model(path: Path, model: dict, dataset: dict | None = None) -> Path:
    meta = {"format": "swamp-checkpoint/1", "kind": "average", "cycle": "0", "model": json.dumps(model),
            "dataset": json.dumps(dataset or {"name": "cifar10"}), "config": "{}"}
    save_file({"w": torch.zeros(2)}, str(path), metadata=meta)
    return path


@pytest.mark.parametrize(("name", "kwargs", "field"), [
    ("torchvision:resnet18", {"width_per_group": 2**40}, "model.kwargs.width_per_group must be an integer"),
    ("torchvision:resnet18", {"groups": -1}, "model.kwargs.groups must be an integer"),
    ("torchvision:resnet18", {"weights": "DEFAULT"}, "model.kwargs.weights is not allowed"),
    ("timm:resnet18", {"checkpoint_path": "/etc/passwd"}, "model.kwargs.checkpoint_path is not allowed"),
    ("timm:vit_tiny_patch16_224", {"depth": 10**6}, "model.kwargs.depth must be a count of layers"),
    ("timm:resnet18", {"layers": [900, 900]}, "model.kwargs.layers must be a count of layers"),
    ("torchvision:resnet18", {"norm_layer": {"a": 1}}, "model.kwargs.norm_layer must be a JSON scalar"),
    ("torchvision:resnet18", {"dropout": float("inf")}, "model.kwargs.dropout must be a JSON scalar"),
    ("torchvision:resnet19", {}, "model.name must be a model of torchvision (close matches: torchvision:resnet18"),
    ("usernets:tiny", {"hidden": 2**30}, "model.kwargs.hidden must be an integer"),
], ids=lambda v: str(v)[:30])
def test_hostile_library_and_user_code_metadata_is_refused_by_the_schema(user_dir, name, kwargs, field):
    path = hostile_model(user_dir / "bad.safetensors", {"name": name, "kwargs": {"num_classes": 10, **kwargs}})
    message = one_line(load_checkpoint, path, trust_code=True)
    assert field in message and str(path) in message
    assert not imported(user_dir)


def test_a_timm_checkpoint_without_timm_says_how_to_install_it(tmp_path, monkeypatch):
    path = hostile_model(tmp_path / "timm.safetensors", {"name": "timm:resnet18", "kwargs": {"num_classes": 10}})
    monkeypatch.setitem(sys.modules, "timm", None)
    assert one_line(load_checkpoint, path) == (f'{path}: metadata model.name timm:resnet18 needs timm: '
                                               'pip install -e ".[timm]"')


def test_a_library_model_checkpoint_round_trips(tmp_path):
    spec = model_spec("torchvision:shufflenet_v2_x0_5", 10)
    state = build_model(spec).state_dict()
    path = tmp_path / "shufflenet.safetensors"
    save_checkpoint(path, state, {}, kind="average", model=spec, dataset={"name": "cifar10"}, config={})
    net = checkpoint_model(load_checkpoint(path))
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
