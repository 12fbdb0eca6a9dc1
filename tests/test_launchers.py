"""``studies.grid --launcher``: the submitit code path (submitit's LocalExecutor, exactly what Slurm runs)
gives the sub-runs of ``--launcher processes`` byte for byte, survives a killed job, never submits a
sub-run twice, and reports each sub-run's state; its flags are refused in one line when wrong."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import DATA_DIR, PAIR_STUDY_ARGS, copy_study, study_files

from core.errors import run_cli
from studies.analyse import main as analysis_main
from studies.grid.cli import MANIFEST
from studies.grid.cli import main as study_main
from studies.grid.manifest import JobRecord
from studies.grid.plan import quick_plan
from studies.grid.submitit_launcher import SubRunJob, job_states, rendezvous

REPO = Path(__file__).resolve().parent.parent
STUDY = PAIR_STUDY_ARGS
LOCAL = [*STUDY, "--launcher", "submitit-local"]
DEADLINE_S = 120
INSTALL = 'pip install -e ".[cluster]"'


@pytest.fixture(autouse=True)
def job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The jobs are new processes: one torch thread each as in this process, and the repository importable."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def reference(pair_study_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two sub-runs of ``STUDY`` trained by the default launcher, in this process (a copy of the session's)."""
    return copy_study(pair_study_runs, tmp_path_factory.mktemp("processes"))


def manifest_runs(root: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads((root / MANIFEST).read_text())["runs"]}


def status_lines(root: Path, capsys: pytest.CaptureFixture) -> dict[str, str]:
    """``python -m studies.grid DIR --status``: sub-run name -> its line."""
    capsys.readouterr()
    assert run_cli(study_main, [str(root), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"study {root}: 2 sub-runs: ")
    return {line.split()[0]: line for line in lines[1:]}


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_submitit_local_gives_the_same_runs_and_a_second_command_submits_nothing_twice(reference, tmp_path, capsys):
    root = tmp_path / "study"
    assert study_main([*LOCAL, "--jobs", "2", "--no-wait", "--out", str(root)]) == 0
    submitted = {name: r["job"]["id"] for name, r in manifest_runs(root).items()}
    assert all(r["status"] == "running" for r in manifest_runs(root).values())
    lines = status_lines(root, capsys)
    for name, job in submitted.items():
        assert " running " in lines[name] and f"job {job} (RUNNING)" in lines[name]
    assert study_main([*LOCAL, "--jobs", "2", "--out", str(root)]) == 0, "waits for the running jobs"
    out = capsys.readouterr().out
    assert all(f"skip {name}: running as job {job}" in out for name, job in submitted.items())
    assert not [line for line in out.splitlines() if line.startswith("run ")], "nothing submitted twice"
    assert len(list((root / "jobs").glob("*_submitted.pkl"))) == 2
    assert {name: (r["status"], r["job"]["id"]) for name, r in manifest_runs(root).items()} == \
        {name: ("done", job) for name, job in submitted.items()}
    assert study_files(root) == study_files(reference)
    assert all(" done " in line and "2/2 cycles" in line for line in status_lines(root, capsys).values())


def test_a_killed_job_is_resumed_by_rerunning_the_study_command(reference, tmp_path, capsys):
    root = tmp_path / "study"
    assert study_main([*LOCAL, "--jobs", "1", "--no-wait", "--out", str(root)]) == 0
    lines = status_lines(root, capsys)
    job = manifest_runs(root)["imp-s0"]["job"]
    assert f"job {job['id']} (RUNNING)" in lines["imp-s0"] and " pending " in lines["swamp-n3-s0"]
    run = root / "runs" / "imp-s0"
    wait_for(lambda: (run / "ticket.safetensors").is_file(), "the ticket")  # the job holds the run's lock now
    os.kill(int((run / ".lock").read_text()), signal.SIGKILL)
    record = JobRecord(**job)
    wait_for(lambda: job_states(root, [record])[record.id] is None, "the killed job to end")
    assert not (run / "cycle_01" / "metrics.json").is_file()
    lines = status_lines(root, capsys)
    assert " failed " in lines["imp-s0"] and f"job {job['id']}: " in lines["imp-s0"]
    assert " pending " in lines["swamp-n3-s0"]
    assert study_main([*LOCAL, "--jobs", "2", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert "run  imp-s0 (" in out and "run  swamp-n3-s0 (0/2 cycles done)" in out
    runs = manifest_runs(root)
    assert runs["imp-s0"]["job"]["id"] != job["id"] and all(r["status"] == "done" for r in runs.values())
    assert study_files(root) == study_files(reference), "the resumed run is the uninterrupted one"


def test_the_analysis_runs_one_job_per_sub_run_with_the_same_measurements(reference, tmp_path):
    here, jobs = (Path(shutil.copytree(reference, tmp_path / name)) for name in ("here", "jobs"))
    common = ["--data-dir", str(DATA_DIR), "--no-progress"]
    assert analysis_main([str(here), *common]) == 0
    assert analysis_main([str(jobs), *common, "--launcher", "submitit-local", "--jobs", "2"]) == 0
    assert len(list((jobs / "analysis" / "jobs").glob("*_submitted.pkl"))) == 2, "one job per sub-run"
    ours = sorted(p.relative_to(here) for p in (here / "analysis").rglob("*.json"))
    assert len(ours) > 5 and ours == sorted(p.relative_to(jobs) for p in (jobs / "analysis").rglob("*.json"))
    for name in ours:
        mine, theirs = (json.loads((root / name).read_text().replace(str(root), "DIR")) for root in (here, jobs))
        mine.pop("seconds", None), theirs.pop("seconds", None)  # wall-clock timings differ
        assert mine == theirs, name


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``srun``, ``sbatch`` (keeps each batch script and answers job 4242, then 4243, ...) and ``sacct``
    (prints ``sacct.txt``) on the PATH: Slurm as submitit sees it, without a cluster."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    scripts = {"srun": "exit 0",
               "sbatch": f'n=$(ls {bin_}/*.sh 2>/dev/null | wc -l); cp "$1" {bin_}/batch$n.sh; '
                         'echo "Submitted batch job $((4242 + n))"',
               "sacct": f"echo 'JobID|State|NodeList'; cat {bin_}/sacct.txt"}
    for name, body in scripts.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_), os.environ["PATH"]]))
    return bin_


def test_slurm_jobs_are_one_array_submitted_once_and_a_failed_one_again(fake_slurm, tmp_path, capsys):
    root = tmp_path / "study"
    slurm = [*STUDY, "--launcher", "slurm", "--device", "cuda", "--slurm-partition", "gpu", "--slurm-time", "1:30:00",
             "--slurm-array-parallelism", "1", "--slurm-arg", "account=proj", "--no-wait", "--out", str(root)]
    assert study_main(slurm) == 0, "--device cuda is the nodes' GPU, not this machine's"
    script = (fake_slurm / "batch0.sh").read_text()
    for line in ("--partition=gpu", "--time=90", "--array=0-1%1", "--gpus-per-node=1", "--ntasks-per-node=1",
                 "--account=proj", "--signal=USR2@90", "--job-name=study-study"):
        assert f"#SBATCH {line}\n" in script, line
    runs = manifest_runs(root)
    assert {name: r["job"]["id"] for name, r in runs.items()} == {"imp-s0": "4242_0", "swamp-n3-s0": "4242_1"}
    assert runs["imp-s0"]["job"]["stderr"] == "jobs/4242_0_0_log.err"
    (fake_slurm / "sacct.txt").write_text("4242_0|RUNNING|gpu07\n4242_1|PENDING|None\n")
    lines = status_lines(root, capsys)
    assert "job 4242_0 (RUNNING)" in lines["imp-s0"] and "job 4242_1 (PENDING)" in lines["swamp-n3-s0"]
    assert study_main(slurm) == 0
    assert "skip imp-s0: running as job 4242_0" in capsys.readouterr().out
    assert not (fake_slurm / "batch1.sh").exists(), "nothing submitted twice"
    (fake_slurm / "sacct.txt").write_text("4242_0|OUT_OF_MEMORY|gpu07\n4242_1|RUNNING|gpu08\n")
    (root / "jobs" / "4242_0_0_log.err").write_text("slurmstepd: error: Detected 1 oom_kill event in StepId=4242.0\n")
    lines = status_lines(root, capsys)
    assert lines["imp-s0"].endswith("job 4242_0: slurmstepd: error: Detected 1 oom_kill event in StepId=4242.0 "
                                    "(log jobs/4242_0_0_log.err)")
    assert study_main(slurm) == 0
    assert "run  imp-s0 (0/2 cycles done): job 4243" in capsys.readouterr().out, "the failed one, alone, again"
    assert "#SBATCH --array" not in (fake_slurm / "batch1.sh").read_text()
    assert {name: r["job"]["id"] for name, r in manifest_runs(root).items()} == \
        {"imp-s0": "4243", "swamp-n3-s0": "4242_1"}


def test_without_submitit_the_launcher_says_how_to_install_it(reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    out = tmp_path / "study"
    for launcher in ("submitit-local", "slurm"):
        for main, argv in ((study_main, [*STUDY, "--out", str(out)]), (analysis_main, [str(reference)])):
            assert run_cli(main, [*argv, "--launcher", launcher]) == 2
            err = capsys.readouterr().err
            assert err == f"error: --launcher {launcher} needs the optional package submitit: {INSTALL}\n"
    assert not out.exists() and not (reference / "analysis").exists()


@pytest.mark.parametrize("args, message", [
    (["--launcher", "slurm", "--slurm-arg", "account"], "--slurm-arg takes KEY=VALUE, such as account=myproject"),
    (["--launcher", "slurm", "--slurm-arg", "acount=me"], "--slurm-arg acount: submitit's SlurmExecutor has no "
                                                          "parameter 'acount' (did you mean account"),
    (["--launcher", "slurm", "--slurm-arg", "partition=gpu"], "--slurm-arg partition: use --slurm-partition"),
    (["--launcher", "slurm", "--slurm-arg", "qos=a", "--slurm-arg", "qos=b"], "--slurm-arg gives qos twice"),
    (["--launcher", "slurm", "--slurm-time", "soon"], "--slurm-time takes minutes or [D-]HH:MM:SS"),
    (["--launcher", "slurm", "--slurm-array-parallelism", "0"], "--slurm-array-parallelism must be at least 1"),
    (["--launcher", "slurm", "--jobs", "2"], "--jobs applies to --launcher processes and submitit-local"),
    (["--launcher", "slurm"], "srun is not on this machine's PATH; use --launcher submitit-local"),
    (["--launcher", "submitit-local", "--slurm-arg", "qos=a"], "--slurm-arg applies to --launcher slurm only"),
    (["--slurm-partition", "gpu"], "--slurm-partition applies to --launcher submitit-local or slurm"),
    (["--no-wait"], "--no-wait applies to --launcher submitit-local or slurm"),
    (["--launcher", "nope"], "argument --launcher: invalid choice: 'nope'"),
])
def test_bad_launcher_flags_are_one_line_naming_the_flag(reference, tmp_path, args, message, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here, whatever this machine has
    out = tmp_path / "study"
    for main, argv in ((study_main, [*STUDY, "--out", str(out)]), (analysis_main, [str(reference)])):
        if main is analysis_main and "--no-wait" in args:
            continue  # the analysis always waits for its jobs
        assert run_cli(main, [*argv, *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not out.exists() and not (reference / "analysis").exists(), "a refused command writes nothing"


def test_a_multi_task_job_trains_its_particles_with_the_distributed_engine(reference, tmp_path):
    """What a multi-GPU Slurm job runs, on CPUs: a submitit job of two tasks (one per GPU there) whose
    function takes torch.distributed's rendezvous from submitit's environment; each particle is trained
    as in one process, bitwise, and the averages agree up to the all-reduce's rounding."""
    import submitit
    import torch
    from safetensors.torch import load_file

    plan = quick_plan("mnist1d", (0,))
    swamp = next(m for m in plan.methods if m.name == "swamp-n3")
    run = tmp_path / "runs" / "swamp-n3-s0"
    executor = submitit.LocalExecutor(tmp_path / "jobs")
    executor.update_parameters(tasks_per_node=2, timeout_min=10)
    runtime = {"device": "cpu", "data_dir": str(DATA_DIR), "progress": False}
    job = executor.submit(SubRunJob(plan, swamp, 0, run, runtime, 1))
    # without the rendezvous both tasks would train the run and one of them would meet the other's run lock
    assert job.results() == [("done", None), ("done", None)]
    for path in sorted((reference / "runs" / "swamp-n3-s0").rglob("*.safetensors")):
        ours = run / path.relative_to(reference / "runs" / "swamp-n3-s0")
        if path.name == "average.safetensors":
            theirs, mine = load_file(path), load_file(ours)
            assert all(torch.allclose(theirs[k], mine[k], atol=1e-6) for k in theirs), ours
        else:
            assert ours.read_bytes() == path.read_bytes(), ours


def test_a_multi_gpu_job_takes_its_rendezvous_from_slurm(monkeypatch):
    """The variables torch.distributed's env:// (training.engines.cluster.join) reads, from a Slurm task's
    environment; and the requeue hook resubmits the same call, which resumes the run."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    for name, value in {"SLURM_JOB_ID": "731", "SLURM_PROCID": "3", "SLURM_LOCALID": "3", "SLURM_NTASKS": "4",
                        "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "gpu[07-08]"}.items():
        monkeypatch.setenv(name, value)
    assert rendezvous(SlurmJobEnvironment()) == {"RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "4",
                                                 "MASTER_ADDR": "gpu07", "MASTER_PORT": "20731"}
    plan = quick_plan("mnist1d", (0,))
    job = SubRunJob(plan, plan.methods[0], 0, Path("runs/imp-s0"), {})
    again = job.checkpoint()
    assert again.function == job and again.args == () and again.kwargs == {}
