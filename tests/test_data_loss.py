"""No command destroys a file it did not create, and environment failures are one line (exit 2).

Every refusal below is checked against a digest of the whole directory tree taken before the command:
nothing outside the command's own outputs may change, and a refused command writes nothing at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR, TINY_ARGS, make_run

from core.errors import RESUME_RUN, run_cli
from landscape.tools import barrier, hessian, subspace
from studies import analyse as landscape_study
from studies.grid import cli as training_study
from training import swamp

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--cycles", "1", "--epochs", "1", "--particles", "2", "--rewind-epochs", "0", "--no-progress",
         "--data-dir", str(DATA_DIR)]


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry below ``root``: file contents hashed, links by target, folders as such."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir" if path.is_dir() else "special"
    return out


def refused(capsys, main, argv, *, where: Path, expect: str, **kwargs) -> str:
    """Run a CLI that must stop with one ``error:`` line, exit 2 and no change below ``where``."""
    before = tree_digest(where)
    assert run_cli(main, argv, **kwargs) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expect in err, err
    assert tree_digest(where) == before, "a refused command changed files"
    return err


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A folder of a user's own files, with a subfolder and a file that looks like ours."""
    folder = tmp_path / "thesis"
    (folder / "chapters").mkdir(parents=True)
    (folder / "thesis.txt").write_text("four years of work\n")
    (folder / "chapters" / "one.tex").write_text("\\chapter{One}\n")
    (folder / "results.csv").write_text("mine,not,a,run\n")
    return folder


def test_overwrite_refuses_a_folder_that_is_not_a_run(user_folder, capsys):
    refused(capsys, swamp.main, [*QUICK, "--out", str(user_folder), "--overwrite"], where=user_folder.parent,
            expect="is not a run directory")


def test_overwrite_refuses_a_run_holding_a_user_file_and_keeps_a_lock_file_of_another_program(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(swamp.main, [*QUICK, "--out", str(run)]) == 0
    (run / "cycle_00" / "notes.md").write_text("the particles looked odd\n")
    refused(capsys, swamp.main, [*QUICK, "--out", str(run), "--overwrite"], where=tmp_path, expect="notes.md")
    (run / "cycle_00" / "notes.md").unlink()
    os.symlink(user := tmp_path / "elsewhere.txt", run / "cycle_00" / "metrics.json.bak")
    user.write_text("kept\n")
    refused(capsys, swamp.main, [*QUICK, "--out", str(run), "--overwrite"], where=tmp_path, expect="cycle_00")
    other = tmp_path / "other"
    other.mkdir()
    (other / ".lock").write_text("a lock of some other program, with its own meaning\n")
    refused(capsys, swamp.main, [*QUICK, "--out", str(other)], where=tmp_path, expect="already exists")


def test_overwrite_replaces_a_run_and_an_empty_folder(tmp_path):
    run = tmp_path / "run"
    assert run_cli(swamp.main, [*QUICK, "--out", str(run)]) == 0
    first = tree_digest(run)
    (run / ".resume").mkdir(exist_ok=True)
    (run / ".resume" / "cycle_00_particle_01.safetensors").write_bytes(b"stale state")
    (run / "cycle_00" / ".metrics.json.tmp-123").write_bytes(b"half")
    assert run_cli(swamp.main, [*QUICK, "--out", str(run), "--overwrite"]) == 0
    again = tree_digest(run)
    assert set(again) == set(first), "exactly a run's files: the stale state and temporary are gone"
    assert {k: again[k] for k in again if k.endswith(".safetensors")} == \
        {k: first[k] for k in first if k.endswith(".safetensors")}, "the same checkpoints, retrained"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(swamp.main, [*QUICK, "--out", str(empty), "--overwrite"]) == 0
    assert (empty / "cycle_00" / "average.safetensors").is_file()


@pytest.mark.parametrize("out", ["", "   ", "\t"])
def test_empty_out_is_refused_and_the_working_directory_kept(out, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    refused(capsys, swamp.main, [*QUICK, "--out", out, "--overwrite"], where=tmp_path, expect="--out must name")
    refused(capsys, training_study.main, ["--out", out, "--quick"], where=tmp_path, expect="--out must name")


def test_study_refuses_a_folder_that_is_not_a_study(user_folder, tmp_path, capsys):
    refused(capsys, training_study.main, ["--out", str(user_folder), "--quick"], where=tmp_path,
            expect="is not a study directory")
    refused(capsys, training_study.main, ["--out", str(user_folder / "thesis.txt"), "--quick"], where=tmp_path,
            expect="is a file")


def test_study_analysis_refuses_a_foreign_analysis_folder(tmp_path, capsys):
    study = tmp_path / "study"
    (study / "analysis").mkdir(parents=True)
    (study / "study.json").write_text(json.dumps({"format": "swamp-study/1", "methods": [], "runs": [],
                                                  "seeds": [0], "quick": True}))
    (study / "analysis" / "draft.txt").write_text("my own analysis\n")
    refused(capsys, landscape_study.main, [str(study)], where=tmp_path, expect="is not a study analysis")


@pytest.fixture(scope="module")
def ckpts(tiny_run) -> tuple[Path, Path]:
    return tiny_run / "cycle_01" / "particle_00.safetensors", tiny_run / "cycle_01" / "particle_01.safetensors"


def test_outputs_never_replace_inputs(ckpts, tiny_run, tmp_path, capsys):
    a, b = ckpts
    work = tmp_path / "work"
    work.mkdir()
    link, hard = work / "link.safetensors", work / "hard.safetensors"
    os.symlink(a, link)
    os.link(shutil.copy(b, work / "b.safetensors"), hard)
    base = ["--points", "2", "--split", "test", "--no-progress"]
    for flag in ("--json", "--plot"):
        refused(capsys, barrier.main, [str(a), str(b), *base, flag, str(a)], where=tiny_run, expect="is the input")
        refused(capsys, barrier.main, [str(link), str(b), *base, flag, str(a)], where=tiny_run,
                expect="is the input")
        refused(capsys, barrier.main, [str(a), str(work / "b.safetensors"), *base, flag, str(hard)],
                where=tmp_path, expect="is the input")
        refused(capsys, hessian.main, [str(a), "--probes", "2", "--samples", "8", flag, str(a)], where=tiny_run,
                expect="is the input")
        refused(capsys, subspace.main, [str(a), str(b), "--samples", "1", "--split", "test", flag, str(b)],
                where=tiny_run, expect="is the input")
    refused(capsys, barrier.main, ["--run", str(tiny_run), "--cycle", "1", *base, "--json",
                                   str(tiny_run / "config.json")], where=tiny_run, expect="inside the input")
    refused(capsys, hessian.main, ["--run", str(tiny_run), "--json", str(tiny_run / "cycle_00" / "metrics.json")],
            where=tiny_run, expect="inside the input")


def test_outputs_refuse_files_of_another_kind_links_folders_and_twice_the_same(ckpts, tmp_path, capsys):
    a, b = ckpts
    base = [str(a), str(b), "--points", "2", "--split", "test", "--no-progress"]
    notes = tmp_path / "notes.json"
    notes.write_text("not JSON: my notes\n")
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a JPEG")
    os.symlink(tmp_path / "notes.json", tmp_path / "link.json")
    os.mkfifo(tmp_path / "fifo.json")
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "data"}')
    other_png = tmp_path / "other.png"
    other_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # a PNG, but not one matplotlib wrote
    (tmp_path / "file.txt").write_text("a file\n")
    not_json, not_png = "is not an earlier JSON output", "is not an earlier PNG"
    cases = [(["--json", str(notes)], not_json), (["--plot", str(photo)], not_png),
             (["--json", str(mine)], not_json), (["--plot", str(other_png)], not_png),
             (["--json", str(tmp_path / "file.txt" / "out.json")], "is not a directory"),
             (["--json", str(tmp_path)], "is a directory"), (["--json", str(tmp_path / "link.json")], "symbolic link"),
             (["--json", str(tmp_path / "fifo.json")], "not a regular file"),
             (["--json", str(tmp_path / "x"), "--plot", str(tmp_path / "x")], "name the same file")]
    for flags, expect in cases:
        refused(capsys, barrier.main, [*base, *flags], where=tmp_path, expect=expect)
    plane = [str(a), str(b), str(b), "--plane", "--samples", "1", "--resolution", "2", "--json", str(notes)]
    (tmp_path / "notes.json.partial").write_text("mine\n")
    notes.write_text('{"hull": {}}')  # an earlier subspace output: only its .partial is somebody else's
    refused(capsys, subspace.main, plane, where=tmp_path, expect="--json (its .partial)")
    for argv in ([str(a), str(b), "--points", "2", "--seed", "-1"], [str(a), str(b), "--points", "100000"],
                 [str(a), str(b), "--points", "2", "--data-dir", str(tmp_path / "file.txt")]):
        refused(capsys, barrier.main, argv, where=tmp_path, expect="error: ")
    for argv in ([str(a), str(b), "--samples", "1000000000"], [str(a), str(b), str(b), "--plane", "--resolution",
                                                                "100000"], [str(a), str(b), "--seed", "-1"]):
        refused(capsys, subspace.main, argv, where=tmp_path, expect="must")
    for argv in ([str(a), "--probes", "1000000000000"], [str(a), "--density", "--lanczos-runs", "1000000000"],
                 [str(a), "--seed", "-1"]):
        refused(capsys, hessian.main, argv, where=tmp_path, expect="must")


def test_an_earlier_output_is_replaced(ckpts, tmp_path, capsys):
    a, b = ckpts
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    args = [str(a), str(b), "--points", "2", "--split", "test", "--json", str(out), "--plot", str(png)]
    assert run_cli(barrier.main, args) == 0
    first = json.loads(out.read_text())
    assert run_cli(barrier.main, args) == 0
    assert json.loads(out.read_text()) == first and png.read_bytes().startswith(b"\x89PNG")


def test_environment_failures_are_one_line(ckpts, tmp_path, capsys):
    a, b = ckpts
    long = str(tmp_path / ("x" * 300))
    refused(capsys, swamp.main, [*QUICK, "--out", long], where=tmp_path, expect="File name too long",
            rerun=RESUME_RUN)
    refused(capsys, swamp.main, [*QUICK, "--out", "/proc/self/no/run"], where=tmp_path, expect="error: ",
            rerun=RESUME_RUN)
    (tmp_path / "file").write_text("a file\n")
    refused(capsys, swamp.main, [*QUICK, "--out", str(tmp_path / "file")], where=tmp_path, expect="not a directory")
    refused(capsys, swamp.main, [*QUICK, "--out", str(tmp_path / "file" / "run")], where=tmp_path,
            expect="Not a directory", rerun=RESUME_RUN)
    err = refused(capsys, barrier.main, [str(a), str(b), "--points", "2", "--plot", long + ".png"], where=tmp_path,
                  expect="File name too long")
    assert "--resume" not in err, "landscape.tools.barrier has no --resume"


def _limited_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_file_size_limit_stops_training_cleanly_and_the_run_resumes(tmp_path):
    """``ulimit -f``: the write fails with EFBIG (Python ignores SIGXFSZ); one line, then --resume finishes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "run"
    # the MLP: its checkpoints (120 kB) pass the limit as well, and the resume trains the whole run in seconds
    cmd = [sys.executable, "-m", "training.swamp", *TINY_ARGS, "--model", "mlp", "--data-dir", str(DATA_DIR), "--out",
           str(out)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited_file_size(40_000))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: File too large") and proc.stderr.count("\n") == 1, proc.stderr
    assert "--resume" in proc.stderr
    assert not list(out.rglob(".*.tmp-*")), "the failed write leaves no temporary behind"
    done = subprocess.run([*cmd, "--resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "cycle_02" / "average.safetensors").is_file()


def test_inputs_that_are_not_regular_files_are_named_for_what_they_are(ckpts, tmp_path, capsys):
    a, _ = ckpts
    os.symlink(tmp_path / "loop1.safetensors", tmp_path / "loop2.safetensors")
    os.symlink(tmp_path / "loop2.safetensors", tmp_path / "loop1.safetensors")
    os.symlink(tmp_path / "gone.safetensors", tmp_path / "broken.safetensors")
    os.mkfifo(tmp_path / "fifo.safetensors")
    os.mkfifo(tmp_path / "fifo.pt")
    (tmp_path / "folder.safetensors").mkdir()
    cases = {"loop1.safetensors": "loop of symbolic links", "broken.safetensors": "broken symbolic link",
             "fifo.safetensors": "not a regular file", "folder.safetensors": "is a directory",
             "absent.safetensors": "does not exist"}
    for name, expect in cases.items():
        refused(capsys, barrier.main, [str(tmp_path / name), str(a), "--points", "2"], where=tmp_path,
                expect=expect)
    refused(capsys, hessian.main, [str(tmp_path / "fifo.pt"), "--model", "cnn1d", "--dataset", "mnist1d",
                                   "--data-dir", str(DATA_DIR)], where=tmp_path, expect="not a regular file")


def test_a_closed_pipe_stops_quietly(tmp_path):
    """``python -m landscape.barrier ... | head -2``: no BrokenPipeError traceback, SIGPIPE's status."""
    # 400 points print more than the 8 kB stdout buffer (the pipe then closes between two writes); on two MLP
    # particles they take a second, where the CNN's took several
    run = make_run(tmp_path / "mlp", "--model", "mlp", "--cycles", "2", "--epochs", "1", "--particles", "2")
    a, b = (run / "cycle_01" / f"particle_0{p}.safetensors" for p in (0, 1))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "landscape.barrier", str(a), str(b), "--points", "400",
                             "--bn-recal", "0", "--split", "test", "--data-dir", str(DATA_DIR)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141
    assert b"Traceback" not in proc.stderr.read()
