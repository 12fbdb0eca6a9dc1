"""Shared fixtures: tiny real runs made once per test session (MNIST-1D, a few seconds each)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
import torch

from training.swamp import main as swamp_main

# The tests' models are tiny: one thread is faster than two, and keeps results identical between the
# in-process runs and the subprocess runs (which get OMP_NUM_THREADS=1).
torch.set_num_threads(1)

TINY_ARGS = ["--cycles", "3", "--epochs", "2", "--particles", "3", "--rewind-epochs", "1", "--no-progress"]


def command_module(name: str):
    """The module whose ``main()`` ``python -m NAME`` runs: ``NAME`` itself, or the module a command alias
    (``landscape.barrier``, ``training.study``, ``studies.grid``) names in its ``TARGET``, read from the alias's
    source: an alias is never imported as a module (``from landscape import align`` must stay the function)."""
    spec = importlib.util.find_spec(name)
    source = spec.loader.get_source(name) if spec is not None and spec.loader is not None else None
    targets = [node.value.value for node in ast.parse(source or "").body
               if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
               and any(isinstance(t, ast.Name) and t.id == "TARGET" for t in node.targets)]
    return importlib.import_module(targets[0] if targets else name)


def one_line(call, *args, **kwargs) -> str:
    """The message of the UserError ``call(*args, **kwargs)`` raises, asserted to be one line."""
    from core.errors import UserError

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


def linear_net(weight: list[list[float]]) -> torch.nn.Linear:
    """A bias-free ``nn.Linear`` holding exactly ``weight`` (rows: outputs)."""
    w = torch.tensor(weight)
    net = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        net.weight.copy_(w)
    return net


def make_run(out: Path, *extra: str) -> Path:
    """Run ``python -m training.swamp`` in-process with tiny settings into ``out``."""
    assert swamp_main([*TINY_ARGS, "--out", str(out), "--data-dir", str(DATA_DIR), *extra]) == 0
    return out


DATA_DIR = Path(__file__).resolve().parent.parent / "data"
REPOSITORY = DATA_DIR.parent
SOURCE_PACKAGES = ("core", "training", "landscape", "studies")


def source_modules(root: Path = REPOSITORY, packages: tuple[str, ...] = SOURCE_PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root`` by its dotted name (a package by its folder's), found by walking
    the folders: a new module is included without being listed anywhere."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"pytest received signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM interrupts the suite as Ctrl-C does (issue 27, case 12): the running test's `finally` blocks and
    # fixtures' teardowns stop what it started (distributed ranks, workers), so no process outlives the suite
    # and pytest never waits on one at exit. Python's default for SIGTERM ends the process on the spot instead.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    if os.environ.get("SWAMP_TEST_TALLY"):
        from core.errors import UserError

        original = UserError.__init__

        def counting(self, *args, **kwargs):
            _TALLY["user_errors"] += 1
            original(self, *args, **kwargs)

        UserError.__init__ = counting


# The `slow` marker (pyproject.toml): `python -m pytest -m "not slow"` is the README's smoke subset. Whole
# modules that train runs or studies, run notebooks or kill processes in most tests, and the tests of the other
# modules that took over 2 s each under `--durations` (on a loaded two-core machine, about 0.8 s on a quiet
# one); what is left runs in about a minute. The full suite (what CI runs) still runs everything.
SLOW_MODULES = frozenset("""
    test_study test_study_family test_reliability test_engines test_launchers test_readme_commands
    test_control_figures test_controls test_realisations test_flag_fuzz test_figures test_any_model
    test_runtime_switches test_first_impressions test_gpu_check test_cuda
""".split())
SLOW_TESTS = frozenset("""
    test_sigterm_stops_a_run_with_one_line_and_resume_finishes_it
    test_damaged_measurement_is_refused_naming_the_file test_damaged_config_of_a_sub_run_is_refused
    test_file_size_limit_stops_the_study_and_the_same_command_finishes_it
    test_normalized_is_the_norm_weighted_block_trace
    test_rescaling_leaves_normalized_unchanged_and_divides_the_raw_trace test_pyhessian_backend_agrees_statistically
    test_adaptive_hutchpp_on_the_exact_hessian test_native_trace_within_three_stderr_of_exact
    test_hutchpp_exact_once_sketch_covers_dimension test_hutchpp_standard_error_is_calibrated
    test_lanczos_top_eigenvalue_and_density test_module_entry_point test_checkpoint_json_has_contract_keys
    test_target_rse_stops_the_default_method_early test_module_entry_point_reports_errors_without_traceback
    test_a_one_shot_run_cannot_be_resumed_as_iterative_pruning
    test_the_analysis_tools_start_without_plotting_or_scipy test_mnist1d_is_generated_offline_and_cached
    test_a_shuffled_copy_and_an_aligned_model_compute_the_same_outputs test_cli_hull_and_plane
    test_plane_scan_resumes_from_its_partial_file
    test_independent_networks_have_a_barrier_particles_of_one_ticket_hardly test_run_modes
    test_figures_name_their_checkpoints_units_and_definitions
    test_the_line_fast_path_is_the_general_formula_to_the_bit test_barrier_of_a_model_with_itself_is_zero_and_flat
    test_an_endless_data_set_is_refused_at_once test_memory_bombs_are_refused_at_once_in_bounded_memory
    test_a_file_size_limit_stops_training_cleanly_and_the_run_resumes test_a_closed_pipe_stops_quietly
    test_overwrite_replaces_a_run_and_an_empty_folder test_an_earlier_output_is_replaced
    test_overwrite_refuses_a_run_holding_a_user_file_and_keeps_a_lock_file_of_another_program
    test_same_seed_gives_identical_checkpoints test_one_particle_without_swa_is_plain_imp
    test_swamp_plus_and_rewinding_to_the_previous_solution test_damaged_metrics_are_refused_with_the_remedy_that_works
    test_a_fakedata_checkpoint_is_probed_with_fakedata_inputs test_data_are_read_only_where_the_user_says
    test_resnet18_in_train_mode_runs_and_is_left_untouched test_status_on_a_fifo_log_ends_at_once_in_a_fresh_process
    test_the_commands_and_their_output_flags_are_found
""".split())


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.path.stem in SLOW_MODULES or getattr(item, "originalname", item.name) in SLOW_TESTS:
        item.add_marker(pytest.mark.slow)


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
    from core.artifacts import checkpoint as checkpoint_module

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
def pair_study_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick study of IMP and SWAMP (N = 3), one seed, two cycles, as the study command leaves it; trained once
    for the session, so tests copy it (:func:`copy_study`) and never change it."""
    from studies.grid.cli import main as study_main

    root = tmp_path_factory.mktemp("pair") / "study"
    assert study_main([*PAIR_STUDY_ARGS, "--out", str(root)]) == 0
    return root


def copy_study(study: Path, parent: Path) -> Path:
    """A copy of ``study`` at ``parent/study``."""
    return Path(shutil.copytree(study, parent / "study"))


@pytest.fixture(scope="session")
def pair_study(pair_study_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`pair_study_runs` with analysis settings recorded (tests copy it)."""
    root = copy_study(pair_study_runs, tmp_path_factory.mktemp("pair-analysed"))
    (root / "analysis").mkdir()
    (root / "analysis" / "settings.json").write_text("{}")
    return root
