"""Hostile checkpoints: no file may make a tool allocate, hang, write elsewhere or crash.

Every hostile file is a copy of the ``tiny_run`` fixture's ``cycle_01/average.safetensors`` with its
metadata or tensors changed; each must be refused with one :class:`UserError` line naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import DATA_DIR, TINY_ARGS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from core.artifacts.checkpoint import build_model, load_checkpoint, load_plain_state_dict
from core.errors import UserError, run_cli
from core.models import build_model as fresh_model
from core.models import model_spec
from landscape.tools.artifacts import check_compatible
from landscape.tools.barrier import main as barrier_main
from landscape.tools.hessian import main as hessian_main
from training.swamp import main as swamp_main

ROOT = Path(__file__).resolve().parent.parent
DELETE = object()
JSON_FIELDS = ("model", "dataset", "config")
# A CPU-only barrier on this (CUDA) torch build needs about 4 GiB of address space; twice that leaves room
# and is still far below what the hostile files would allocate without the meta-device check.
ADDRESS_SPACE = 8 * 2**30


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata())


def hostile(source: Path, out: Path, field: str | None = None, value: Any = None,
            tensors: dict[str, torch.Tensor] | None = None, raw: dict[str, str] | None = None) -> Path:
    """``source`` with the metadata ``field`` (dotted, e.g. ``model.kwargs.num_classes``) set to the JSON
    ``value`` (or removed with :data:`DELETE`), the given tensors replaced and ``raw`` metadata strings set."""
    stored, meta = read(source)
    if field is not None:
        top, *path = field.split(".")
        if top in JSON_FIELDS and path:
            obj = json.loads(meta[top])
            parent = obj
            for key in path[:-1]:
                parent = parent[key]
            if value is DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            meta[top] = json.dumps(obj)
        elif value is DELETE:
            del meta[top]
        elif top in JSON_FIELDS or not isinstance(value, str):
            meta[top] = json.dumps(value)
        else:
            meta[top] = value
    meta.update(raw or {})
    save_file({**stored, **(tensors or {})}, str(out), metadata=meta)
    return out


def refusal(path: Path) -> str:
    """The one-line message with which loading ``path`` and building its model is refused."""
    with pytest.raises(UserError) as info:
        build_model(load_checkpoint(path))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def average(tiny_run: Path) -> Path:
    return tiny_run / "cycle_01" / "average.safetensors"


METADATA_CASES = [
    ("config", [1, 2], "metadata config"),
    ("config", "hello", "metadata config"),
    ("config.eval_batch_size", "abc", "config.eval_batch_size"),
    ("config.eval_batch_size", -1, "config.eval_batch_size"),
    ("config.eval_batch_size", 10**9, "config.eval_batch_size"),
    ("dataset", ["mnist1d"], "metadata dataset"),
    ("dataset.num_samples", DELETE, "dataset.num_samples"),
    ("dataset.num_samples", "many", "dataset.num_samples"),
    ("dataset.num_samples", -10, "dataset.num_samples"),
    ("dataset.num_samples", 5000.5, "dataset.num_samples"),
    ("dataset.num_samples", 1e12, "dataset.num_samples"),
    ("dataset.num_samples", 10**12, "dataset.num_samples"),
    ("dataset.seed", -1, "dataset.seed"),
    ("dataset.name", "imagenet", "dataset.name"),
    ("dataset.workers", 4, "workers"),
    ("dataset.data_dir", 7, "dataset.data_dir"),
    ("model", "cnn1d", "metadata model"),
    ("model.name", "evil", "model.name"),
    ("model.kwargs", [1], "model.kwargs"),
    ("model.kwargs.num_classes", -5, "model.kwargs.num_classes"),
    ("model.kwargs.num_classes", 10**9, "model.kwargs.num_classes"),
    ("model.kwargs.num_classes", 7, "model.kwargs.num_classes"),
    ("model.kwargs.num_classes", True, "model.kwargs.num_classes"),
    ("model.kwargs.num_classes", DELETE, "model.kwargs.num_classes"),
    ("model.kwargs.channels", "wide", "model.kwargs.channels"),
    ("model.kwargs.channels", {"a": 1}, "model.kwargs.channels"),
    ("model.kwargs.evil", 1, "model.kwargs.evil"),
    ("model.kwargs.two\nlines", 1, "model.kwargs.'two\\nlines'"),
    ("kind", "evil", "metadata kind"),
    ("kind", "plain", "metadata kind"),
    ("kind", DELETE, "metadata kind"),
    ("cycle", "-7", "metadata cycle"),
    ("cycle", "1e3", "metadata cycle"),
    ("particle", "x", "metadata particle"),
    ("density", "nan", "metadata density"),
    ("density", "2", "metadata density"),
    ("density", "-0.5", "metadata density"),
]


@pytest.mark.parametrize(("field", "value", "named"), METADATA_CASES, ids=[f"{c[0]}={c[1]!r}"[:40] for c in
                                                                            METADATA_CASES])
def test_bad_metadata_is_one_line_naming_the_field(average, tmp_path, field, value, named):
    message = refusal(hostile(average, tmp_path / "bad.safetensors", field, value))
    assert named in message and "bad.safetensors" in message


def test_unparsable_and_deeply_nested_metadata_are_refused(average, tmp_path):
    for text in ("{not json", "[" * 100_000, '{"name": "cnn1d", "kwargs": {"num_classes": 1' + "0" * 5000 + "}}"):
        assert "metadata model" in refusal(hostile(average, tmp_path / "bad.safetensors", raw={"model": text}))


def _first(tensors: dict[str, torch.Tensor], suffix: str) -> str:
    return next(k for k in tensors if k.endswith(suffix) and not k.startswith("mask."))


def tensor_cases(average: Path) -> list[tuple[dict[str, torch.Tensor], str]]:
    stored, _ = read(average)
    weight = next(k[len("mask."):] for k in stored if k.startswith("mask."))
    var, bias = _first(stored, "running_var"), _first(stored, "bias")
    w = stored[weight]
    cases = [({weight: w.masked_fill(w != 0, float("nan"))}, weight),
             ({bias: torch.full_like(stored[bias], float("inf"))}, bias),
             ({var: torch.full_like(stored[var], float("nan"))}, var),
             ({var: -stored[var]}, "running_var"),
             ({bias: stored[bias].double()}, "dtype"),
             ({bias: stored[bias][:-1]}, "shape"),
             ({"evil": torch.zeros(3)}, "evil"),
             ({"two\nlines": torch.zeros(3)}, "'two\\nlines'"),
             ({f"mask.{bias}": torch.ones(3)}, f"mask.{bias}")]
    mask = stored[f"mask.{weight}"]
    for bad in (0.5, 2.0, -1.0, float("nan")):
        cases.append(({f"mask.{weight}": mask.masked_fill(mask == 1, bad)}, f"mask.{weight}"))
    cases.append(({f"mask.{weight}": mask.bool()}, f"mask.{weight}"))
    return cases


def test_bad_tensors_are_one_line_naming_the_tensor(average, tmp_path):
    for tensors, named in tensor_cases(average):
        message = refusal(hostile(average, tmp_path / "bad.safetensors", tensors=tensors))
        assert named in message, (named, message)
    stored, _ = read(average)
    missing = tmp_path / "missing.safetensors"
    _, meta = read(average)
    save_file({k: v for k, v in stored.items() if not k.endswith("running_mean")}, str(missing), metadata=meta)
    assert "running_mean" in refusal(missing)


def test_a_model_that_cannot_read_the_data_is_refused(average, tmp_path):
    spec = model_spec("mlp", 10, {"length": 41})
    state = fresh_model(spec).state_dict()
    path = hostile(average, tmp_path / "long.safetensors", "model", spec, raw={"kind": "average"})
    _, meta = read(path)
    save_file(state, str(path), metadata=meta)
    assert "cannot read mnist1d inputs" in refusal(path)


def test_refusals_through_the_cli_are_one_error_line(average, tmp_path, capsys):
    paths = [hostile(average, tmp_path / f"bad{i}.safetensors", field, value)
             for i, (field, value, _) in enumerate(METADATA_CASES[::4])]
    paths += [hostile(average, tmp_path / f"badt{i}.safetensors", tensors=tensors)
              for i, (tensors, _) in enumerate(tensor_cases(average)[::3])]
    for path in paths:
        for argv in ([str(path), str(average)], [str(average), str(path)]):
            assert run_cli(barrier_main, [*argv, "--no-progress", "--data-dir", str(DATA_DIR)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and err.count("\n") == 1 and path.name in err, err


def test_dtype_mismatch_between_checkpoints_says_dtype(average):
    ckpt = load_checkpoint(average)
    key = next(iter(ckpt.state))
    other = dataclasses.replace(ckpt, path="other", state={**ckpt.state, key: ckpt.state[key].double()})
    with pytest.raises(UserError, match=f"dtype of tensor {key} \\(torch.float64 vs torch.float32\\)"):
        check_compatible([ckpt, other])


FIELDS = ("model", "model.name", "model.kwargs", "model.kwargs.num_classes", "dataset", "dataset.name",
          "dataset.num_samples", "dataset.seed", "dataset.data_dir", "config", "config.eval_batch_size", "kind",
          "cycle", "particle", "density")
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | _TEXT
            | st.sampled_from([0, 1, 10, 5000, 42, 2**32, 10**12, "5000", "average", "cnn1d", "mnist1d", "0.5"]))
JSON_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(_TEXT | st.sampled_from(["name", "kwargs", "num_classes"]), inner,
                                             max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hypothesis")


@pytest.mark.parametrize("field", FIELDS)
@settings(max_examples=7, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES)
def test_any_json_in_any_field_is_loaded_or_one_user_error(average, scratch, field, value):
    path = hostile(average, scratch / "fuzz.safetensors", field, value)
    try:
        build_model(load_checkpoint(path))
    except UserError as err:
        assert "\n" not in str(err)


def _barrier(*argv: str) -> int:
    return run_cli(barrier_main, [*argv, "--points", "2", "--bn-recal", "0", "--no-progress"])


def test_data_are_read_only_where_the_user_says(average, tmp_path, monkeypatch, capsys):
    victim = tmp_path / "victim"
    path = hostile(average, tmp_path / "elsewhere.safetensors", "dataset.data_dir", str(victim))
    assert _barrier(str(path), str(path), "--data-dir", str(DATA_DIR)) == 0
    assert run_cli(hessian_main, [str(path), "--probes", "2", "--samples", "8", "--data-dir", str(DATA_DIR)]) == 0
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert _barrier(str(path), str(average)) == 0
    capsys.readouterr()
    assert not victim.exists()
    assert any((work / "data" / "mnist1d").iterdir())  # the default: data/ in the working directory


def test_a_damaged_file_of_a_run_says_how_to_recover(tiny_run, tmp_path):
    for damaged, hint in (("ticket.safetensors", "train the ticket again"),
                          ("cycle_02/particle_00.safetensors", "train that particle again"),
                          ("cycle_01/average.safetensors", "average the cycle again")):
        run = tmp_path / damaged.replace("/", "_")
        shutil.copytree(tiny_run, run)
        if damaged.startswith("cycle_02"):
            (run / "cycle_02" / "average.safetensors").unlink()
        hostile(tiny_run / damaged, run / damaged, "kind", "evil")
        argv = [*TINY_ARGS, "--out", str(run), "--data-dir", str(DATA_DIR), "--resume"]
        with pytest.raises(UserError) as info:
            swamp_main(argv)
        message = str(info.value)
        assert "\n" not in message and "metadata kind" in message and hint in message and "--resume" in message


def test_plain_state_dicts_are_checked_and_pickles_refused_without_advice(tmp_path):
    torch.save({"w": torch.full((2,), float("nan"))}, tmp_path / "nan.pt")
    with pytest.raises(UserError, match="tensor w holds NaN"):
        load_plain_state_dict(tmp_path / "nan.pt", model_spec("mlp", 10), {"name": "mnist1d"})
    torch.save({"w": torch.zeros(1).expand(10**6)}, tmp_path / "view.pt")
    with pytest.raises(UserError, match="tensor w is sparse or a view larger"):
        load_plain_state_dict(tmp_path / "view.pt", model_spec("mlp", 10), {"name": "mnist1d"})
    torch.save({"w": torch.zeros(2), "code": _Payload()}, tmp_path / "code.pt")
    with pytest.raises(UserError) as info:
        load_plain_state_dict(tmp_path / "code.pt", model_spec("mlp", 10), {"name": "mnist1d"})
    message = str(info.value)
    assert "weights_only" not in message and "will likely succeed" not in message and "\n" not in message
    assert "GLOBAL" in message and "state_dict of tensors saved with torch.save" in message
    assert "safetensors checkpoint" in message


class _Payload:
    def __reduce__(self):
        return (os.getpid, ())


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _bomb(path: Path, spec: dict[str, Any], dataset: dict[str, Any]) -> Path:
    """A small file whose metadata asks for ``spec`` but which holds the tensors of a small version of it
    (same tensor names, so the first difference is a shape)."""
    small = {**spec, "kwargs": {k: (2 if k == "width" else 100 if k == "hidden" else v)
                                for k, v in spec["kwargs"].items()}}
    meta = {"format": "swamp-checkpoint/1", "kind": "average", "cycle": "0", "density": "1.0",
            "model": json.dumps(spec), "dataset": json.dumps(dataset), "config": "{}"}
    save_file(fresh_model(small).state_dict(), str(path), metadata=meta)
    return path


@pytest.mark.parametrize(("tool", "spec", "dataset"), [
    ("landscape.barrier", model_spec("wrn", 10, {"depth": 10, "width": 100_000}), {"name": "cifar10"}),
    ("landscape.barrier", model_spec("mlp", 10, {"hidden": 10**7}),
     {"name": "mnist1d", "num_samples": 5000, "seed": 42}),
    ("landscape.hessian", model_spec("mlp", 10, {"hidden": 10**7}),
     {"name": "mnist1d", "num_samples": 5000, "seed": 42}),
], ids=["wrn-width", "mlp-hidden-barrier", "mlp-hidden-hessian"])
def test_memory_bombs_are_refused_at_once_in_bounded_memory(tmp_path, tool, spec, dataset):
    path = _bomb(tmp_path / "bomb.safetensors", spec, dataset)
    assert path.stat().st_size < 2**21  # a few MB of file against petabytes of model
    argv = [str(path), str(path)] if tool == "landscape.barrier" else [str(path)]
    proc = subprocess.run([sys.executable, "-m", tool, *argv, "--no-progress", "--data-dir", str(DATA_DIR)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, preexec_fn=_limit_address_space,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "shape" in lines[0] and "bomb.safetensors" in lines[0]


def test_an_endless_data_set_is_refused_at_once(average, tmp_path):
    path = hostile(average, tmp_path / "endless.safetensors", "dataset.num_samples", 10**12)
    proc = subprocess.run([sys.executable, "-m", "landscape.hessian", str(path), "--data-dir", str(DATA_DIR)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, preexec_fn=_limit_address_space,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "dataset.num_samples" in proc.stderr
