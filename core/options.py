"""Settings dataclasses as command-line flags and saved JSON: one field is one flag (open_lth's hparams idea).

A field declared with :func:`option` (or :func:`repeated`, a repeatable flag) carries its help text and,
where the flag is not the field as it is, how the two translate: the flag's name (``--split`` for
``splits``), the value the help shows (``to_flag``) and the field value of the flag's (``to_field``; a
``ValueError`` there becomes one line naming the flag), and the least value of an integer (``least``).
From the dataclass come:

- the flags (:func:`add_dataclass_arguments`), each help ending in its default: ``(default 0)``,
  ``(default on)`` for a ``--x`` / ``--no-x`` pair, ``(default: WORDS)`` where the default is None, and
  ``(at least N)`` before it where the field has ``least``; a help that already says ``(default`` is kept;
- the dataclass of the parsed flags (:func:`from_args`);
- the check of values against the field types, choices and least values (:func:`field_problem`,
  :func:`check_fields`: one :class:`core.errors.UserError` line naming the flag);
- the saved settings (:func:`to_json`, :func:`from_json`).

Other validation (ranges between fields, what a value means) stays with the dataclass or the tool.

Example:
    >>> import argparse
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Scan:
    ...     points: int = option(11, "points on each line", least=2, metavar="N")
    ...     split: str = option("test", "data to evaluate on", choices=("train", "test"))
    ...     progress: bool | None = option(None, "progress bars", default_text="only on a terminal")
    >>> parser = argparse.ArgumentParser(prog="scan")
    >>> add_dataclass_arguments(parser, Scan)
    >>> print(parser.format_help().split("options:")[1].strip())  # doctest: +NORMALIZE_WHITESPACE
    -h, --help            show this help message and exit
    --points N            points on each line (at least 2) (default 11)
    --split {train,test}  data to evaluate on (default test)
    --progress, --no-progress
                          progress bars (default: only on a terminal)
    >>> scan = from_args(Scan, parser.parse_args(["--points", "3"]))
    >>> scan
    Scan(points=3, split='test', progress=None)
    >>> to_json(scan)
    {'points': 3, 'split': 'test', 'progress': None}
    >>> from_json(Scan, to_json(scan)) == scan
    True
    >>> check_fields(Scan(points=1))
    Traceback (most recent call last):
    core.errors.UserError: --points must be an integer >= 2, not 1
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import UserError

_METADATA_KEY = "flag"
_FIELD_DEFAULT = object()  # a flag whose default is the field's (through ``to_flag``)

# The Python values a field of each type accepts, and how a message names them.
_KINDS: dict[Any, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"), int: ((int,), "an integer"), float: ((int, float), "a number"),
    str: ((str,), "a string"), list: ((list, tuple), "a list of strings"), tuple: ((list, tuple), "a list of strings")}


@dataclass(frozen=True)
class Flag:
    """How one dataclass field appears on the command line.

    ``flag_default``: a flag default other than the field's, e.g. None for "only on a terminal" where the
    library's default is False. ``default_text``: the default in words, required where the flag's default
    is None (the help says what None means). ``least``: the least value of an integer field.
    ``repeatable``: the flag may be given several times, each adding one item to a list.
    """

    help: str
    name: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    to_field: Callable[[Any], Any] | None = None
    to_flag: Callable[[Any], Any] | None = None
    flag_default: Any = _FIELD_DEFAULT
    default_text: str | None = None
    least: int | None = None
    repeatable: bool = False


def option(default: Any, help: str, **flag: Any) -> Any:
    """A dataclass field with ``default`` that is also a flag (the keywords of :class:`Flag`)."""
    return dataclasses.field(default=default, metadata={_METADATA_KEY: Flag(help, **flag)})


def repeated(help: str, **flag: Any) -> Any:
    """A list field, empty by default, given as a repeatable flag (one item each time)."""
    return dataclasses.field(default_factory=list, metadata={_METADATA_KEY: Flag(help, repeatable=True, **flag)})


def flag_of(name: str) -> str:
    """``--field-name`` of the field ``field_name``."""
    return "--" + name.replace("_", "-")


def flag_name(f: dataclasses.Field) -> str:
    """The flag of the field ``f``: ``--field-name``, or the name its :class:`Flag` gives."""
    spec = f.metadata.get(_METADATA_KEY)
    return spec.name if spec is not None and spec.name else flag_of(f.name)


def _spec(f: dataclasses.Field) -> Flag:
    if _METADATA_KEY not in f.metadata:
        raise TypeError(f"field {f.name} is not a flag; declare it with option() or repeated()")
    return f.metadata[_METADATA_KEY]


def _value_type(annotation: Any) -> tuple[Any, bool]:
    """``(int, False)`` of ``int``, ``(int, True)`` of ``int | None``, ``list`` of ``list[str]``; None for a
    container of anything but strings."""
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = typing.get_args(annotation)
        optional = type(None) in args
        (annotation,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple) and typing.get_args(annotation)[:1] != (str,):
        return None, optional
    return origin or annotation, optional


def _help(f: dataclasses.Field, spec: Flag, default: Any, words: str | None) -> str:
    """The help of ``f``'s flag, ending in the default that it shows."""
    text = spec.help
    if spec.least is not None:
        text += f" (at least {spec.least})"
    if "(default" not in text:
        if words is not None:
            text += f" (default {words})"
        elif isinstance(default, bool):
            text += f" (default {'on' if default else 'off'})"
        elif default is not None:
            text += f" (default {default})"
        elif spec.default_text is None:
            raise TypeError(f"option {f.name}: a flag whose default is None needs default_text")
        else:
            text += f" (default: {spec.default_text})"
    return text.replace("%", "%%")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, only: Collection[str] | None = None,
                            defaults: Mapping[str, Any] | None = None, unset: bool = False,
                            default_words: Mapping[str, str] | None = None) -> None:
    """One flag per field of the dataclass ``cls`` (or per field named in ``only``), in field order.

    Each flag stores into its field's name. ``defaults`` (field name -> field value) replaces field
    defaults for one program. With ``unset``, every flag's default is None, so that a given flag can be told
    from an absent one; the help still shows the default that the program applies later.
    ``default_words`` (field name -> words) replaces the default the help shows, for a default decided
    later (``11; 3 for --quick studies``).

    A ``bool`` field whose flag defaults to False is a switch (``--per-layer``), any other ``bool`` field a
    ``--x`` / ``--no-x`` pair; a :func:`repeated` field collects every use. A flag with ``to_field`` keeps its
    text for :func:`from_args`; any other converts it to the field's type (argparse refuses what does not
    convert). Every help ends in the flag's default, except a switch's (off) and a repeated flag's (none).
    """
    defaults, words = dict(defaults or {}), dict(default_words or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = (set(defaults) | set(words) | set(only or ())) - set(names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        spec = _spec(f)
        value = defaults.get(f.name, f.default)
        if f.name in defaults or spec.flag_default is _FIELD_DEFAULT:
            default = spec.to_flag(value) if spec.to_flag else value
        else:
            default = spec.flag_default
        value_type = _value_type(hints[f.name])[0]
        if value_type is None:
            raise TypeError(f"option {f.name}: a list flag holds strings")
        kwargs: dict[str, Any] = {"dest": f.name, "default": None if unset else default, "metavar": spec.metavar}
        if spec.repeatable:
            kwargs.update(action="append", help=spec.help.replace("%", "%%"))
            if not unset:
                kwargs["default"] = f.default_factory()  # type: ignore[misc]
        elif value_type is bool:
            switch = not unset and default is False
            del kwargs["metavar"]
            kwargs["action"] = "store_true" if switch else argparse.BooleanOptionalAction
            kwargs["help"] = spec.help.replace("%", "%%") if switch else _help(f, spec, default, words.get(f.name))
        else:
            kwargs.update(type=None if spec.to_field else value_type, choices=spec.choices,
                          help=_help(f, spec, default, words.get(f.name)))
        parser.add_argument(flag_name(f), **kwargs)


def _to_field(f: dataclasses.Field, value: Any, kind: str) -> Any:
    """The field value of the flag value ``value``: through ``to_field``, whose ``ValueError`` becomes one
    :class:`UserError` line naming the flag."""
    spec = _spec(f)
    if spec.to_field is None:
        return value
    try:
        return spec.to_field(value)
    except ValueError:
        raise UserError(f"{flag_name(f)} must be {kind}, not {value!r}") from None


def from_args(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """The dataclass ``cls`` of the flags :func:`add_dataclass_arguments` added, each value through its
    field's ``to_field``; not validated (:func:`check_fields`).

    ``base``: the dataclass whose values the flags not given (None, as with ``unset``) keep; without it, every
    flag's value, its default included, goes through ``to_field``.
    """
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name)
        if value is not None or base is None:
            values[f.name] = _to_field(f, value, _describe(f, hints[f.name], bounded=False))
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


def _describe(f: dataclasses.Field, annotation: Any, bounded: bool = True) -> str:
    """What a value of the field must be, in words: its type (``an integer``), and with ``bounded`` its least
    value (``an integer >= 2``)."""
    kind = _KINDS.get(_value_type(annotation)[0], ((object,), "a value"))[1]
    least = f.metadata[_METADATA_KEY].least if _METADATA_KEY in f.metadata else None
    return kind if least is None or not bounded else f"{kind} >= {least}"


def field_problem(cls: type, values: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(field, what it must be)`` for the first value in ``values`` of a field of the dataclass ``cls`` of
    the wrong type, outside its choices or below its least value; None if all fit. None is a value only where
    the field's default is None or its type allows it. Fields of other types are not checked.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Run:
        ...     epochs: int = option(2, "epochs")
        >>> field_problem(Run, {"epochs": 1.5}), field_problem(Run, {"epochs": 3})
        (('epochs', 'an integer, not 1.5'), None)
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value_type, optional = _value_type(hints[f.name])
        if f.name not in values or value_type not in _KINDS:
            continue
        value = values[f.name]
        if value is None and (optional or f.default is None):
            continue
        what = f"{_describe(f, hints[f.name])}, not {value!r}"
        accepted = _KINDS[value_type][0]
        if not isinstance(value, accepted) or (isinstance(value, bool) and value_type is not bool):
            return f.name, what
        if value_type in (list, tuple) and not all(isinstance(v, str) for v in value):
            return f.name, what
        spec = f.metadata.get(_METADATA_KEY)
        if spec is not None and spec.least is not None and value < spec.least:
            return f.name, what
        if spec is not None and spec.choices is not None and spec.to_field is None and value not in spec.choices:
            return f.name, f"one of {', '.join(spec.choices)}, not {value!r}"
    return None


def check_fields(settings: Any) -> None:
    """Raise :class:`UserError` naming the flag of the first field of the dataclass ``settings`` whose value
    :func:`field_problem` refuses (``--points must be an integer >= 2, not 1``)."""
    problem = field_problem(type(settings), to_json(settings))
    if problem:
        f = next(f for f in dataclasses.fields(settings) if f.name == problem[0])
        raise UserError(f"{flag_name(f)} must be {problem[1]}")


def to_json(settings: Any) -> dict[str, Any]:
    """The fields of the dataclass ``settings`` as a JSON object (tuples as lists), to save beside results."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


def from_json(cls: type, saved: Mapping[str, Any]) -> Any:
    """The dataclass ``cls`` of saved settings (:func:`to_json`; a missing field takes its default), its
    values checked by :func:`field_problem`: one :class:`UserError` line naming the field otherwise."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(saved) - names)
    if unknown:
        raise UserError(f"`{unknown[0]}` is not a setting; the settings are {', '.join(sorted(names))}")
    problem = field_problem(cls, saved)
    if problem:
        raise UserError("`{}` must be {}".format(*problem))
    hints = typing.get_type_hints(cls)
    return cls(**{k: tuple(v) if _value_type(hints[k])[0] is tuple else v for k, v in saved.items()})
