"""Command-line flags made from an options dataclass: one field is one flag (open_lth's hparams idea).

A field declared with :func:`option` carries its help text and, where the flag is not the field as it
is, how the two translate: the flag's name (``--split`` for ``splits``), the flag's value of a field
value (``to_flag``: the default parsed and shown) and back (``to_field``, which may raise
:class:`core.errors.UserError`). :func:`add_dataclass_arguments` adds the flags, each help ending in
the real default; :func:`from_args` builds the dataclass from the parsed flags, by field name.
Validation stays with the dataclass or the tool that uses it.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

_METADATA_KEY = "flag"
_FIELD_DEFAULT = object()  # a flag whose default is the field's (through ``to_flag``)


@dataclass(frozen=True)
class Flag:
    """How one dataclass field appears on the command line.

    ``flag_default``: a flag default other than the field's, e.g. None for "only on a terminal" where the
    library's default is False. ``default_text``: the default in words, required when the flag's default
    is None (the help says what None means).
    """

    help: str
    name: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    to_field: Callable[[Any], Any] | None = None
    to_flag: Callable[[Any], Any] | None = None
    flag_default: Any = _FIELD_DEFAULT
    default_text: str | None = None


def option(default: Any, help: str, **flag: Any) -> Any:
    """A dataclass field with ``default`` that is also a flag (the keywords of :class:`Flag`)."""
    return dataclasses.field(default=default, metadata={_METADATA_KEY: Flag(help, **flag)})


def flag_name(f: dataclasses.Field) -> str:
    """``--field-name``, or the name the field's :class:`Flag` gives."""
    return f.metadata[_METADATA_KEY].name or "--" + f.name.replace("_", "-")


def _value_type(annotation: Any) -> type:
    """``int`` of ``int`` and of ``int | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return typing.get_origin(annotation) or annotation


def _help(f: dataclasses.Field, spec: Flag, default: Any) -> str:
    if default is None:
        if spec.default_text is None:
            raise TypeError(f"option {f.name}: a flag whose default is None needs default_text")
        shown = f": {spec.default_text}"
    else:
        shown = f" {default}"
    return f"{spec.help} (default{shown})".replace("%", "%%")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, only: Collection[str] | None = None,
                            defaults: Mapping[str, Any] | None = None) -> None:
    """One flag per field of the dataclass ``cls`` (or per field named in ``only``), in field order.

    ``defaults`` (field name -> field value) replaces field defaults for one tool. Each flag stores into
    its field's name; a ``bool`` field whose flag defaults to False is a switch (``--per-layer``), any
    other ``bool`` field a ``--x`` / ``--no-x`` pair. Every help ends in the flag's default, except a
    switch's (off).
    """
    defaults = dict(defaults or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = (set(defaults) | set(only or ())) - set(names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        spec: Flag = f.metadata[_METADATA_KEY]
        if f.name in defaults or spec.flag_default is _FIELD_DEFAULT:
            value = defaults.get(f.name, f.default)
            default = spec.to_flag(value) if spec.to_flag else value
        else:
            default = spec.flag_default
        kwargs: dict[str, Any] = {"dest": f.name, "default": default}
        if _value_type(hints[f.name]) is bool:
            switch = default is False
            kwargs["action"] = "store_true" if switch else argparse.BooleanOptionalAction
            kwargs["help"] = spec.help if switch else _help(f, spec, default)
        else:
            kwargs["type"] = None if spec.to_field else _value_type(hints[f.name])
            kwargs.update(metavar=spec.metavar, choices=spec.choices, help=_help(f, spec, default))
        parser.add_argument(flag_name(f), **kwargs)


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The dataclass ``cls`` of the flags :func:`add_dataclass_arguments` added, each value through its
    field's ``to_field``; not validated."""
    values = {}
    for f in dataclasses.fields(cls):
        spec: Flag = f.metadata[_METADATA_KEY]
        value = getattr(args, f.name)
        values[f.name] = spec.to_field(value) if spec.to_field else value
    return cls(**values)
