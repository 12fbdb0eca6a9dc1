"""Issue 24, items 4, 5, 9 and 10: every JSON file and flag is read by one bounded reader, no file or flag can
make a model constructor loop or allocate for long, and the tracebacks and silent exits of hostile factories,
datasets and flags are one ``error:`` line with exit status 2, before anything is written."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import DATA_DIR, PAIR_STUDY_ARGS, TINY_ARGS

from core.artifacts.jsonfile import MAX_INT_DIGITS, MAX_JSON_DEPTH, BadJSON, parse_json, read_json
from core.errors import UserError, run_cli
from core.models import meta_model, model_spec
from core.models.budget import ModelTooLarge
from landscape.tools.align import main as align_main
from landscape.tools.barrier import main as barrier_main
from studies.analyse import main as analyse_main
from studies.budget import main as budget_main
from studies.controls.cli import main as controls_main
from studies.controls.realisations import main as controls_realisations_main
from studies.grid.cli import main as study_main
from studies.grid.manifest import JobRecord
from studies.grid.submitit_launcher import job_states
from studies.realisations import main as realisations_main
from studies.report import main as report_main
from training.swamp import main as swamp_main

ROOT = Path(__file__).resolve().parent.parent
# Address space for a subprocess: a CPU-only tool on this (CUDA) torch build needs about 4 GiB.
ADDRESS_SPACE = 8 * 2**30

# Texts Python's json module alone turns into a traceback, a hang or a huge value.
HOSTILE = {
    "deep": "[" * 100_000 + "]" * 100_000,  # RecursionError
    "nested": "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),  # decodes, but deeper than any file of ours
    "huge-int": '{"runs": ' + "7" * 5000 + "}",  # ValueError, not JSONDecodeError
    "long-int": '{"runs": [], "seeds": [' + "9" * (MAX_INT_DIGITS + 1) + "]}",
    "not-utf8": b'{"runs": "\xff\xfe"}',
    "truncated": '{"runs": [',
}


def write(path: Path, text: str | bytes) -> None:
    path.unlink(missing_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def refused(capsys: pytest.CaptureFixture, main, argv: list[str], *says: str) -> str:
    """``main(argv)`` through run_cli: status 2 and one ``error:`` line (containing ``says``) on stderr."""
    capsys.readouterr()
    code = run_cli(main, argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    for text in says:
        assert text in err, err
    return err


# --- the reader ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_reader_turns_every_hostile_text_into_one_bad_json(tmp_path, name):
    with pytest.raises(BadJSON) as info:
        parse_json(HOSTILE[name])
    assert "\n" not in str(info.value)
    write(tmp_path / "x.json", HOSTILE[name])
    with pytest.raises(BadJSON):
        read_json(tmp_path / "x.json")


def test_the_reader_keeps_what_the_toolkit_writes():
    body = {"a": [1, -2, 2**63, 1.5e-300, None, True, "é"], "b": {"c": [[[]]]}, "t": 1733300000123456789}
    assert parse_json(json.dumps(body)) == body
    assert parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    assert parse_json("-" + "9" * MAX_INT_DIGITS) == -int("9" * MAX_INT_DIGITS)


def test_the_reader_refuses_special_files_and_large_ones_without_reading_them(tmp_path, monkeypatch):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(BadJSON, match="not a regular file"):
        read_json(fifo)  # nobody writes to it: a blocking open would hang here
    with pytest.raises(BadJSON, match="not a regular file"):
        read_json("/dev/zero")
    assert time.monotonic() - start < 5
    (tmp_path / "big.json").write_text("[" + "0," * 600 + "0]")
    monkeypatch.setattr("core.artifacts.jsonfile.MAX_JSON_BYTES", 1000)
    with pytest.raises(BadJSON, match="more than 1,000"):
        read_json(tmp_path / "big.json")


# --- every file of a study and a run -------------------------------------------------------------------

@pytest.fixture
def study(pair_study: Path) -> Path:
    return pair_study


def _family(study: Path, tmp_path: Path) -> Path:
    family = tmp_path / "family"
    shutil.copytree(study, family / "cells" / "c")
    (family / "family.json").write_text(json.dumps({"cells": [{"name": "c", "path": "cells/c"}]}))
    return family


# (file, command): every reader of a study's JSON files
SURFACES = {
    "study.json --status": ("study.json", lambda d: (study_main, [str(d), "--status"])),
    "study.json rerun": ("study.json", lambda d: (study_main, [*PAIR_STUDY_ARGS, "--out", str(d)])),
    "study.json report": ("study.json", lambda d: (report_main, [str(d)])),
    "study.json budget": ("study.json", lambda d: (budget_main, [str(d)])),
    "study.json analyse": ("study.json", lambda d: (analyse_main, [str(d), "--only", "hessian"])),
    "study.json realisations": ("study.json", lambda d: (realisations_main, [str(d), "--published",
                                                                              "x:0:0.1:0.1:0/0/2"])),
    "sub-run config.json report": ("runs/imp-s0/config.json", lambda d: (report_main, [str(d)])),
    "sub-run config.json controls": ("runs/imp-s0/config.json", lambda d: (controls_main, [str(d)])),
    "sub-run config.json --overwrite": ("runs/imp-s0/config.json", lambda d: (
        swamp_main, [*TINY_ARGS, "--out", str(d / "runs" / "imp-s0"), "--overwrite", "--data-dir", str(DATA_DIR)])),
    "sub-run config.json --resume": ("runs/imp-s0/config.json", lambda d: (
        swamp_main, ["--out", str(d / "runs" / "imp-s0"), "--resume", "--data-dir", str(DATA_DIR), "--no-progress"])),
    "settings.json analyse": ("analysis/settings.json", lambda d: (analyse_main, [str(d), "--only", "hessian"])),
    "metrics.json report": ("runs/imp-s0/cycle_00/metrics.json", lambda d: (controls_main, [str(d)])),
}


@pytest.mark.parametrize("surface", sorted(SURFACES))
@pytest.mark.parametrize("name", ["deep", "huge-int", "long-int", "not-utf8"])
def test_every_json_file_of_a_study_is_read_bounded(study, tmp_path, capsys, surface, name):
    relative, command = SURFACES[surface]
    root = tmp_path / "study"
    shutil.copytree(study, root)
    write(root / relative, HOSTILE[name])
    main, argv = command(root)
    refused(capsys, main, argv, relative.rsplit("/", 1)[-1])


@pytest.mark.parametrize("name", ["deep", "huge-int", "truncated"])
def test_family_json_is_read_bounded(study, tmp_path, capsys, name):
    family = _family(study, tmp_path)
    write(family / "family.json", HOSTILE[name])
    refused(capsys, study_main, [str(family), "--status"], "family.json")


def test_a_fifo_as_study_json_does_not_hang(study, tmp_path, capsys):
    root = tmp_path / "study"
    shutil.copytree(study, root)
    (root / "runs" / "imp-s0" / "config.json").unlink()
    os.mkfifo(root / "runs" / "imp-s0" / "config.json")
    start = time.monotonic()
    refused(capsys, report_main, [str(root)], "not a regular file")
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("name", ["deep", "huge-int", "not-utf8"])
def test_realisation_inputs_and_existing_json_targets_are_read_bounded(tiny_run, tmp_path, capsys, name):
    target = tmp_path / "controls.json"
    write(target, HOSTILE[name])
    refused(capsys, controls_realisations_main, [str(target), str(target)], "controls.json")
    ckpt = str(tiny_run / "cycle_01" / "average.safetensors")
    refused(capsys, barrier_main, [ckpt, ckpt, "--points", "2", "--json", str(target), "--data-dir", str(DATA_DIR),
                                   "--no-progress"], "--json", "is not an earlier JSON output")


@pytest.mark.parametrize("flag", ["--model-kwargs", "--dataset-kwargs"])
@pytest.mark.parametrize("name", ["deep", "huge-int", "nested"])
def test_json_flags_are_read_bounded(tmp_path, capsys, flag, name):
    out = tmp_path / "run"
    refused(capsys, swamp_main, [*TINY_ARGS, "--out", str(out), "--data-dir", str(DATA_DIR), flag, HOSTILE[name]],
            flag)
    assert not out.exists()


@pytest.mark.parametrize("name", ["deep", "huge-int"])
def test_slurm_arg_values_are_read_bounded(tmp_path, capsys, monkeypatch, name):
    pytest.importorskip("submitit")
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 0\n")  # a Slurm login node, as far as the check looks
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path), os.environ["PATH"]]))
    refused(capsys, study_main, [*PAIR_STUDY_ARGS, "--out", str(tmp_path / "s"), "--launcher", "slurm", "--no-wait",
                                 "--slurm-arg", "comment=" + str(HOSTILE[name])], "--slurm-arg")
    assert not (tmp_path / "s").exists()


def test_a_method_without_particles_is_one_line(study, tmp_path, capsys):
    root = tmp_path / "study"
    shutil.copytree(study, root)
    manifest = json.loads((root / "study.json").read_text())
    del manifest["methods"][0]["particles"]
    (root / "study.json").write_text(json.dumps(manifest))
    refused(capsys, report_main, [str(root)], "study.json is damaged", "'particles' is missing")


def test_report_cycles_that_no_sub_run_finished_are_refused(study, capsys):
    refused(capsys, report_main, [str(study), "--cycles", "99"], "--cycles 99 is not finished", "cycles 0, 1")


# --- models: a file decides nothing large --------------------------------------------------------------

BOMBS = [("timm:densenet121", {"block_config": [16777216]}, "block_config"),
         ("timm:mobilenetv3_large_100", {"depth_multiplier": 1e9}, "depth_multiplier"),
         ("timm:rexnet_100", {"depth_mult": 1e9}, "depth_mult"),
         ("timm:rexnet_100", {"depth_mult": 16384}, "depth_mult"),
         ("torchvision:resnet18", {"width_per_group": 10**7}, "width_per_group")]


@pytest.mark.parametrize(("name", "kwargs", "key"), BOMBS)
def test_every_number_of_a_library_model_is_bounded(name, kwargs, key):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    with pytest.raises(UserError, match=f"argument {key} must be"):
        model_spec(name, 10, kwargs)


def test_what_a_constructor_makes_of_bounded_numbers_is_bounded_too():
    pytest.importorskip("timm")
    start = time.monotonic()
    for kwargs in ({"block_config": [16384]}, {"block_config": [4000, 4000, 4000]}):
        with pytest.raises(ModelTooLarge, match="more than 8,192 modules"):
            meta_model(model_spec("timm:densenet121", 10, kwargs))
    assert time.monotonic() - start < 120
    assert sum(1 for _ in meta_model(model_spec("timm:densenet121", 10)).modules()) < 1000  # the real one builds


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def test_a_checkpoint_or_config_asking_for_a_huge_timm_model_is_one_line_in_bounded_memory(tiny_run, tmp_path):
    pytest.importorskip("timm")
    from test_hostile_checkpoints import hostile

    ckpt = hostile(tiny_run / "cycle_01" / "average.safetensors", tmp_path / "bomb.safetensors", "model",
                   {"name": "timm:densenet121", "kwargs": {"num_classes": 10, "block_config": [16384]}})
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "model": "timm:rexnet_100",
                                                 "model_kwargs": json.dumps({"depth_mult": 1e9})}))
    before = sorted(p.name for p in run.rglob("*"))
    for argv in (["landscape.barrier", str(ckpt), str(ckpt), "--points", "2"],
                 ["training.swamp", "--out", str(run), "--resume"]):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", *argv, "--data-dir", str(DATA_DIR), "--no-progress"],
                              capture_output=True, text=True, timeout=180, cwd=ROOT, preexec_fn=_limits,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), \
            proc.stderr
        assert "modules" in proc.stderr or "depth_mult" in proc.stderr, proc.stderr
        assert time.monotonic() - start < 120
    assert sorted(p.name for p in run.rglob("*")) == before


# --- factories and datasets of the user's code ---------------------------------------------------------

USER_CODE = """
    import sys
    import torch
    from torch import nn

    def meta_model(num_classes):
        with torch.device("meta"):
            return nn.Linear(40, num_classes)

    def oom_model(num_classes):
        raise MemoryError()

    def exit_model(num_classes):
        sys.exit(0)

    class WithEmpty(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.fc, self.empty = nn.Linear(40, num_classes), nn.Linear(0, 3)  # width 0: a density of 0/0

        def forward(self, x):
            return self.fc(x)

    class Data:
        num_classes = 3

        def __init__(self, length=10, broken=False):
            self.length, self.broken = length, broken

        def __len__(self):
            return self.length

        def __getitem__(self, i):
            if self.broken:
                raise RuntimeError("the disk went away")
            return torch.zeros(40), i % 3

    def huge():
        return Data(10**15), Data()

    def negative():
        return Data(-1), Data()

    def broken():
        return Data(broken=True), Data()

    def exit_data():
        sys.exit(0)
"""


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "hostile_code.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("hostile_code", None)


@pytest.mark.parametrize(("flags", "says"), [
    (["--model", "hostile_code:meta_model"], "built on the meta device"),
    (["--model", "hostile_code:oom_model"], "does not fit in memory"),
    (["--model", "hostile_code:exit_model"], "its factory exited (SystemExit(0))"),
    (["--model", "mlp", "--model-kwargs", '{"hidden": 0}'], "parameter 1.weight has no elements"),
    (["--model", "hostile_code:WithEmpty"], "parameter empty.weight has no elements"),
    (["--dataset", "hostile_code:huge", "--model", "mlp"], "has 1,000,000,000,000,000 samples"),
    (["--dataset", "hostile_code:negative", "--model", "mlp"], "len() of the train dataset failed (ValueError"),
    (["--dataset", "hostile_code:broken", "--model", "mlp"], "reading train sample 0 failed (RuntimeError: the disk"),
    (["--dataset", "hostile_code:exit_data", "--model", "mlp"], "its factory exited (SystemExit(0))"),
])
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_hostile_factories_and_datasets_are_one_line_before_anything_is_written(user_code, capsys, flags, says):
    data = [] if "--dataset" in flags else ["--data-dir", str(DATA_DIR)]
    refused(capsys, swamp_main, [*TINY_ARGS, "--out", "run", *data, *flags], says)
    assert not (user_code / "run").exists()


# --- item 10 --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("published", "says"), [
    ("x:1:1e308:1e308:0/0/2", "is no difference of two average_test_acc values"),
    ("x:1:101:1:0/0/2", "is no difference"),
    ("x:1:0.5:0.1:0/0/1" + "0" * 400, "2 to 1,000,000 seeds"),
    ("x:-1:0.5:0.1:0/0/2", "cycle -1 is negative"),
])
def test_published_effects_must_be_differences_of_the_column(study, capsys, published, says):
    refused(capsys, realisations_main, [str(study), "--published", published], says)


def test_a_job_stamped_in_the_future_is_not_running_for_ever(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "sacct").write_text("#!/bin/sh\necho 'JobID|State|NodeList'\n")  # Slurm knows no such job
    (bin_ / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_), os.environ["PATH"]]))
    (tmp_path / "jobs").mkdir()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    future = JobRecord("slurm", "4242", "2999-01-01T00:00:00Z", "jobs/a.out", "jobs/a.err")
    young = JobRecord("slurm", "4243", now, "jobs/b.out", "jobs/b.err")
    states = job_states(tmp_path, [future, young])
    assert states == {"4242": None, "4243": "UNKNOWN"}


def test_align_refuses_a_data_dir_that_is_a_file(tiny_run, tmp_path, capsys):
    ckpt = str(tiny_run / "cycle_01" / "average.safetensors")
    (tmp_path / "file").write_text("x")
    refused(capsys, align_main, [ckpt, ckpt, "--method", "activations", "--data-dir", str(tmp_path / "file"),
                                 "--out", str(tmp_path / "aligned.safetensors")], "--data-dir", "is not a directory")
    assert not (tmp_path / "aligned.safetensors").exists()


def test_controls_refuse_a_bad_json_before_any_compute(study, capsys, monkeypatch):
    def no_compute(*args, **kwargs):
        raise AssertionError("measured before the --json check")

    monkeypatch.setattr("studies.controls.cli.measure", no_compute)
    refused(capsys, controls_main, [str(study), "--json", ""], "--json")
    refused(capsys, controls_main, [str(study), "--json", str(study / "study.json")], "--json")
