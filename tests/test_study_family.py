"""``studies.grid --models/--rewinds``: a family of ordinary studies, one per (model, rewind point) cell,
resumable, with one pool of ``--jobs`` across cells and the submitit launcher, each cell readable as any study;
without the axes the study is unchanged."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DATA_DIR, study_files

from core.errors import UserError, run_cli
from studies import tables
from studies.grid import cli as training_study
from studies.grid.cli import MANIFEST, parse_study
from studies.grid.cli import main as study_main
from studies.grid.family import FAMILY_FORMAT, cell_name, check_same_family, family_plan
from studies.grid.manifest import FAMILY_MANIFEST
from studies.grid.plan import quick_plan, sub_config
from studies.report import study_report

REPO = Path(__file__).resolve().parent.parent
BASE = ["--quick", "--methods", "imp,swamp-n3", "--seeds", "0", "--cycles", "1", "--data-dir", str(DATA_DIR),
        "--no-progress"]
AXES = ["--models", "cnn1d,mlp", "--rewinds", "0,1"]
CELLS = ["cnn1d-r0", "cnn1d-r1", "mlp-r0", "mlp-r1"]
STUDY_KEYS = ["format", "preset", "settings", "seeds", "methods", "quick", "runs", "updated"]


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 models x 2 rewind points x (IMP, SWAMP N = 3), one seed, one cycle of one epoch, 2 sub-runs at once."""
    root = tmp_path_factory.mktemp("family") / "controls"
    assert study_main([*BASE, *AXES, "--jobs", "2", "--out", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same grid as the family's cell cnn1d-r0, as a single study without the axes, in this process."""
    root = tmp_path_factory.mktemp("single") / "study"
    assert study_main([*BASE, "--rewind-epochs", "0", "--out", str(root)]) == 0
    return root


def manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text())


def test_every_cell_is_an_ordinary_study_of_its_model_and_rewind_point(family):
    body = json.loads((family / FAMILY_MANIFEST).read_text())
    assert body["format"] == FAMILY_FORMAT and body["axes"] == {"models": ["cnn1d", "mlp"], "rewinds": [0, 1]}
    assert body["settings"] == {"cycles": 1, "epochs": 1}, "the axes' settings are the cells'"
    assert body["seeds"] == [0] and [m["name"] for m in body["methods"]] == ["imp", "swamp-n3"]
    assert [(c["name"], c["model"], c["rewind_epochs"], c["path"]) for c in body["cells"]] == \
        [(f"{m}-r{r}", m, r, f"cells/{m}-r{r}") for m in ("cnn1d", "mlp") for r in (0, 1)]
    for cell in body["cells"]:
        root = family / cell["path"]
        study = tables.read_manifest(root)
        assert list(study) == STUDY_KEYS and study["format"] == "swamp-study/1"
        assert study["settings"] == {"cycles": 1, "epochs": 1, "model": cell["model"],
                                     "rewind_epochs": cell["rewind_epochs"]}
        assert [(r["name"], r["status"], r["path"]) for r in study["runs"]] == \
            [("imp-s0", "done", "runs/imp-s0"), ("swamp-n3-s0", "done", "runs/swamp-n3-s0")]
        for run in study["runs"]:
            config = json.loads((root / run["path"] / "config.json").read_text())
            assert (config["model"], config["rewind_epochs"], config["particles"]) == \
                (cell["model"], cell["rewind_epochs"], run["particles"])
        report = study_report(root)
        assert "### Test accuracy (%) of the cycle's solution" in report and "SWAMP" in report
    tickets = {c: (family / "cells" / c / "runs" / "imp-s0" / "ticket.safetensors").read_bytes() for c in CELLS}
    assert len(set(tickets.values())) == 4, "each model and rewind point gives its own ticket"


def test_a_cell_trained_two_at_a_time_equals_the_single_study_byte_for_byte(family, single):
    assert study_files(family / "cells" / "cnn1d-r0") == study_files(single)
    study = manifest(single)
    assert list(study) == STUDY_KEYS, "without the axes study.json is as it was"
    assert study["settings"] == {"cycles": 1, "epochs": 1, "rewind_epochs": 0}
    assert sorted(p.name for p in single.iterdir()) == [".lock", "runs", "study.json"]


def test_rerunning_the_family_skips_every_finished_sub_run(family, capsys):
    seconds = {c: [r["seconds"] for r in manifest(family / "cells" / c)["runs"]] for c in CELLS}
    capsys.readouterr()
    assert study_main([*BASE, *AXES, "--jobs", "2", "--out", str(family)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{c}: skip {r}: finished" for c in CELLS for r in ("imp-s0", "swamp-n3-s0")] + \
        [f"family {family}: 8/8 sub-runs done"]
    assert {c: [r["seconds"] for r in manifest(family / "cells" / c)["runs"]] for c in CELLS} == seconds


def test_an_interrupted_family_resumes_where_it_stopped(family, tmp_path, monkeypatch, capsys):
    copy = Path(shutil.copytree(family, tmp_path / "copy"))
    lost = ["cnn1d-r1/runs/imp-s0", "mlp-r0/runs/swamp-n3-s0"]
    for path in lost:
        shutil.rmtree(copy / "cells" / path)
    real, calls = training_study.run_sub_run, []

    def interrupted(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second sub-run
        return real(*args, **kwargs)

    monkeypatch.setattr("studies.grid.runner.run_sub_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        study_main([*BASE, *AXES, "--out", str(copy)])
    assert calls == [copy / "cells" / p for p in lost], "every other sub-run was skipped"
    capsys.readouterr()
    assert study_main([str(copy), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"family {copy}: 4 cells, 8 sub-runs: 7 done, 1 pending"
    assert [line.split()[:2] for line in lines if "swamp-n3-s0  " in line][2] == ["swamp-n3-s0", "pending"]
    monkeypatch.setattr("studies.grid.runner.run_sub_run", real)
    assert study_main([*BASE, *AXES, "--out", str(copy)]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if " run " in line] == \
        ["mlp-r0: run  swamp-n3-s0 (0/1 cycles done)"]
    for cell in CELLS:
        assert study_files(copy / "cells" / cell) == study_files(family / "cells" / cell), cell


def test_status_of_a_family_reports_every_cell(family, capsys):
    capsys.readouterr()
    assert run_cli(study_main, [str(family), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"family {family}: 4 cells, 8 sub-runs: 8 done"
    assert [line for line in lines if line.startswith("study ")] == \
        [f"study {family / 'cells' / c}: 2 sub-runs: 2 done" for c in CELLS]
    assert sum(" done     1/1 cycles" in line for line in lines) == 8


def test_submitit_local_runs_the_cells_as_jobs_with_the_same_checkpoints(family, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs are new processes: one thread, as in this one
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    root = tmp_path / "jobs-family"
    argv = [*BASE, "--methods", "imp", "--models", "cnn1d,mlp", "--rewind-epochs", "0", "--launcher",
            "submitit-local", "--jobs", "2", "--out", str(root)]
    assert study_main([*argv, "--no-wait"]) == 0
    jobs = {c: manifest(root / "cells" / c)["runs"][0]["job"] for c in ("cnn1d-r0", "mlp-r0")}
    assert all(job["stderr"] == f"jobs/{job['id']}_0_log.err" for job in jobs.values()), "relative to the cell"
    capsys.readouterr()
    assert study_main([*argv]) == 0, "waits for the jobs, submits nothing twice"
    assert not [line for line in capsys.readouterr().out.splitlines() if " run " in line]
    for cell, job in jobs.items():
        assert len(list((root / "cells" / cell / "jobs").glob("*_submitted.pkl"))) == 1
        assert [(r["status"], r["job"]["id"]) for r in manifest(root / "cells" / cell)["runs"]] == [("done", job["id"])]
        ours = study_files(root / "cells" / cell)
        theirs = study_files(family / "cells" / cell, "runs/imp-s0")
        assert ours == theirs, cell


@pytest.mark.parametrize("args, message", [
    (["--models", "nope"], "--models: unknown model 'nope'; choose a zoo model"),
    (["--models", "cnn1d,cnn1d"], "--models lists 'cnn1d' twice"),
    (["--models", ","], "--models takes a comma-separated list"),
    (["--models", "pkg.mod:fn,pkg.mod:FN"], "--models pkg.mod:fn and pkg.mod:FN would share the cell directory "
                                            "pkg.mod_FN-r1"),
    (["--rewinds", "-1"], "--rewinds takes dense epochs (integers >= 0)"),
    (["--rewinds", "0,two"], "'two' is not one"),
    (["--rewinds", "1,01"], "--rewinds lists 1 twice"),
    (["--rewinds", "0,1", "--rewind-epochs", "2"], "--rewinds gives every cell its rewind point; leave out "
                                                   "--rewind-epochs 2"),
    (["--models", "mlp", "--prune-ratio", "1.5"], "cell mlp-r1: sub-run imp-s0: --prune-ratio must lie in (0, 1)"),
    (["--rewinds", "0", "--cycles", "1", "--methods", "swamp-plus"], "cell cnn1d-r0: method swamp-plus adds its "
                                                                     "particles at cycle 1"),
    (["--prune-ratio", "0"], "--prune-ratio must lie in (0, 1)"),
    # training.swamp's pre-flight check of every model, before the first cell is written or trained
    (["--models", "cnn1d,torchvision:resnet18"], "cell torchvision_resnet18-r1 of --models torchvision:resnet18: "
                                                 "--model torchvision:resnet18 does not fit mnist1d"),
    (["--models", "nosuchpkg.mod:f"], "cell nosuchpkg.mod_f-r1 of --models nosuchpkg.mod:f: model nosuchpkg.mod:f: "
                                      "cannot import nosuchpkg.mod"),
])
def test_bad_family_flags_are_one_line_and_write_nothing(tmp_path, args, message, capsys):
    out = tmp_path / "family"
    assert run_cli(study_main, ["--quick", "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not out.exists()


def test_a_family_is_continued_only_with_its_axes_and_plan_but_may_gain_seeds(family, single, capsys):
    before = (family / FAMILY_MANIFEST).read_bytes()
    refusals = [
        ([*BASE, "--models", "cnn1d", "--rewinds", "0,1", "--out", str(family)], "holds a family of studies with "
                                                                                 "other axes or settings"),
        ([*BASE, *AXES, "--epochs", "2", "--out", str(family)], "holds a family of studies with other axes"),
        ([*BASE, "--out", str(family)], f"{family} is a family of studies (family.json); continue it with the "
                                        "--models and --rewinds"),
        ([*BASE, *AXES, "--out", str(single)], f"{single} is a study (study.json), not a family of studies"),
    ]
    for argv, message in refusals:
        assert run_cli(study_main, argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert (family / FAMILY_MANIFEST).read_bytes() == before
    plan = quick_plan("mnist1d", (0,))
    check_same_family(family, family_plan(_restricted(plan, (0, 1)), ["cnn1d", "mlp"], [0, 1]))
    with pytest.raises(UserError, match=r"more seeds may be added after seeds 0\)"):
        check_same_family(family, family_plan(_restricted(plan, (1,)), ["cnn1d", "mlp"], [0, 1]))


def _restricted(plan, seeds):
    """``plan`` as the family's flags make it (IMP and SWAMP N = 3, one cycle) with ``seeds``."""
    return replace(plan, settings={**plan.settings, "cycles": 1}, seeds=seeds,
                   methods=tuple(m for m in plan.methods if m.name in ("imp", "swamp-n3")))


def test_cell_names_are_safe_path_components_and_the_documented_examples_parse(tmp_path):
    assert cell_name("torchvision:resnet18", 2) == "torchvision_resnet18-r2"
    assert cell_name("pkg.mod:fn", 0) == "pkg.mod_fn-r0" and cell_name("timm:hf/a", 1) == "timm_hf_a-r1"
    _, family, runtime = parse_study(["--out", str(tmp_path / "controls"), "--models", "cnn1d,mlp,transformer1d",
                                      "--methods", "imp,swamp-n4", "--seeds", "0,1,2", "--epochs", "8", "--cycles",
                                      "4", "--rewind-epochs", "2", "--prune-ratio", "0.5", "--jobs", "2"])
    assert [c.name for c in family.cells] == ["cnn1d-r2", "mlp-r2", "transformer1d-r2"]
    cell = family.cells[2]
    cfg = sub_config(cell.plan, cell.plan.methods[1], 1, tmp_path / "run", runtime)
    assert (cfg.model, cfg.rewind_epochs, cfg.prune_ratio, cfg.cycles, cfg.epochs, cfg.particles, cfg.seed) == \
        ("transformer1d", 2, 0.5, 4, 8, 4, 1)
    _, family, _ = parse_study(["--out", str(tmp_path / "rewind"), "--rewinds", "0,1,2,4,8", "--methods",
                                "imp,swamp-n4", "--cycles", "4", "--prune-ratio", "0.5"])  # as docs/cluster.md
    assert [c.name for c in family.cells] == [f"cnn1d-r{r}" for r in (0, 1, 2, 4, 8)]
    _, plan, _ = parse_study(["--out", str(tmp_path / "study"), "--quick", "--prune-ratio", "0.5"])
    assert plan.settings == {"cycles": 2, "epochs": 1, "rewind_epochs": 1, "prune_ratio": 0.5}
    assert not any(tmp_path.iterdir()), "parsing writes nothing"
