"""Turning a submitter's ``user_endpoint_config`` into values a template cannot be tricked by.

Every string, dict keys included, becomes a double-quoted YAML scalar, so
whatever a user sends (newlines, ``key: value``, ``{{``, ``!!python``) stays one
plain value wherever the admin writes ``{{ option }}``. Templates keep working
as with the official endpoint: ``{{ d.key }}`` looks up the raw key,
``{{ walltime == '"00:10:00"' }}`` compares the quoted form, and rendering a
whole list or mapping prints valid YAML flow instead of Python repr.

Before quoting, :func:`check_options` refuses anything that is not plain JSON
data of bounded size and depth, so neither the schema check nor the template
engine ever sees a set, bytes, NaN, a 10**5000 integer or a 100 000-deep list.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import re
import typing as t
from collections.abc import Iterator

MAX_DEPTH = 32
MAX_SIZE = 1 << 20  # characters of text, plus one per value
INT_BOUND = 1 << 63
_ASTRAL = re.compile("([\U00010000-\U0010ffff])")


class OptionError(ValueError):
    """User options that are not plain, bounded JSON data (the message is for the user)."""


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise OptionError(f"{path}: text is not valid Unicode") from None


def _check_leaf(value: t.Any, path: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -INT_BOUND <= value < INT_BOUND:
            raise OptionError(f"{path}: integer too large (it must fit in 64 bits)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise OptionError(f"{path}: {value} is not a number JSON can carry")
    elif isinstance(value, str):
        _check_text(value, path)
    else:
        raise OptionError(
            f"{path}: a {type(value).__name__} is not a valid option type "
            "(use strings, numbers, booleans, null, lists and objects)"
        )


def check_options(options: t.Any, label: str = "user_endpoint_config") -> None:
    """Refuse what is not a JSON object of plain values within the size and depth bounds.

    Walks without recursion so a hostile nesting depth cannot exhaust the stack.
    """
    if not isinstance(options, dict):
        raise OptionError(f"{label} must be an object, not {type(options).__name__}")
    size = 0
    stack: list[tuple[t.Any, str, int]] = [(options, label, 0)]
    while stack:
        value, path, depth = stack.pop()
        size += 1
        if depth > MAX_DEPTH:
            raise OptionError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise OptionError(f"{path}: key {key!r} is not a string")
                _check_text(key, path)
                size += len(key)
                stack.append((item, f"{path}.{key}", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        else:
            _check_leaf(value, path)
            size += len(value) if isinstance(value, str) else 0
        if size > MAX_SIZE:
            raise OptionError(f"{label} is too large (over {MAX_SIZE} characters)")


def quote(text: str) -> str:
    """A double-quoted scalar that YAML reads back as exactly ``text``.

    JSON quoting, except characters beyond the BMP use YAML's ``\\U`` escape:
    PyYAML does not join JSON's surrogate pairs and would corrupt them.
    """
    parts = []
    for run in _ASTRAL.split(text):
        if len(run) == 1 and ord(run) > 0xFFFF:
            parts.append(f"\\U{ord(run):08x}")
        else:
            parts.append(json.dumps(run)[1:-1])
    return '"' + "".join(parts) + '"'


_MINTED: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("minted", default=None)


@contextlib.contextmanager
def minting() -> Iterator[set[str]]:
    """Collect the quoted text of every :class:`QuotedStr` made meanwhile (one render's)."""
    token = _MINTED.set(set())
    try:
        yield t.cast(set, _MINTED.get())
    finally:
        _MINTED.reset(token)


class QuotedStr(str):
    """A user string in its quoted form; the sandbox cannot reach ``_raw``."""

    _raw: str

    def __new__(cls, raw: str) -> QuotedStr:
        made = super().__new__(cls, quote(raw))
        made._raw = raw
        minted = _MINTED.get()
        if minted is not None:
            minted.add(str.__str__(made))
        return made

    def __repr__(self) -> str:
        return str.__str__(self)


class _Null(str):
    """How a user's null renders: the YAML word ``null`` (a string, as officially)."""

    def __repr__(self) -> str:
        return "null"


NULL = _Null("null")


class YamlFloat(float):
    """A float whose text YAML 1.1 reads back as a float (``1e+20`` alone would be a string)."""

    def __str__(self) -> str:
        text = repr(float(self))
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text

    __repr__ = __str__


class QuotedList(list):
    def __str__(self) -> str:
        return flow(self)

    __repr__ = __str__


class QuotedDict(dict):
    """Keys are :class:`QuotedStr`; a lookup by the raw key finds the quoted one."""

    def _key(self, key: t.Any) -> t.Any:
        if isinstance(key, str) and not dict.__contains__(self, key):
            return quote(key)
        return key

    def __getitem__(self, key: t.Any) -> t.Any:
        return dict.__getitem__(self, self._key(key))

    def __contains__(self, key: t.Any) -> bool:
        return dict.__contains__(self, self._key(key))

    def get(self, key: t.Any, default: t.Any = None) -> t.Any:
        return dict.get(self, self._key(key), default)

    def __str__(self) -> str:
        return flow(self)

    __repr__ = __str__


def flow(value: t.Any) -> str:
    """YAML flow text of a value inside a list or mapping: every string double-quoted.

    Python's repr of a tuple or list (what Jinja prints for ``d | dictsort`` or
    ``d.items() | list``) would put a user's quoted text inside YAML plain
    scalars, where a comma or colon in it makes structure. Here strings already
    quoted stay as they are and every other string is quoted.
    """
    if isinstance(value, QuotedStr | _Null):
        return str.__str__(value)
    if isinstance(value, str):
        return quote(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(YamlFloat(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow_key(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    return quote(str(value))


# YAML allows an implicit key of at most 1024 characters; a longer one needs the
# explicit "? " indicator, or a researcher's long dict key makes the config invalid.
IMPLICIT_KEY_LIMIT = 512


def _flow_key(key: t.Any) -> str:
    text = flow(key)
    return f"? {text}" if len(text) > IMPLICIT_KEY_LIMIT else text


def finalize(value: t.Any) -> t.Any:
    """What ``{{ value }}`` prints: collections as safe YAML flow, anything else unchanged."""
    if isinstance(value, dict | list | tuple | set | frozenset):
        return flow(value)
    return value


def quote_value(value: t.Any) -> t.Any:
    """The quoted form of checked JSON data (see :func:`check_options`)."""
    if isinstance(value, str):
        return QuotedStr(value)
    if value is None:
        return NULL
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return YamlFloat(value)
    if isinstance(value, list):
        return QuotedList(quote_value(v) for v in value)
    return QuotedDict((QuotedStr(k), quote_value(v)) for k, v in value.items())


def quote_options(options: dict) -> dict[str, t.Any]:
    """Top-level keys stay variable names; everything below them is quoted."""
    return {key: quote_value(value) for key, value in options.items()}


def unquote(value: t.Any) -> t.Any:
    """The submitter's original data back from its quoted form (for ``tojson``)."""
    if isinstance(value, QuotedStr):
        return value._raw
    if isinstance(value, _Null):
        return None
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [unquote(v) for v in value]
    return value
