"""Issue 24, items 1-3 and 10: every output flag of every command passes one guard before anything is computed,
and the names, paths and job logs a manifest holds cannot lead a read or a write out of its study.

Each refusal is one ``error:`` line, exit status 2, and no change anywhere below the test's folder (the tree
digest of :mod:`test_data_loss`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from test_data_loss import refused, tree_digest

from core.artifacts.outputs import Replaceable, check_outputs
from core.errors import UserError, run_cli
from landscape.tools import align
from studies import alignment, analyse, budget, report
from studies.controls import cli as controls
from studies.grid import cli as study
from studies.grid.manifest import LOG_TAIL, log_tail
from studies.grid.status import study_status

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "training", "landscape", "studies", "benchmarks")
# An output flag by its name (--json, --plot, --out, --csv, --figure, ... and --out-dir style variants) or by
# its metavar (OUT, OUT.png).
OUTPUT_NAME = re.compile(r"--(json|plot|out|output|csv|figure|fig|png|pdf|svg|tex|save|write|dump)([-_].*)?")


def command_modules() -> list[str]:
    """Every module of the packages that defines a ``main()``: the commands, found by reading the sources."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if re.search(r"^def main\(", path.read_text(), re.MULTILINE):
                found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def call_main(module: str, argv: list[str]) -> int | None:
    """``module.main`` on ``argv`` (the benchmarks' ``main()`` reads ``sys.argv``)."""
    main = importlib.import_module(module).main
    if inspect.signature(main).parameters:
        return main(argv)
    with mock.patch.object(sys, "argv", [module, *argv]):
        return main()


class _Parsed(Exception):
    pass


def command_parser(module: str) -> argparse.ArgumentParser:
    """The parser ``module.main`` builds, taken as it starts parsing (so nothing runs)."""
    def grab(self, args=None, namespace=None):
        raise _Parsed(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", grab):
        try:
            call_main(module, [])
        except _Parsed as parsed:
            return parsed.args[0]
    raise AssertionError(f"{module}.main() returned without parsing a command line")


def output_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [next(s for s in a.option_strings if s.startswith("--")) for a in parser._actions
            if any(OUTPUT_NAME.fullmatch(s) for s in a.option_strings)
            or (a.option_strings and "OUT" in str(a.metavar or "").upper())]


def minimal_argv(parser: argparse.ArgumentParser, flag: str, target: Path, placeholder: Path) -> list[str]:
    """``flag target`` with every required argument filled by ``placeholder`` (the guard comes first); a required
    output flag other than ``flag`` gets a new file beside it (landscape.tools.align's ``--out`` when ``--json`` is
    tried)."""
    argv, outputs = [], output_flags(parser)
    for action in parser._actions:
        if action.option_strings:
            if action.required and flag not in action.option_strings:
                fresh = any(s in outputs for s in action.option_strings)
                argv += [action.option_strings[-1], str(placeholder.with_name("new-output") if fresh else placeholder)]
        elif action.nargs not in ("?", "*", argparse.REMAINDER):
            argv += [str(placeholder)] * (action.nargs if isinstance(action.nargs, int) else 1)
    return [*argv, flag, str(target)]


COMMANDS = command_modules()


def test_the_commands_and_their_output_flags_are_found():
    """The enumeration below is not empty: it finds the known commands and their output flags."""
    found = {(module, flag) for module in COMMANDS for flag in output_flags(command_parser(module))}
    assert {"training.swamp", "training.imp", "studies.grid.cli", "landscape.tools.barrier",
            "landscape.tools.subspace", "landscape.tools.hessian", "landscape.tools.align", "studies.controls.cli",
            "studies.alignment", "studies.analyse", "studies.report", "benchmarks.bench_engines"} <= set(COMMANDS)
    assert found >= {
        ("landscape.tools.barrier", "--json"), ("landscape.tools.barrier", "--plot"),
        ("landscape.tools.subspace", "--json"), ("landscape.tools.subspace", "--plot"),
        ("landscape.tools.hessian", "--json"), ("landscape.tools.hessian", "--plot"),
        ("landscape.tools.align", "--out"), ("studies.controls.cli", "--json"), ("studies.alignment", "--json"),
        ("training.swamp", "--out"), ("training.imp", "--out"), ("studies.grid.cli", "--out")}


@pytest.mark.parametrize("module", COMMANDS)
def test_every_output_flag_of_every_command_refuses_a_foreign_file_and_a_fifo(module, tmp_path, capsys,
                                                                             monkeypatch):
    """A new command cannot forget the guard: each of its output flags, given a user's file or a FIFO, stops
    with one line naming the flag, exit status 2, and the file as it was."""
    monkeypatch.chdir(ROOT)  # a training command reads the data set under data/, as in the other tests
    parser = command_parser(module)
    if not output_flags(parser):
        pytest.skip(f"{module} names no output file on its command line")
    (tmp_path / "inputs").mkdir()
    placeholder = tmp_path / "inputs" / "input"
    placeholder.write_text("an input\n")
    thesis = tmp_path / "user" / "thesis.tex"
    thesis.parent.mkdir()
    thesis.write_text("\\chapter{Four years of work}\n")
    fifo = tmp_path / "user" / "pipe"
    os.mkfifo(fifo)
    for flag in output_flags(parser):
        for target in (thesis, fifo):
            argv = minimal_argv(parser, flag, target, placeholder)
            refused(capsys, lambda argv: call_main(module, argv), argv, where=tmp_path, expect=flag)
    assert thesis.read_text() == "\\chapter{Four years of work}\n"


@pytest.fixture
def family(tmp_path: Path) -> Path:
    """A family of studies as the toolkit writes it (one cell, one run, one cycle) and a user's thesis beside it:
    enough for the guard, which refuses before anything is read."""
    fam = tmp_path / "FAM"
    cell = fam / "cells" / "mlp-r1"
    run = cell / "runs" / "imp-s0"
    (run / "cycle_00").mkdir(parents=True)
    (fam / "family.json").write_text(json.dumps({"format": "swamp-study-family/1",
                                                 "cells": [{"name": "mlp-r1", "path": "cells/mlp-r1"}]}))
    (cell / "study.json").write_text(json.dumps(study_manifest()))
    (run / "config.json").write_text(json.dumps({"package_version": "0.1.0", "model": "mlp", "particles": 1,
                                                 "swa": False, "seed": 0, "rewind_epochs": 1, "cycles": 1}))
    (run / "cycle_00" / "average.safetensors").write_bytes(b"the weights of a day of training")
    (run / "cycle_00" / "metrics.json").write_text(json.dumps({"cycle": 0}))
    (tmp_path / "thesis.tex").write_text("\\chapter{One}\n")
    return fam


def study_manifest(**run) -> dict:
    entry = {"name": "imp-s0", "method": "imp", "seed": 0, "particles": 1, "path": "runs/imp-s0",
             "status": "pending", "cycles_done": 0, "seconds": 0.0, "error": None, "job": None, **run}
    return {"format": "swamp-study/1", "preset": "mnist1d", "settings": {"cycles": 2}, "seeds": [0],
            "methods": [{"name": "imp", "particles": 1, "swa": False, "particles_from_cycle": 0,
                         "prune_method": "global", "oneshot": False, "role": "imp"}],
            "quick": True, "runs": [entry], "updated": "2026-01-01T00:00:00Z"}


def issue_targets(fam: Path) -> dict[str, str]:
    """The files issue 24 saw destroyed, and new files inside a run or a study's folders -> the refusal."""
    cell, run = fam / "cells" / "mlp-r1", fam / "cells" / "mlp-r1" / "runs" / "imp-s0"
    targets = {fam / "family.json": "inside the input family of studies", cell / "study.json": "inside the input "
               "study", run / "config.json": "inside the input run", run / "cycle_00" / "average.safetensors":
               "inside the input run", run / "cycle_00" / "aligned.safetensors": "inside the input run",
               run / "notes.json": "inside the input run", cell / "analysis" / "mine.json": "inside the input study",
               fam / "cells": "is a directory", fam.parent / "thesis.tex": "is not an earlier JSON output"}
    if os.geteuid() == 0:  # only root may replace a device node, as issue 24 saw happen to /dev/full
        targets[Path("/dev/full")] = "not a regular file"
    return {str(k): v for k, v in targets.items()}


def test_controls_and_alignment_refuse_the_files_issue_24_lost(family, capsys):
    runs = family / "cells" / "mlp-r1" / "runs"
    for target, expect in issue_targets(family).items():
        for main, argv in ((controls.main, [str(family), "--rewind", "1"]), (alignment.main, [str(runs), "--cycles",
                                                                                           "0"])):
            err = refused(capsys, main, [*argv, "--json", target], where=family.parent, expect=expect)
            assert err.startswith(f"error: --json {target} "), err
    err = refused(capsys, controls.main, [str(family), "--json", ""], where=family.parent, expect="--json")
    assert "is a directory" in err, "an empty --json is the working directory, refused before any compute"


def test_align_never_writes_into_an_input_run(family, tmp_path, capsys):
    """Item 10: ``landscape.align --out RUN/cycle_00/aligned.safetensors`` wrote into the run, which then could
    not be --overwritten; any run is off limits, also through a linked folder."""
    cycle = family / "cells" / "mlp-r1" / "runs" / "imp-s0" / "cycle_00"
    solution = str(cycle / "average.safetensors")
    refused(capsys, align.main, [solution, solution, "--out", str(cycle / "aligned.safetensors")], where=tmp_path,
            expect="is inside the input run")
    os.symlink(cycle, tmp_path / "linked")
    refused(capsys, align.main, [str(tmp_path / "thesis.tex"), str(tmp_path / "thesis.tex"), "--out",
                                 str(tmp_path / "linked" / "aligned.safetensors")], where=tmp_path,
            expect="is inside the run")


def test_controls_never_put_their_cache_inside_a_run(family, capsys):
    """``studies.controls RUN`` would write RUN/analysis/controls: the run is refused as ROOT, nothing written."""
    run = family / "cells" / "mlp-r1" / "runs" / "imp-s0"
    for argv in ([str(run), "--rewind", "1"], [str(run)], [str(run / "cycle_00"), "--rewind", "1"]):
        refused(capsys, controls.main, argv, where=family.parent, expect=f"is inside the run {run}")


def test_the_guard_allows_new_files_beside_a_study_and_reruns_over_its_own_outputs(family, tmp_path):
    """What the docs do stays allowed: ``studies.controls runs/controls --json runs/controls/controls.json``
    (a new file beside the runs, at the top of a study or family), and a rerun replacing its own output."""
    cell = family / "cells" / "mlp-r1"
    alone = tmp_path / "study"
    alone.mkdir()
    (alone / "study.json").write_text((cell / "study.json").read_text())
    for out, source in ((family / "controls.json", family), (alone / "controls.json", alone),
                        (tmp_path / "controls.json", family)):
        check_outputs({"--json": out}, [source], {"--json": controls.JSON_KEYS})
        out.write_text(json.dumps({"rows": {}, "correlations": []}))
        check_outputs({"--json": out}, [source], {"--json": controls.JSON_KEYS})
    with pytest.raises(UserError, match="inside the input family of studies"):
        check_outputs({"--json": cell / "controls.json"}, [cell])  # a cell's top level is inside the family
    aligned = tmp_path / "aligned.safetensors"
    aligned.write_bytes(b"an aligned checkpoint")
    check_outputs({"--out": aligned}, [], {"--out": Replaceable("aligned checkpoint", lambda p: True)})
    with pytest.raises(UserError, match="is not an earlier aligned checkpoint of this tool"):
        check_outputs({"--out": aligned}, [], {"--out": Replaceable("aligned checkpoint", lambda p: False)})
    for name in ("study.json", "runs", "jobs", "analysis", ".lock"):
        with pytest.raises(UserError, match="inside the input study"):
            check_outputs({"--json": alone / name}, [alone])


# --- item 2: names and paths from manifests -------------------------------------------------------------------

HOSTILE_RUNS = {
    "name out of the study": {"name": "../../escape", "path": "runs/../../escape"},
    "path elsewhere": {"path": "../elsewhere/runs/imp-s0"},
    "absolute path": {"path": "/tmp"},
    "name with a slash": {"name": "a/b", "path": "runs/a/b"},
    "empty name": {"name": "", "path": "runs/"},
    "dot-dot name": {"name": "..", "path": "runs/.."},
    "NUL in the name": {"name": "imp\0s0", "path": "runs/imp\0s0"},
    "name not a string": {"name": 7, "path": "runs/7"},
    "job log /dev/zero": {"job": {"launcher": "submitit-local", "id": "x", "submitted": "2026-01-01T00:00:00Z",
                                  "stdout": "jobs/x.out", "stderr": "/dev/zero"}},
    "job log /etc/passwd": {"job": {"launcher": "slurm", "id": "4242", "submitted": "2026-01-01T00:00:00Z",
                                    "stdout": "/etc/passwd", "stderr": "jobs/4242.err"}},
    "job log climbing out": {"job": {"launcher": "submitit-local", "id": "x", "submitted": "2026-01-01T00:00:00Z",
                                     "stdout": "jobs/x.out", "stderr": "jobs/../../x.err"}},
}
READERS = {"studies.analyse": (analyse.main, ["--only", "hessian"]), "studies.report": (report.main, []),
           "studies.grid --status": (study.main, ["--status"]), "studies.budget": (budget.main, []),
           "studies.controls": (controls.main, ["--rewind", "1"])}


@pytest.mark.parametrize("case", HOSTILE_RUNS)
def test_every_reader_refuses_a_manifest_leading_out_of_its_study(case, family, capsys):
    """Issue 24 item 2: a run named ``../../../../tmp/X`` made ``studies.analyse`` write ``/tmp/X/cycle_00.json``;
    a run's path led the rows to a foreign checkpoint. Every reader of ``study.json`` refuses such a manifest
    in one line, before it reads or writes anything."""
    cell = family / "cells" / "mlp-r1"
    (cell / "study.json").write_text(json.dumps(study_manifest(**HOSTILE_RUNS[case])))
    for main, extra in READERS.values():
        refused(capsys, main, [*extra, str(cell)], where=family.parent, expect="study.json lists")
    refused(capsys, study.main, [str(family), "--status"], where=family.parent, expect="study.json lists")
    before = tree_digest(family.parent)  # continuing the study reads its manifest under the study's lock
    assert run_cli(study.main, ["--quick", "--data-dir", str(ROOT / "data"), "--out", str(cell)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "study.json lists" in err, err
    after = tree_digest(family.parent)
    assert {k: v for k, v in after.items() if not k.endswith("/.lock")} == before, "only the lock file is new"


@pytest.mark.parametrize("cell", [{"name": "../x", "path": "cells/../x"}, {"name": "c", "path": "/tmp"},
                                  {"name": "c/d", "path": "cells/c/d"}, {"name": "c", "path": "elsewhere/c"}])
def test_a_family_manifest_leading_out_of_the_family_is_refused(cell, family, capsys):
    (family / "family.json").write_text(json.dumps({"format": "swamp-study-family/1", "cells": [cell]}))
    refused(capsys, study.main, [str(family), "--status"], where=family.parent, expect="is not a family's manifest")


# --- item 3: job records --------------------------------------------------------------------------------------

def failed_job(cell: Path, log: str) -> None:
    """``study.json`` records a sub-run whose local job ended (no such controller) before its run finished,
    with the error log ``log``: ``--status`` reads the last line of that log."""
    job = {"launcher": "submitit-local", "id": "ended", "submitted": "2026-01-01T00:00:00Z",
           "stdout": "jobs/ended.out", "stderr": log}
    (cell / "study.json").write_text(json.dumps(study_manifest(status="running", job=job)))
    (cell / "jobs").mkdir(exist_ok=True)


def test_status_reads_a_bounded_tail_of_a_job_log(family):
    cell = family / "cells" / "mlp-r1"
    failed_job(cell, "jobs/ended.err")
    (cell / "jobs" / "ended.err").write_bytes(b"x" * (8 * 2**20) + b"\nRuntimeError: the last line\n")
    assert [(r.status, r.error) for r in study_status(cell).runs] == [("failed", "RuntimeError: the last line")]
    assert len(log_tail(cell, "jobs/ended.err")) == LOG_TAIL


@pytest.mark.parametrize("target, expect", [("/dev/zero", "leads out of"), ("/etc/passwd", "leads out of"),
                                            ("loop", "leads out of"), ("jobs link", "leads out of"),
                                            ("fifo", "is not a regular file"), ("dir", "is not a regular file")])
def test_status_refuses_a_job_log_that_is_a_link_out_a_fifo_or_a_folder(target, expect, family, capsys):
    cell = family / "cells" / "mlp-r1"
    failed_job(cell, "jobs/ended.err")
    log = cell / "jobs" / "ended.err"
    if target == "fifo":
        os.mkfifo(log)
    elif target == "dir":
        log.mkdir()
    elif target == "loop":
        os.symlink(log, log)
    elif target == "jobs link":  # the whole jobs/ folder a link to /etc, the log named passwd
        failed_job(cell, "jobs/passwd")
        (cell / "jobs").rmdir()
        os.symlink("/etc", cell / "jobs")
    else:
        os.symlink(target, log)
    err = refused(capsys, study.main, [str(cell), "--status"], where=family.parent, expect=expect)
    assert "root:" not in err and ("ended.err" in err or "passwd" in err)


def test_status_on_a_fifo_log_ends_at_once_in_a_fresh_process(family):
    """Issue 24 saw ``--status`` hang for over a minute on a FIFO: in a fresh process it ends, one line, exit 2."""
    cell = family / "cells" / "mlp-r1"
    failed_job(cell, "jobs/ended.err")
    os.mkfifo(cell / "jobs" / "ended.err")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "studies.grid.cli", str(cell), "--status"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is not a regular file" in proc.stderr, \
        proc.stderr
    assert tree_digest(cell)["jobs/ended.err"] == "special"


def test_a_run_of_the_status_with_ordinary_logs_is_unchanged(family, capsys):
    """The legitimate case keeps working: a log under jobs/, its last line reported as the error."""
    cell = family / "cells" / "mlp-r1"
    failed_job(cell, "jobs/ended.err")
    (cell / "jobs" / "ended.err").write_text("starting\nslurmstepd: error: oom_kill event\n\n")
    assert run_cli(study.main, [str(cell), "--status"]) == 0
    assert "slurmstepd: error: oom_kill event (log jobs/ended.err)" in capsys.readouterr().out
