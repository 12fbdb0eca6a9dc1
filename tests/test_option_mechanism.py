"""The one option mechanism (:mod:`core.options`): a settings dataclass gives its flags, their help with
the defaults, the dataclass of the parsed flags, one error line naming the flag for a bad value, and the
saved JSON that gives the same dataclass back."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from dataclasses import dataclass, fields

import pytest

import core.options
from core.errors import ArgumentParser, UserError, run_cli
from core.options import (
    add_dataclass_arguments,
    check_fields,
    field_problem,
    from_args,
    from_json,
    option,
    repeated,
    to_json,
)


@dataclass(frozen=True)
class Toy:
    points: int = option(11, "points on each line", least=2, metavar="N")
    rate: float = option(0.5, "a rate")
    split: str = option("test", "data split", choices=("train", "test"))
    splits: tuple[str, ...] = option(("train",), "splits", to_field=lambda text: tuple(text.split(",")),
                                     to_flag=",".join)
    limit: int | None = option(None, "an optional limit", default_text="none")
    fast: bool = option(False, "a switch")
    swa: bool = option(True, "a --x / --no-x pair")
    exclude: list[str] = repeated("a pattern; repeatable", metavar="PATTERN")


def _parser(**kwargs) -> ArgumentParser:
    parser = ArgumentParser(prog="toy")
    add_dataclass_arguments(parser, Toy, **kwargs)
    return parser


def _main(argv: list[str]) -> int:
    check_fields(from_args(Toy, _parser().parse_args(argv)))
    return 0


ARGV = ["--points", "3", "--rate", "0.25", "--split", "train", "--splits", "train,test", "--limit", "7", "--fast",
        "--no-swa", "--exclude", "^fc", "--exclude", "^conv"]


def test_the_module_example_runs():
    result = doctest.testmod(core.options)
    assert result.failed == 0 and result.attempted >= 10


def test_flags_to_values_to_json_and_back():
    toy = from_args(Toy, _parser().parse_args(ARGV))
    assert toy == Toy(3, 0.25, "train", ("train", "test"), 7, True, False, ["^fc", "^conv"])
    saved = json.loads(json.dumps(to_json(toy)))
    assert saved["splits"] == ["train", "test"]
    assert from_json(Toy, saved) == toy
    assert from_args(Toy, _parser().parse_args([])) == Toy()
    assert from_json(Toy, {}) == Toy(), "a field the file leaves out takes its default"


def test_help_shows_every_default():
    actions = {a.dest: a for a in _parser()._actions}
    assert actions["points"].help == "points on each line (at least 2) (default 11)"
    assert actions["splits"].help == "splits (default train)"
    assert actions["limit"].help == "an optional limit (default: none)"
    assert actions["fast"].help == "a switch" and actions["fast"].option_strings == ["--fast"]
    assert actions["swa"].help == "a --x / --no-x pair (default on)" and "--no-swa" in actions["swa"].option_strings
    assert actions["exclude"].help == "a pattern; repeatable"
    assert actions["split"].choices == ("train", "test")


def test_unset_flags_are_none_and_the_help_shows_the_program_default():
    parser = _parser(unset=True, defaults={"points": 5, "swa": False}, default_words={"rate": "the preset's"})
    args = parser.parse_args(["--rate", "0.1"])
    assert args.points is None and args.swa is None and args.exclude is None
    help_text = " ".join(parser.format_help().split())
    assert "(at least 2) (default 5)" in help_text and "(default off)" in help_text
    assert "a rate (default the preset's)" in help_text
    assert "--fast, --no-fast" in help_text, "an unset switch must be able to say no"
    assert from_args(Toy, args, base=Toy(points=4)) == Toy(points=4, rate=0.1)


@pytest.mark.parametrize("argv, message", [
    (["--points", "abc"], "error: toy: argument --points: invalid int value: 'abc' (see --help)"),
    (["--split", "dev"], "error: toy: argument --split: invalid choice: 'dev'"),
    (["--points", "1"], "error: --points must be an integer >= 2, not 1"),
])
def test_a_bad_value_is_one_line_naming_the_flag(argv, message, capsys):
    assert run_cli(_main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_a_to_field_value_error_names_the_flag():
    @dataclass(frozen=True)
    class Counted:
        count: int = option(3, "a count", least=1, to_field=int)

    parser = ArgumentParser(prog="counted")
    add_dataclass_arguments(parser, Counted)
    with pytest.raises(UserError, match=r"^--count must be an integer, not 'many'$"):
        from_args(Counted, parser.parse_args(["--count", "many"]))


@pytest.mark.parametrize("values, problem", [
    ({"points": 2.5}, ("points", "an integer >= 2, not 2.5")),
    ({"points": True}, ("points", "an integer >= 2, not True")),
    ({"rate": "fast"}, ("rate", "a number, not 'fast'")),
    ({"split": "dev"}, ("split", "one of train, test, not 'dev'")),
    ({"exclude": ["a", 1]}, ("exclude", "a list of strings, not ['a', 1]")),
    ({"swa": None}, ("swa", "true or false, not None")),
    ({"limit": None, "rate": 1, "splits": ["test"]}, None),
])
def test_field_problem_names_the_first_wrong_value(values, problem):
    assert field_problem(Toy, values) == problem


def test_saved_settings_are_refused_in_one_line():
    with pytest.raises(UserError, match=r"^`points` must be an integer >= 2, not 'x'$"):
        from_json(Toy, {"points": "x"})
    with pytest.raises(UserError, match="`colour` is not a setting"):
        from_json(Toy, {"colour": "red"})


def test_a_field_without_help_is_not_a_flag():
    @dataclass
    class Bare:
        size: int = 3

    with pytest.raises(TypeError, match="declare it with option"):
        add_dataclass_arguments(ArgumentParser(), Bare)


def test_the_engine_flag_takes_the_registered_engines():
    from training.config import RunConfig, build_parser
    from training.engines import ENGINES
    from training.presets import PRESETS

    engine = next(a for a in build_parser("p", "d")._actions if a.dest == "engine")
    assert engine.choices == tuple(ENGINES)
    preset_fields = {k for preset in PRESETS.values() for k in preset}
    for f in fields(RunConfig):  # a default the preset gives is shown as the preset's
        if f.default is None and f.name in preset_fields:
            assert f.metadata["flag"].default_text.startswith("from the preset"), f.name


def test_the_mechanism_imports_no_torch():
    code = "import sys, core.options; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
