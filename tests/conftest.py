"""Shared fixtures: tiny real runs made once per test session (MNIST-1D, a few seconds each)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from training.swamp import main as swamp_main

# The tests' models are tiny: one thread is faster than two, and keeps results identical between the
# in-process runs and the subprocess runs (which get OMP_NUM_THREADS=1).
torch.set_num_threads(1)

TINY_ARGS = ["--cycles", "3", "--epochs", "2", "--particles", "3", "--rewind-epochs", "1", "--no-progress"]


def one_line(call, *args, **kwargs) -> str:
    """The message of the UserError ``call(*args, **kwargs)`` raises, asserted to be one line."""
    from training.errors import UserError

    with pytest.raises(UserError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def study_files(root: Path, runs: str = "runs") -> dict[str, object]:
    """Every checkpoint's bytes and every cycle's metrics (without the wall-clock seconds) under ``root/runs``,
    keyed by their path relative to ``root``: what two runs of one study must share to be the same."""
    found: dict[str, object] = {}
    for path in sorted((root / runs).rglob("*")):
        if path.suffix == ".safetensors":
            found[str(path.relative_to(root))] = path.read_bytes()
        elif path.name == "metrics.json":
            found[str(path.relative_to(root))] = {k: v for k, v in json.loads(path.read_text()).items()
                                                  if k != "seconds"}
    assert any(name.endswith("average.safetensors") for name in found)
    return found


def make_run(out: Path, *extra: str) -> Path:
    """Run ``python -m training.swamp`` in-process with tiny settings into ``out``."""
    assert swamp_main([*TINY_ARGS, "--out", str(out), "--data-dir", str(DATA_DIR), *extra]) == 0
    return out


DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session")
def four_particle_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 particles like the default run, 4 cycles so that the README's ``--cycle 3`` exists."""
    return make_run(tmp_path_factory.mktemp("four") / "run", "--cycles", "4", "--epochs", "1", "--particles", "4",
                    "--rewind-epochs", "0")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-cycle SWAMP run with 3 particles and SWA (cnn1d with BatchNorm)."""
    return make_run(tmp_path_factory.mktemp("runs") / "swamp")


# docs/reliability.md's tally: with SWAMP_TEST_TALLY=FILE the suite counts every UserError it provokes
# in-process (each is one refused bad input, reported as one line by the CLIs) and writes the count.
_TALLY = {"user_errors": 0}


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("SWAMP_TEST_TALLY"):
        from training.errors import UserError

        original = UserError.__init__

        def counting(self, *args, **kwargs):
            _TALLY["user_errors"] += 1
            original(self, *args, **kwargs)

        UserError.__init__ = counting


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` (pyproject.toml) run only where torch sees a GPU; elsewhere they are skipped."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("SWAMP_TEST_TALLY")
    if path:
        Path(path).write_text(json.dumps({**_TALLY, "tests": session.testscollected,
                                          "failed": session.testsfailed}) + "\n")


def fail_nth_checkpoint_write(monkeypatch: pytest.MonkeyPatch, n: int, code: int, message: str) -> None:
    """Make the ``n``-th checkpoint write raise ``OSError(code, message)``, as a full disk or a file-size
    limit would, and every other write go through."""
    from training.artifacts import checkpoint as checkpoint_module

    real_write = checkpoint_module.atomic_write_bytes
    calls = {"n": 0}

    def failing_write(path, data):
        calls["n"] += 1
        if calls["n"] == n:
            raise OSError(code, message, str(path))
        real_write(path, data)

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", failing_write)


PAIR_STUDY_ARGS = ["--quick", "--methods", "imp,swamp-n3", "--seeds", "0", "--data-dir", str(DATA_DIR), "--no-progress"]


@pytest.fixture(scope="session")
def pair_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick study of IMP and SWAMP (N = 3), one seed, with analysis settings recorded (tests copy it)."""
    from training.study import main as study_main

    root = tmp_path_factory.mktemp("pair") / "study"
    assert study_main([*PAIR_STUDY_ARGS, "--out", str(root)]) == 0
    (root / "analysis").mkdir()
    (root / "analysis" / "settings.json").write_text("{}")
    return root
