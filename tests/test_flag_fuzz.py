"""Generated flag values for the landscape CLIs: a result, or one ``error:`` line and exit 2 -- and the
inputs untouched, nothing written but the outputs asked for. The same for the optimizer, loss and schedule flags
of ``training.swamp``: a configuration, or one ``error:`` line."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_data_loss import tree_digest

from core.errors import run_cli
from landscape.tools import barrier, hessian, subspace
from training import swamp

JUNK = st.sampled_from(["", " ", "abc", "1e400", "nan", "-inf", "0x10", "1,2", "--", "١"])
COUNT = st.one_of(st.integers(-3, 4).map(str), st.sampled_from(["2**70", str(2**70), str(-2**63)]), JUNK)
SEED = st.one_of(st.integers(-2**70, 2**70).map(str), JUNK)
REAL = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.floats(-1, 2).map(str), JUNK)
EVAL_FLAGS = {"--bn-recal": st.one_of(st.integers(-3, 300).map(str), JUNK), "--seed": SEED,
              "--batch-size": st.one_of(st.integers(-2, 700).map(str), JUNK),
              "--split": st.sampled_from(["test", "train", "both", "neither", ""])}
TOOLS = {
    "barrier": (barrier.main, 2, {"--points": COUNT, **EVAL_FLAGS}),
    "subspace": (subspace.main, 3, {"--samples": COUNT, "--resolution": COUNT, "--margin": REAL, **EVAL_FLAGS}),
    "hessian": (hessian.main, 1, {"--probes": COUNT, "--seed": SEED, "--target-rse": REAL,
                                  "--samples": st.one_of(st.integers(-2, 96).map(str), JUNK),
                                  "--batch-size": st.one_of(st.integers(-2, 700).map(str), JUNK),
                                  "--lanczos-steps": st.one_of(COUNT, st.just("100000")),
                                  "--eigen-tol": REAL,
                                  "--method": st.sampled_from(["hutchinson", "hutchpp", "hutch++", "auto", "exact?",
                                                               ""]),
                                  "--subspace": st.sampled_from(["mask", "full", "both"])}),
}
MODES = {"subspace": ["--plane"], "hessian": ["--top-eigen"]}
# Small defaults a generated flag may override (argparse: the last value wins): with the tools' own (a 21 x 21
# plane, 32 hull samples, 11 points, each BN-recalibrated on 2048 samples) one example can take a minute.
CHEAP = {"hessian": ["--probes", "2", "--samples", "32"],
         "subspace": ["--samples", "4", "--resolution", "3", "--bn-recal", "256"],
         "barrier": ["--points", "3", "--bn-recal", "256"]}


def _flags(tool: str) -> st.SearchStrategy[list[str]]:
    names = TOOLS[tool][2]
    return st.lists(st.sampled_from(sorted(names)), unique=True, max_size=3).flatmap(
        lambda chosen: st.tuples(*(names[n].map(lambda v, n=n: [n, v]) for n in chosen))).map(
        lambda pairs: [token for pair in pairs for token in pair])


def _too_costly(argv: list[str]) -> bool:
    """Valid but huge requests (2**70 points) are the user's to make; they are not what is tested here."""
    limits = {"--points": 8, "--samples": 64, "--resolution": 3, "--probes": 8}
    for flag, value in zip(argv, argv[1:], strict=False):
        try:
            if flag in limits and int(value) > limits[flag]:
                return True
        except ValueError:
            pass
    return False


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_generated_flags_give_a_result_or_one_error_line(tool, tiny_run, tmp_path_factory, capsys):
    main, inputs, _ = TOOLS[tool]
    ckpts = [str(tiny_run / "cycle_01" / f"particle_{p:02d}.safetensors") for p in range(3)][:inputs]
    before = tree_digest(tiny_run)

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(flags=_flags(tool), mode=st.sampled_from([[], *([MODES[tool]] if tool in MODES else [])]))
    def check(flags: list[str], mode: list[str]) -> None:
        argv = [*ckpts, *CHEAP.get(tool, []), *mode, *flags]
        if _too_costly(argv):
            return
        out = tmp_path_factory.mktemp("out")
        argv += ["--json", str(out / "r.json"), "--no-progress"]
        code = run_cli(main, argv)
        captured = capsys.readouterr()
        assert code in (0, 2), (argv, captured.err)
        if code == 2:
            assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, (argv, captured.err)
            assert not any(out.iterdir()), "a refused command writes nothing"
        else:
            assert {p.name for p in out.iterdir()} <= {"r.json", "r.json.partial"}, argv
        assert tree_digest(tiny_run) == before, "the inputs are never changed"

    check()


KWARG_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.integers(-2, 2), st.none(),
                         st.lists(st.floats(-1, 2), max_size=3), st.text(max_size=3))
OPTIMIZER_KWARGS = st.one_of(
    st.dictionaries(st.sampled_from(["betas", "eps", "amsgrad", "nesterov", "dampening", "maximize", "lr",
                                     "momentum", "weight_decay", "foreach", "bogus"]), KWARG_VALUES, max_size=2)
    .map(lambda d: json.dumps(d)),  # json.dumps writes NaN and Infinity, which the parser must refuse or read
    JUNK, st.just("[1, 2]"))
TRAINING_FLAGS = {"--optimizer": st.sampled_from(["sgd", "adam", "adamw", "rmsprop", "ADAM", "", "a.b:c", "x:"]),
                  "--optimizer-kwargs": OPTIMIZER_KWARGS,
                  "--loss": st.sampled_from(["cross-entropy", "mse", "model", "nll", "", "pkg.mod:fn"]),
                  "--label-smoothing": REAL,
                  "--engine": st.sampled_from(["auto", "sequential", "vectorized", "distributed"]),
                  "--prune-schedule": st.sampled_from(["geometric", "linear", "Linear", ""]),
                  "--prune-ratio": REAL,
                  "--cycles": st.sampled_from(["1", "4", "30", "0", "-2", "x"])}


def _training_flags(names: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[list[str]]]:
    return st.lists(st.sampled_from(sorted(names)), unique=True, min_size=1, max_size=4).flatmap(
        lambda chosen: st.tuples(*(names[n].map(lambda v, n=n: [n, v]) for n in chosen)))


def _shown_or_one_error_line(argv: list[str]) -> dict | None:
    """The configuration ``training.swamp ARGV --show-config`` prints, or None after one ``error:`` line, exit 2."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_cli(swamp.main, [*argv, "--show-config"])
        except SystemExit as shown:  # --show-config prints the configuration and exits
            code = shown.code
    assert code in (0, 2), (argv, err.getvalue())
    if code == 2:
        assert err.getvalue().startswith("error: ") and err.getvalue().count("\n") == 1, (argv, err.getvalue())
        return None
    return json.loads(out.getvalue())


@settings(max_examples=60, deadline=None)
@given(flags=_training_flags(TRAINING_FLAGS))
def test_generated_optimizer_and_loss_flags_give_a_configuration_or_one_error_line(flags):
    """The optimizer and loss flags of ``training.swamp``: a resolved configuration (``--show-config``) that
    records them, or one ``error:`` line and exit 2; never a traceback."""
    argv = [token for pair in flags for token in pair]
    shown = _shown_or_one_error_line(argv)
    for flag, value in flags:
        if shown is not None and flag in ("--optimizer", "--loss", "--engine", "--optimizer-kwargs",
                                                     "--prune-schedule"):
            assert shown[flag[2:].replace("-", "_")] == value, (argv, shown)


SCHEDULE_KWARGS = st.one_of(
    st.dictionaries(st.sampled_from(["every", "factor", "gamma", "warmup"]), KWARG_VALUES, max_size=2)
    .map(lambda d: json.dumps(d)), JUNK, st.just("[1, 2]"), st.just('{"every": 3}'))
SCHEDULE_FLAGS = {"--schedule": st.sampled_from(["cosine", "constant", "step", "linear", "STEP", "", "a.b:c", "x:"]),
                  "--schedule-kwargs": SCHEDULE_KWARGS,
                  "--warmup-epochs": st.one_of(st.integers(-2, 14).map(str), COUNT),
                  "--epochs": st.one_of(st.integers(0, 4).map(str), JUNK),
                  "--swa-start": REAL,
                  "--engine": st.sampled_from(["auto", "sequential", "vectorized", "distributed"])}


@settings(max_examples=60, deadline=None)
@given(flags=_training_flags(SCHEDULE_FLAGS))
def test_generated_schedule_flags_give_a_configuration_or_one_error_line(flags):
    """The schedule flags of ``training.swamp``: a configuration that records them, or one ``error:`` line."""
    shown = _shown_or_one_error_line([token for pair in flags for token in pair])
    for flag, value in flags:
        if shown is not None and flag in ("--schedule", "--schedule-kwargs"):
            assert shown[flag[2:].replace("-", "_")] == value, (flags, shown)
