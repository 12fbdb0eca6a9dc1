"""Every bad flag or tampered run state is one ``error:`` line and exit status 2, refused before anything
is written (CLI flags of training and landscape, a run's config.json and resume state, study settings)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from core.averaging import RunningAverage
from core.errors import UserError, run_cli
from landscape.spectrum import lanczos_spectrum
from landscape.tools import barrier, hessian, subspace
from landscape.tools.hessian import HessianOptions
from studies import analyse as analysis
from studies import budget as study_budget
from studies import report as study_report
from studies.grid import cli as training_study
from training import imp, oneshot, swamp, transplant
from training.resume import load_train_state, save_train_state
from training.train import TrainState

# A study whose sub-runs have not finished a cycle yet (their directories do not exist).
FAKE_METHODS = [training_study.Method("imp", swa=False), training_study.Method("swamp-n3", 3)]
FAKE_MANIFEST = {"format": training_study.FORMAT, "preset": "mnist1d", "settings": {}, "seeds": [0], "quick": True,
                 "methods": [asdict(m) for m in FAKE_METHODS],
                 "runs": [asdict(r) for r in training_study.sub_runs(training_study.quick_plan("mnist1d", (0,)))
                          if r.method in ("imp", "swamp-n3")]}


def tree(root: Path) -> dict[str, str]:
    """Every file (by content hash) and folder under ``root``: what "nothing written" compares."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def one_error_line(capsys: pytest.CaptureFixture, *parts: str) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    for part in parts:
        assert part in err, err
    return err


@pytest.fixture(scope="module")
def fake_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study directory with a manifest and no sub-run: enough for flag parsing and the reports."""
    root = tmp_path_factory.mktemp("fake") / "study"
    root.mkdir()
    (root / training_study.MANIFEST).write_text(json.dumps(FAKE_MANIFEST))
    return root


# --- 8: tampered run state on --resume ---------------------------------------------------------------


@pytest.fixture(scope="module")
def run_copy(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("tampered") / "run"
    shutil.copytree(tiny_run, copy)
    return copy


@pytest.mark.parametrize("body, what", [
    ("[]", "a JSON object is expected, not list"),
    ('"x"', "a JSON object is expected, not str"),
    ("null", "a JSON object is expected, not NoneType"),
    ("{not json", "unreadable"),
    ({"particles": "two"}, "`particles` must be an integer, not 'two'"),
    ({"swa": "yes"}, "`swa` must be true or false"),
    ({"dataset": "mnist2d"}, "unknown dataset 'mnist2d'"),
    ({"particles": -3}, "--particles must be at least 1"),
])
def test_tampered_config_json_is_one_line_naming_the_file(run_copy, body, what, capsys):
    config = run_copy / "config.json"
    original = config.read_text()
    try:
        config.write_text(json.dumps({**json.loads(original), **body}) if isinstance(body, dict) else body)
        before = tree(run_copy)
        assert run_cli(swamp.main, ["--out", str(run_copy), "--resume", "--no-progress"]) == 2
        one_error_line(capsys, str(config), what, "--overwrite")
        assert tree(run_copy) == before
    finally:
        config.write_text(original)


def _state_file(path: Path) -> Path:
    """A genuine resume state of a two-weight model after one SWA epoch."""
    w = {"w": torch.ones(2), "b": torch.zeros(1)}
    save_train_state(path, TrainState(1, w, {"w": torch.ones(2)}, RunningAverage(w, 1), torch.Generator().get_state()))
    return path


def _tamper(path: Path, drop_meta: str | None = None, meta: dict | None = None, drop: str | None = None) -> None:
    with safe_open(str(path), framework="pt") as fh:
        metadata = {**fh.metadata(), **(meta or {})}
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if not (drop and k.startswith(drop))}
    metadata.pop(drop_meta, None)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("tamper, what", [
    ({"drop_meta": "swa_count"}, "no integer 'swa_count'"),
    ({"meta": {"epoch": "two"}}, "no integer 'epoch'"),
    ({"meta": {"epoch": "-1"}}, "no integer 'epoch'"),
    ({"drop": "model."}, "no model weights"),
    ({"drop": "rng"}, "no random-generator state"),
    ({"drop": "swa."}, "no SWA average"),
])
def test_tampered_resume_state_is_a_user_error(tmp_path, tamper, what):
    path = _state_file(tmp_path / "unit.safetensors")
    assert load_train_state(path, "cpu").epoch == 1
    _tamper(path, **tamper)
    with pytest.raises(UserError, match="delete it to restart that unit") as err:
        load_train_state(path, "cpu")
    assert what in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_resume_stops_at_a_tampered_resume_state(run_copy, capsys):
    work = run_copy.parent / "resume-state"
    shutil.copytree(run_copy, work)
    shutil.rmtree(work / "cycle_02")
    state = _state_file(work / ".resume" / "cycle_02_particle_00.safetensors")
    _tamper(state, drop_meta="swa_count")
    assert run_cli(swamp.main, ["--out", str(work), "--resume", "--no-progress"]) == 2
    one_error_line(capsys, str(state), "delete it to restart that unit")


def test_resume_state_of_another_model_is_refused_before_training(run_copy, tmp_path, capsys):
    work = run_copy.parent / "foreign-state"
    shutil.copytree(run_copy, work)
    shutil.rmtree(work / "cycle_02")
    state = _state_file(work / ".resume" / "cycle_02_particle_00.safetensors")  # complete, but not a cnn1d
    assert run_cli(swamp.main, ["--out", str(work), "--resume", "--no-progress"]) == 2
    one_error_line(capsys, str(state), "its weights are not the run's model")
    path = _state_file(tmp_path / "unit.safetensors")
    template = {"w": torch.ones(3), "b": torch.zeros(1)}
    with pytest.raises(UserError, match=r"weight w is \(2,\) torch.float32, the model's is \(3,\)"):
        load_train_state(path, "cpu", template)
    assert load_train_state(path, "cpu", {"w": torch.ones(2), "b": torch.zeros(1)}).epoch == 1


# --- 9: studies.analyse settings ------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--points", "abc"], "--points must be an integer, not 'abc'"),
    (["--bn-recal", "nan"], "--bn-recal must be an integer"),
    (["--seed", "abc"], "--seed must be an integer"),
    (["--points", "0"], "--points must be an integer >= 2"),
    (["--bn-recal", "-1"], "--bn-recal must be an integer >= 0"),
    (["--hull-samples", "0"], "--hull-samples"),
    (["--plane-resolution", "1"], "--plane-resolution"),
    (["--hessian-probes", "0"], "--hessian-probes"),
    (["--hessian-samples", "0"], "--hessian-samples"),
    (["--splits", "train,valid"], "--splits"),
    (["--splits", ""], "--splits"),
    (["--only", "pairs,pairs"], "--only"),
    (["--jobs", "0"], "--jobs"),
    (["--device", "gpu"], "unknown device"),
])
def test_bad_analysis_flags_are_refused_before_anything_is_written(fake_study, args, message, capsys):
    before = tree(fake_study)
    assert run_cli(analysis.main, [str(fake_study), *args]) == 2
    one_error_line(capsys, message)
    assert tree(fake_study) == before, "a refused analysis writes nothing (no settings.json)"


def test_analyse_study_validates_settings_before_recording_them(fake_study):
    before = tree(fake_study)
    with pytest.raises(UserError, match="--points"):
        analysis.analyse_study(fake_study, analysis.AnalysisSettings(points=0))
    with pytest.raises(UserError, match="--splits"):
        analysis.analyse_study(fake_study, analysis.AnalysisSettings(splits=()))
    assert tree(fake_study) == before


@pytest.mark.parametrize("body", ["{broken", "[1, 2]", '"settings"'])
def test_corrupt_analysis_settings_are_one_line(fake_study, tmp_path, body, capsys):
    root = tmp_path / "study"
    shutil.copytree(fake_study, root)
    (root / "analysis").mkdir()
    (root / "analysis" / "settings.json").write_text(body)
    assert run_cli(analysis.main, [str(root)]) == 2
    one_error_line(capsys, "settings.json", "delete")


# --- 10: studies.grid.cli flags ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--seeds", "a,b"], "--seeds takes integers"),
    (["--seeds", ""], "--seeds takes a comma-separated list"),
    (["--seeds", "0,,1"], "--seeds takes a comma-separated list"),
    (["--seeds", "1,1"], "--seeds lists '1' twice"),
    (["--seeds", "-1"], "--seeds must lie in [0,"),
    (["--methods", ""], "--methods takes a comma-separated list"),
    (["--methods", "imp,imp"], "--methods lists 'imp' twice"),
    (["--methods", "imp,nope"], "unknown method 'nope' in --methods; choose from imp, swa,"),
    (["--cycles", "-1"], "--cycles must be at least 1"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--rewind-epochs", "-2"], "--rewind-epochs must be >= 0"),
    (["--quick", "--cycles", "1"], "swamp-plus adds its particles at cycle 1"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--data-dir", __file__], "is a file, not a directory"),
])
def test_bad_study_flags_are_one_upfront_error(tmp_path, args, message, capsys):
    out = tmp_path / "study"
    assert run_cli(training_study.main, ["--quick", "--out", str(out), "--no-progress", *args]) == 2
    one_error_line(capsys, message)
    assert not out.exists(), "a refused study writes nothing"


# --- 11: training.swamp model, schedule and data-dir checks ----------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--model", "mlp", "--model-kwargs", '{"hidden": -5}'], "--model mlp --model-kwargs"),
    (["--model-kwargs", '{"hidden": -5}'], "cannot be built"),
    (["--model", "wrn10x2"], "--model wrn10x2 does not fit mnist1d"),
    (["--model", "mlp", "--model-kwargs", '{"hidden": 100000000}'], "choose a smaller model"),
    (["--particles-from-cycle", "99", "--cycles", "3"], "--particles-from-cycle must be below --cycles (3)"),
    (["--particles-from-cycle", "3", "--cycles", "3"], "--particles-from-cycle must be below --cycles (3)"),
    (["--data-dir", __file__], "is a file, not a directory"),
    (["--data-dir", f"{__file__}/data"], "cannot be created or written"),
    (["--seed", "-1"], "--seed must lie in [0,"),
    (["--init-seed", "-1"], "--init-seed must lie in [0,"),
    (["--init-seed", str(2**32)], "--init-seed must lie in [0,"),
    (["--loss", "mse"], "--loss mse needs real-valued targets"),
    (["--optimizer", "adam", "--engine", "vectorized"], "--engine vectorized trains with SGD, cross-entropy and a "
                                                        "built-in schedule only, not --optimizer adam"),
    (["--label-smoothing", "0.1", "--engine", "distributed"], "--engine distributed trains with SGD"),
    (["--optimizer", "adamw", "--optimizer-kwargs", '{"weight_decay": 0.1}'], "give weight_decay with --weight-decay"),
    (["--optimizer", "sgd", "--optimizer-kwargs", '{"betas": [0.9, 0.99]}'], "--optimizer sgd takes dampening"),
    (["--optimizer", "tests.nowhere:make"], "optimizer tests.nowhere:make: cannot import"),
    (["--momentum", "0", "--optimizer-kwargs", '{"nesterov": true}'], "Nesterov momentum requires a momentum"),
    (["--schedule", "linear"], "--schedule must be one of cosine, constant, step or PACKAGE.MODULE:CALLABLE"),
    (["--schedule", "step"], "--schedule step needs every, the epochs between two steps"),
    (["--schedule", "step", "--schedule-kwargs", '{"every": 1.5}'], "every must be an integer >= 1, not 1.5"),
    (["--schedule", "step", "--schedule-kwargs", '{"every": 2, "factor": 0}'], "factor must be a positive number"),
    (["--schedule", "step", "--schedule-kwargs", '{"every": 2, "gamma": 0.1}'], "takes every and factor, not 'gamma'"),
    (["--schedule-kwargs", '{"every": 2}'], "--schedule cosine takes none"),
    (["--schedule", "step", "--schedule-kwargs", "[2]"], "--schedule-kwargs must be a JSON object"),
    (["--warmup-epochs", "-1"], "--warmup-epochs"),
    (["--warmup-epochs", "13"], "--warmup-epochs 13 exceeds the epochs the schedule shapes (12:"),
    (["--schedule", "tests.nowhere:fn"], "schedule tests.nowhere:fn: cannot import"),
    (["--schedule", "tests.nowhere:fn", "--warmup-epochs", "1"], "warms up in its own code"),
    (["--schedule", "tests.nowhere:fn", "--engine", "vectorized"], "not --schedule tests.nowhere:fn"),
])
def test_bad_run_is_refused_before_its_directory_is_written(tmp_path, args, message, capsys):
    extra = [] if "--data-dir" in args else ["--data-dir", str(DATA_DIR)]
    out = tmp_path / "run"
    assert run_cli(swamp.main, ["--out", str(out), "--no-progress", *extra, *args]) == 2
    one_error_line(capsys, message)
    assert not out.exists()


# --- 12: Lanczos steps ----------------------------------------------------------------------------------


def test_lanczos_steps_are_capped_at_the_dimension_and_absurd_ones_refused(tiny_run, capsys):
    diagonal = torch.arange(1.0, 6.0)
    spectrum = lanczos_spectrum(lambda q: q * diagonal, 5, 100_000, 2, torch.Generator().manual_seed(0))
    assert spectrum.steps == 5 and spectrum.matvecs == 10
    assert spectrum.top_eigenvalue == pytest.approx(5.0, rel=1e-4)
    HessianOptions(lanczos_steps=HessianOptions.MAX_LANCZOS_STEPS).validate()
    with pytest.raises(UserError, match="--lanczos-steps must be at most 10,000"):
        HessianOptions(lanczos_steps=100_000).validate()
    ckpt = tiny_run / "cycle_00" / "average.safetensors"
    assert hessian.main([str(ckpt), "--top-eigen", "--lanczos-steps", "100000"]) == 2
    one_error_line(capsys, "--lanczos-steps")
    for tol in ("-0.1", "nan", "inf", "1e400", "abc"):
        assert hessian.main([str(ckpt), "--top-eigen", "--eigen-tol", tol]) == 2
        one_error_line(capsys, "--eigen-tol")


def test_method_auto_without_a_target_is_one_line(tiny_run, capsys):
    with pytest.raises(UserError, match="--method auto chooses the estimator for a target: give --target-rse"):
        HessianOptions(method="auto").validate()
    HessianOptions(method="auto", target_rse=0.02).validate()
    ckpt = tiny_run / "cycle_00" / "average.safetensors"
    assert hessian.main([str(ckpt), "--method", "auto", "--probes", "4"]) == 2
    one_error_line(capsys, "--method auto chooses the estimator for a target: give --target-rse R")


# --- 15: reports of a study without a finished cycle; argparse errors of every CLI -----------------------


@pytest.mark.parametrize("main", [study_report.main, study_budget.main])
def test_reports_of_a_study_without_finished_cycles_are_one_line(fake_study, main, capsys):
    assert run_cli(main, [str(fake_study)]) == 2
    one_error_line(capsys, "has finished a cycle yet")


def _cli(module):
    return module.main if module is hessian else (lambda argv: run_cli(module.main, argv))


CLIS = {"training.swamp": (swamp, []), "training.imp": (imp, []), "training.oneshot": (oneshot, []),
        "training.transplant": (transplant, ["--masks-from", "x"]), "studies.grid": (training_study, ["--out", "x"]),
        "landscape.barrier": (barrier, []), "landscape.subspace": (subspace, []), "landscape.hessian": (hessian, []),
        "studies.analyse": (analysis, ["{study}"]), "studies.report": (study_report, ["{study}"]),
        "studies.budget": (study_budget, ["{study}"])}
UNPARSABLE = {"training.swamp": ["--epochs", "abc"], "training.imp": ["--epochs", "abc"],
              "training.oneshot": ["--epochs", "abc"],
              "training.transplant": ["--epochs", "abc"],
              "studies.grid": ["--epochs", "abc"], "landscape.barrier": ["--points", "abc"],
              "landscape.subspace": ["--samples", "abc"], "landscape.hessian": ["--probes", "abc"],
              "studies.analyse": ["--jobs", "abc"], "studies.report": ["--cycles", "a,b"],
              "studies.budget": ["--cycles", "a,b"]}


@pytest.mark.parametrize("name", sorted(CLIS))
@pytest.mark.parametrize("kind", ["unparsable", "unknown flag", "missing value"])
def test_every_cli_reports_argument_errors_in_one_line(name, kind, fake_study, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    module, base = CLIS[name]
    bad = {"unparsable": UNPARSABLE[name], "unknown flag": ["--no-such-flag"],
           "missing value": [UNPARSABLE[name][0]]}[kind]
    argv = [a.format(study=fake_study) for a in base] + bad
    assert _cli(module)(argv) == 2
    one_error_line(capsys, f"python -m {name}: ", "(see --help)")
    assert not any(tmp_path.iterdir())


# --- property tests: any flag values are a valid plan or one UserError line, and nothing is written ------

VALUES = st.one_of(st.integers().map(str), st.integers(-3, 3).map(str), st.floats().map(str),
                   st.sampled_from(["nan", "inf", "-inf", "", " ", ",", "0,0", "1,2", "0,-1"]),
                   st.text(max_size=6),
                   st.lists(st.integers(-2, 5).map(str), max_size=3).map(",".join))
NAMES = st.lists(st.sampled_from(["imp", "swa", "swamp-n3", "particles", "swamp-plus", "nope", ""]),
                 max_size=3).map(",".join)
STUDY_FLAGS = ["--seeds", "--methods", "--epochs", "--cycles", "--rewind-epochs", "--jobs", "--preset", "--device",
               "--data-dir"]
STUDY_SWITCHES = ["--quick", "--download", "--progress", "--no-progress"]


def _check_study_argv(root: Path, argv: list[str]) -> None:
    before = tree(root.parent)
    try:
        args, plan, runtime = training_study.parse_study(["--out", str(root), *argv])
    except UserError as err:
        assert "\n" not in str(err) and str(err)
    else:
        assert plan.seeds and plan.methods and args.jobs >= 1
        assert all(0 <= s < 2**32 for s in plan.seeds) and len(set(plan.seeds)) == len(plan.seeds)
        assert all(plan.settings.get(k, 1) >= 1 for k in ("epochs", "cycles"))
    assert tree(root.parent) == before


@settings(max_examples=150, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from(STUDY_FLAGS), st.one_of(VALUES, NAMES)), max_size=4),
       switches=st.lists(st.sampled_from(STUDY_SWITCHES), max_size=2))
def test_any_study_flags_are_a_valid_plan_or_one_clean_error(fake_study, pairs, switches):
    _check_study_argv(fake_study, [*switches, *(token for pair in pairs for token in pair)])


ANALYSIS_FLAGS = ["--points", "--splits", "--bn-recal", "--hull-samples", "--plane-resolution", "--hessian-probes",
                  "--hessian-samples", "--seed", "--jobs", "--only", "--device"]
SPLIT_LISTS = st.lists(st.sampled_from(["train", "test", "valid", ""]), max_size=3).map(",".join)


@settings(max_examples=150, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from(ANALYSIS_FLAGS), st.one_of(VALUES, SPLIT_LISTS)), max_size=4))
def test_any_analysis_flags_are_valid_settings_or_one_clean_error(fake_study, pairs):
    before = tree(fake_study)
    try:
        args, chosen, kinds = analysis.parse_analysis([str(fake_study), *(token for pair in pairs for token in pair)])
    except UserError as err:
        assert "\n" not in str(err) and str(err)
    else:
        assert kinds and set(kinds) <= set(analysis.KINDS) and args.jobs >= 1
        if chosen is not None:
            chosen.validate()
            assert chosen.points >= 2 and chosen.splits and set(chosen.splits) <= {"train", "test"}
    assert tree(fake_study) == before
