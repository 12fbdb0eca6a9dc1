"""Generated study-layer files: every JSON type in every field of ``study.json`` (methods, runs and their job
records), ``family.json`` and ``analysis/settings.json``, deep nesting and huge integers included. Each
command that reads them gives a result or one ``error:`` line and exit 2 -- never a traceback -- and
changes no file but its own outputs (a tree digest before and after)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PAIR_STUDY_ARGS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_data_loss import tree_digest

from core.errors import run_cli
from studies.analyse import main as analyse_main
from studies.grid.cli import main as study_main
from studies.report import main as report_main

RAW = {"@deep@": "[" * 50_000 + "]" * 50_000, "@huge@": "8" * 5000, "@long@": "-" + "9" * 60}
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | _TEXT
            | st.sampled_from([0, 1, 2, 3, -1, 10**12, "imp", "swamp-n3", "swamp", "runs/imp-s0", "done", *RAW]))
JSON_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(_TEXT | st.sampled_from(["name", "particles", "role", "path"]), inner,
                                             max_size=3), max_leaves=6)
DELETE = "@delete@"
VALUES = JSON_VALUES | st.just(DELETE)

STUDY_FIELDS = [(), ("format",), ("preset",), ("settings",), ("settings", "cycles"), ("seeds",), ("seeds", 0),
                ("quick",), ("methods",), ("methods", 0), ("methods", 0, "name"), ("methods", 0, "particles"),
                ("methods", 0, "role"), ("methods", 1, "particles"), ("methods", 1, "swa"), ("runs",), ("runs", 0),
                ("runs", 0, "method"), ("runs", 0, "seed"), ("runs", 0, "status"), ("runs", 0, "seconds"),
                ("runs", 1, "error"), ("runs", 1, "particles"), ("updated",)]
JOB_FIELDS = ["launcher", "id", "submitted", "stdout", "stderr"]
JOB_VALUES = VALUES | st.sampled_from(["slurm", "submitit-local", "processes", "4242_0", "2999-01-01T00:00:00Z",
                                       "1970-01-01T00:00:00Z", "jobs/4242_0_0_log.err", "jobs/none.err", ""])
FAMILY_FIELDS = [(), ("cells",), ("cells", 0), ("cells", 0, "name"), ("cells", 0, "path"), ("cells", 0, "model"),
                 ("format",), ("axes",), ("seeds",), ("methods",)]
SETTINGS_FIELDS = [(), ("points",), ("probes",), ("hessian_samples",), ("quick",)]


def with_value(body: Any, path: tuple, value: Any) -> str:
    """``body`` as JSON text with the field at ``path`` set to ``value`` (deleted for DELETE; a RAW name
    becomes its text: nesting or an integer no Python value of json.dumps can be)."""
    body = json.loads(json.dumps(body))
    if not path:
        body = value
    else:
        parent = body
        for key in path[:-1]:
            parent = parent[key] if isinstance(parent, dict) or (isinstance(parent, list) and
                                                                  key < len(parent)) else None
            if not isinstance(parent, (dict, list)):
                break
        else:
            key = path[-1]
            if value == DELETE:
                if isinstance(parent, dict):
                    parent.pop(key, None)
                elif key < len(parent):
                    del parent[key]
            elif isinstance(parent, dict) or key < len(parent):
                parent[key] = value
    text = json.dumps(body)
    for name, raw in RAW.items():
        text = text.replace(json.dumps(name), raw)
    return text


def outcome(capsys: pytest.CaptureFixture, main, argv: list[str]) -> None:
    """``main(argv)`` gives a result (0) or one ``error:`` line and status 2."""
    capsys.readouterr()
    code = run_cli(main, argv)
    err = capsys.readouterr().err
    if code != 0:
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (code, err)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _copy(study: Path, where: Path) -> Path:
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(study, where)
    return where


FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(path=st.sampled_from(STUDY_FIELDS), value=VALUES)
@example(path=("seeds",), value=1)  # once a traceback (len of an int)
@example(path=("seeds",), value={"\n": None})  # once a two-line message
def test_any_study_json_gives_a_result_or_one_line(pair_study, scratch, capsys, path, value):
    root = _copy(pair_study, scratch / "study")
    (root / "study.json").write_text(with_value(json.loads((pair_study / "study.json").read_text()), path, value))
    before = tree_digest(root)
    outcome(capsys, study_main, [str(root), "--status"])
    outcome(capsys, report_main, [str(root)])
    assert tree_digest(root) == before
    outcome(capsys, study_main, [*PAIR_STUDY_ARGS, "--out", str(root)])
    after = tree_digest(root)
    assert {k: v for k, v in after.items() if k != "study.json"} == {k: v for k, v in before.items()
                                                                     if k != "study.json"}


@pytest.fixture
def no_slurm_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``sacct`` that knows no job, on the PATH."""
    (tmp_path / "sacct").write_text("#!/bin/sh\necho 'JobID|State|NodeList'\n")
    (tmp_path / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path), os.environ["PATH"]]))


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(JOB_FIELDS), JOB_VALUES, max_size=5), status=_SCALARS)
def test_any_job_record_gives_a_status_or_one_line(pair_study, scratch, capsys, no_slurm_jobs, fields, status):
    pytest.importorskip("submitit")
    root = _copy(pair_study, scratch / "jobs")
    (root / "jobs").mkdir()
    (root / "jobs" / "4242_0_0_log.err").write_text("slurmstepd: error: oom_kill\n")
    manifest = json.loads((pair_study / "study.json").read_text())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    job = {"launcher": "slurm", "id": "4242_0", "submitted": now, "stdout": "jobs/a.out",
           "stderr": "jobs/4242_0_0_log.err", **fields}
    text = with_value(with_value(manifest, ("runs", 0, "job"), {k: v for k, v in job.items() if v != DELETE}),
                      ("runs", 0, "status"), status)
    (root / "study.json").write_text(text)
    (root / "runs" / "imp-s0" / "cycle_01" / "metrics.json").unlink()  # unfinished: its job is asked about
    before = tree_digest(root)
    outcome(capsys, study_main, [str(root), "--status"])
    assert tree_digest(root) == before


@FUZZ
@given(path=st.sampled_from(FAMILY_FIELDS), value=VALUES)
def test_any_family_json_gives_a_status_or_one_line(pair_study, scratch, capsys, path, value):
    family = scratch / "family"
    _copy(pair_study, family / "cells" / "c")
    body = {"format": "swamp-family/1", "axes": {"models": ["cnn1d"], "rewinds": [0]},
            **{k: v for k, v in json.loads((pair_study / "study.json").read_text()).items() if k != "runs"},
            "cells": [{"name": "c", "model": "cnn1d", "rewind_epochs": 0, "path": "cells/c"}]}
    (family / "family.json").write_text(with_value(body, path, value))
    before = tree_digest(family)
    outcome(capsys, study_main, [str(family), "--status"])
    outcome(capsys, report_main, [str(family)])
    assert tree_digest(family) == before


@FUZZ
@given(path=st.sampled_from(SETTINGS_FIELDS), value=VALUES)
def test_any_analysis_settings_give_a_result_or_one_line(pair_study, scratch, capsys, path, value):
    root = _copy(pair_study, scratch / "settings")
    (root / "analysis" / "settings.json").write_text(with_value({"points": 3, "probes": 2}, path, value))
    before = tree_digest(root)
    outcome(capsys, analyse_main, [str(root), "--only", "hessian", "--no-progress"])
    after = tree_digest(root)
    after.pop("analysis/.lock", None)  # the analysis's own lock (one analysing process per study)
    assert after == before  # settings never match these: the analysis refuses before it writes anything else
