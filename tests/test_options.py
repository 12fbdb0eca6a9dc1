"""The flags of the landscape tools are their options dataclasses: a flag per field, its default the field's
and shown in ``--help``, and parsed back by name into the dataclass."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from core.errors import UserError
from core.options import add_dataclass_arguments, flag_name, from_args, option
from landscape.tools import barrier, subspace
from landscape.tools.artifacts import EvalOptions
from landscape.tools.cli import eval_options
from landscape.tools.hessian import options_from_args
from landscape.tools.hessian_output import build_parser as hessian_parser
from landscape.tools.hessian_report import HessianOptions

#: tool -> (parser, options dataclass, flags -> options, the tool's defaults where not the dataclass's)
TOOLS = {
    "barrier": (barrier.build_parser, EvalOptions, eval_options, {"splits": ("train", "test")}),
    "subspace": (subspace.build_parser, EvalOptions, eval_options, {}),
    "hessian": (hessian_parser, HessianOptions, options_from_args, {}),
}

#: every field away from its default, as flags and as the dataclass they must give
NON_DEFAULT = {
    EvalOptions: (["--split", "train", "--bn-recal", "0", "--seed", "7", "--batch-size", "3", "--device", "cpu",
                   "--data-dir", "elsewhere", "--progress", "--trust-code"],
                  EvalOptions(("train",), 0, 7, 3, "cpu", "elsewhere", True, True)),
    HessianOptions: (["--method", "hutchinson", "--probes", "9", "--samples", "all", "--batch-size", "5",
                      "--subspace", "full", "--per-layer", "--top-eigen", "--density", "--lanczos-steps", "4",
                      "--lanczos-runs", "2", "--target-rse", "0.5", "--backend", "pyhessian", "--seed", "11",
                      "--progress", "--eigen-tol", "0.01"],
                     HessianOptions("hutchinson", 9, None, 5, "full", True, True, True, 4, 2, 0.5, "pyhessian", 11,
                                    True, 0.01)),
}


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_field_is_a_flag_with_the_field_default_shown_in_help(tool, capsys):
    make_parser, cls, to_options, tool_defaults = TOOLS[tool]
    parser = make_parser()
    actions = _actions(parser)
    parsed = to_options(parser.parse_args([]))  # stderr is captured, not a terminal: --progress is off
    for f in dataclasses.fields(cls):
        action = actions[f.name]
        assert flag_name(f) in action.option_strings
        assert getattr(parsed, f.name) == tool_defaults.get(f.name, f.default), f.name
        if isinstance(action, argparse._StoreTrueAction):
            continue  # a switch: off unless given
        shown = "(default: " if action.default is None else f"(default {action.default})"
        assert shown in action.help, (f.name, action.help)


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_the_defaults_give_the_default_dataclass(tool, capsys):
    make_parser, cls, to_options, tool_defaults = TOOLS[tool]
    assert to_options(make_parser().parse_args([])) == dataclasses.replace(cls(), **tool_defaults)


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_non_default_values_round_trip(tool):
    make_parser, cls, to_options, _ = TOOLS[tool]
    argv, expected = NON_DEFAULT[cls]
    assert all(getattr(expected, f.name) != f.default for f in dataclasses.fields(cls))
    assert to_options(make_parser().parse_args(argv)) == expected
    if cls is HessianOptions:
        assert to_options(make_parser().parse_args(["--samples", "300", "--no-progress"])) \
            == HessianOptions(samples=300, progress=False)


def test_split_both_and_seed_help():
    args = subspace.build_parser().parse_args(["--split", "both"])
    assert eval_options(args).splits == ("train", "test")
    for make_parser in (barrier.build_parser, subspace.build_parser, hessian_parser):
        assert "(default 0)" in _actions(make_parser())["seed"].help


def test_validation_still_names_the_flag():
    with pytest.raises(UserError, match="--samples must be a positive number or 'all', not 'many'"):
        options_from_args(hessian_parser().parse_args(["--samples", "many"]))
    with pytest.raises(UserError, match="--bn-recal must be >= 0"):
        eval_options(barrier.build_parser().parse_args(["--bn-recal", "-1"]))


def test_a_none_default_must_say_what_it_means():
    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        size: int | None = option(None, "a size")

    with pytest.raises(TypeError, match="default_text"):
        add_dataclass_arguments(argparse.ArgumentParser(), Undocumented)


def test_from_args_is_by_name():
    @dataclasses.dataclass(frozen=True)
    class Two:
        first: int = option(1, "first")
        second: str = option("b", "second", name="--other", choices=("a", "b"))

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Two, defaults={"first": 5})
    assert from_args(Two, parser.parse_args(["--other", "a"])) == Two(5, "a")
    assert "(default 5)" in parser.format_help()
