"""Typed readers for config values, shared by the manager and user-endpoint configs.

Each reader takes the raw YAML value and a :class:`Where` (key path, file, line)
and returns the typed value or raises :class:`ConfigError` naming all three. YAML
booleans are not integers here: ``max_blocks: yes`` is a mistake, not ``1``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing as t
import urllib.parse
import uuid

from templates.errors import ConfigError

Reader = t.Callable[[t.Any, "Where"], t.Any]


@dataclasses.dataclass(frozen=True)
class Where:
    """Where a value was written: its dotted key path, file and line."""

    key: str = ""
    source: str | None = None
    line: int | None = None

    def fail(self, problem: str) -> t.NoReturn:
        raise ConfigError(problem, key=self.key or None, source=self.source, line=self.line)

    def child(self, key: t.Any, mapping: t.Any = None) -> Where:
        line = mapping.line_of(key) if hasattr(mapping, "line_of") else None
        path = f"{self.key}.{key}" if self.key else str(key)
        return Where(path, self.source, line if line is not None else self.line)


def shown(value: t.Any, limit: int = 60) -> str:
    """A short, safe rendering of a bad value for an error message."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    kind = "mapping" if isinstance(value, dict) else type(value).__name__
    return f"{text} ({kind})"


def boolean(value: t.Any, where: Where) -> bool:
    if not isinstance(value, bool):
        where.fail(f"expected true or false, got {shown(value)}")
    return value


def string(value: t.Any, where: Where) -> str:
    if not isinstance(value, str):
        where.fail(f"expected a string, got {shown(value)}; quote the value in YAML")
    return value


def integer(minimum: int | None = None, maximum: int | None = None) -> Reader:
    def read(value: t.Any, where: Where) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            where.fail(f"expected a whole number, got {shown(value)}")
        if minimum is not None and value < minimum:
            where.fail(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            where.fail(f"must be at most {maximum}, got {value}")
        return value

    return read


def number(minimum: float | None = None) -> Reader:
    def read(value: t.Any, where: Where) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            where.fail(f"expected a number, got {shown(value)}")
        if not math.isfinite(value):
            where.fail(f"expected a finite number, got {value}")
        if minimum is not None and value < minimum:
            where.fail(f"must be at least {minimum}, got {value}")
        return float(value)

    return read


def optional(inner: Reader) -> Reader:
    """YAML ``null`` means "not set" for every optional key."""

    def read(value: t.Any, where: Where) -> t.Any:
        return None if value is None else inner(value, where)

    return read


def uuid_text(value: t.Any, where: Where) -> str:
    try:
        return str(uuid.UUID(string(value, where)))
    except ValueError:
        where.fail(f"expected a UUID, got {shown(value)}")


def list_of(inner: Reader) -> Reader:
    def read(value: t.Any, where: Where) -> tuple:
        if not isinstance(value, list):
            where.fail(f"expected a list, got {shown(value)}")
        return tuple(
            inner(item, Where(f"{where.key}[{i}]", where.source, where.line))
            for i, item in enumerate(value)
        )

    return read


def http_url(value: t.Any, where: Where) -> str:
    parts = urllib.parse.urlsplit(string(value, where))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        where.fail(f"expected an http:// or https:// URL, got {shown(value)}")
    return value.rstrip("/")


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_size(value: t.Any, where: Where) -> int:
    """A size in bytes: a whole number, or text such as ``512M``, ``8G`` (powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        amount, unit = value, ""
    else:
        text = string(value, where).strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in _UNITS else ""
        amount = text[: len(text) - len(unit)].strip()
        if not amount.isdigit():
            where.fail(f"expected a size such as 512M or 8G, got {shown(value)}")
        amount = int(amount)
    size = amount * _UNITS[unit]
    if size < 1 << 20:
        where.fail(f"must be at least 1M, got {shown(value)}")
    return size


def port(value: t.Any, where: Where) -> int:
    return integer(1, 65535)(value, where)


def unknown_key(key: t.Any, known: t.Iterable[str], where: Where) -> t.NoReturn:
    """Refuse a key nobody reads, suggesting the nearest known one (typos are common)."""
    where.fail(f"unknown key{unknown_hint(key, known)}")


def mapping(value: t.Any, where: Where) -> dict:
    if not isinstance(value, dict):
        where.fail(f"expected a mapping of keys to values, got {shown(value)}")
    return value


def read_section(
    data: dict, readers: dict[str, Reader], where: Where, *, null_is_default: bool = False
) -> dict[str, t.Any]:
    """Read the keys of one mapping; unknown keys are errors, absent keys are left out.

    With ``null_is_default`` a YAML null is treated as if the key were absent.
    """
    out: dict[str, t.Any] = {}
    for key, value in data.items():
        if value is None and null_is_default and key in readers:
            continue
        at = where.child(key, data)
        if key not in readers:
            unknown_key(key, readers, at)
        out[key] = readers[key](value, at)
    return out


def unknown_hint(name: str, known: t.Iterable[str]) -> str:
    """ "; did you mean 'x'?" for a near miss, else nothing."""
    guess = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f"; did you mean '{guess[0]}'?" if guess else ""
