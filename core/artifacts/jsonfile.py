"""The one bounded JSON reader of the toolkit: every JSON file or flag value it reads goes through here.

A JSON text from a file or a flag is untrusted: Python's decoder alone turns ~100,000 nesting levels into a
``RecursionError``, an integer of more than 4,300 digits into a ``ValueError`` that is not a
``JSONDecodeError``, and reads ``/dev/zero`` or a FIFO for ever. Here every such input is one
:class:`BadJSON` (a :class:`core.errors.UserError`) whose message says what is wrong:

- a file must be a regular file (not a FIFO, device or directory) of at most :data:`MAX_JSON_BYTES` bytes,
  opened without blocking and read no further than that bound, and UTF-8;
- the text must be JSON, nested at most :data:`MAX_JSON_DEPTH` levels, its integers at most
  :data:`MAX_INT_DIGITS` digits long.

Callers put the message into their own line (which file, what to do): ``f"{path} is damaged ({err}); ..."``.

Example:
    >>> parse_json('{"a": [1, 2.5, null]}')
    {'a': [1, 2.5, None]}
    >>> try:
    ...     parse_json("[" * 100 + "]" * 100)
    ... except BadJSON as err:
    ...     print(err)
    nested deeper than 64 levels
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from core.errors import UserError

MAX_JSON_BYTES = 64 * 2**20  # no JSON file the toolkit writes comes near this
MAX_JSON_DEPTH = 64  # the toolkit's own files nest at most about 6 levels
MAX_INT_DIGITS = 40  # time stamps in nanoseconds have 19 digits, seeds 10


class BadJSON(UserError):
    """A JSON text or file that cannot be read within the bounds; the message is what is wrong with it
    (``not JSON: Expecting value: line 1 column 1 (char 0)``), for the caller to frame."""


class JSONTooLarge(BadJSON):
    """JSON nested deeper or with longer integers than this module allows (valid JSON all the same)."""


class _LongInteger(ValueError):
    pass


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _LongInteger(text)
    return int(text)


def _depth(value: Any) -> int:
    """The nesting depth of a decoded JSON value (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(text: str | bytes) -> Any:
    """``text`` decoded as JSON within the bounds of this module; :class:`BadJSON` otherwise.

    Args:
        text: the JSON text (bytes are decoded as UTF-8).

    Returns:
        The decoded value (``NaN`` and ``Infinity`` are accepted, as :func:`json.dumps` writes them).
    """
    try:
        value = json.loads(text, parse_int=_integer)
    except _LongInteger as err:
        raise JSONTooLarge(f"an integer has {len(str(err).lstrip('-')):,} digits, more than {MAX_INT_DIGITS}") \
            from None
    except RecursionError:
        raise JSONTooLarge(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except UnicodeDecodeError as err:
        raise BadJSON(f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except ValueError as err:  # JSONDecodeError, or an integer Python itself refuses to convert
        raise BadJSON(f"not JSON: {(str(err).splitlines() or [type(err).__name__])[0]}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise JSONTooLarge(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in the file ``path``, read within the bounds of this module.

    The file is opened without blocking (a FIFO cannot hang the reader) and must be a regular file of at
    most :data:`MAX_JSON_BYTES` bytes; it is never read past that bound.

    Raises:
        BadJSON: not a regular file, too large, not UTF-8, not JSON, nested too deep, an integer too long.
        OSError: the file cannot be opened (missing, forbidden, ...): the CLIs report it as one line.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        ...     _ = fh.write('{"cycle": 3}')
        >>> read_json(fh.name)
        {'cycle': 3}
    """
    fd = os.open(Path(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BadJSON("not a regular file")
        if info.st_size > MAX_JSON_BYTES:
            raise BadJSON(f"{info.st_size:,} bytes, more than {MAX_JSON_BYTES:,}")
        data = fh.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise BadJSON(f"more than {MAX_JSON_BYTES:,} bytes")
    return parse_json(data)


def brief_repr(value: Any) -> str:
    """``repr(value)``, cut to 60 characters (a file's values can be long)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_object_flag(text: str, flag: str, example: str) -> dict[str, Any]:
    """A flag's value parsed as a JSON object (``--model-kwargs '{"hidden": 64}'``); one :class:`UserError`
    line naming ``flag`` and showing ``example`` otherwise."""
    try:
        value = parse_json(text)
    except BadJSON as err:
        raise UserError(f"{flag} is not valid JSON ({err}); give a JSON object such as '{example}'") from None
    if not isinstance(value, dict):
        raise UserError(f"{flag} must be a JSON object such as '{example}'")
    return value
