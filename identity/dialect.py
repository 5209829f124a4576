"""The expression dialect of Globus Connect Server identity mapping, as pure functions.

Admins' existing GCS / Globus Compute mapping files must behave the same here,
so the rules follow the GCS dialect:

- ``match`` must match the whole source. Only ``. ? * | ( )`` are special; every
  other character (``^ $ + { } [ ]`` included) is literal.
- ``\\`` escapes one of ``. ? * | ( ) \\``; ``\\<digit>`` passes through to the
  regular-expression engine as GCS does (a back reference). Any other escape,
  a lazy quantifier (``*?``, ``??``) and a leading ``*``/``?`` are rejected.
- ``literal: true`` makes the whole expression a plain string comparison.
- ``source``/``output`` interpolate ``{field}`` from the identity and ``{N}``
  from the match groups (output only); ``\\{`` keeps a brace from being read
  as a reference.

Where GCS's own translation misreads an expression (its look-behind lets
``\\\\^`` turn ``^`` into an anchor, its literal mode leaves ``\\.``
half-escaped, and ``a|b`` is anchored per branch), this module does what the
dialect documents instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SPECIAL = frozenset(".?*|()")
ESCAPABLE = SPECIAL | {"\\"}
QUANTIFIERS = frozenset("?*")

_REFERENCE = re.compile(r"\\[\s\S]|\{([^{}]*)\}")


class DialectError(ValueError):
    """A ``match``, ``source`` or ``output`` expression the dialect does not allow."""


def translate_match(expression: str) -> str:
    """Return the Python regular expression (without anchors) for a GCS match expression."""
    parts: list[str] = []
    previous = ""  # the previous token: "" at the start, else a token kind
    position = depth = 0
    while position < len(expression):
        char = expression[position]
        if char == "\\":
            escaped = expression[position + 1 : position + 2]
            if not escaped:
                raise DialectError(f"{expression!r}: a trailing '\\' escapes nothing")
            if escaped not in ESCAPABLE and not escaped.isdigit():
                raise DialectError(
                    f"{expression!r}: invalid escape '\\{escaped}' "
                    "(only \\. \\? \\* \\| \\( \\) \\\\ and \\<digit> are allowed)"
                )
            parts.append("\\" + escaped)
            previous = "atom"
            position += 2
            continue
        if char in QUANTIFIERS:
            _check_quantifier(expression, char, previous)
            previous = "quantifier"
        elif char in SPECIAL:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth < 0:
                raise DialectError(f"{expression!r}: ')' at position {position} closes nothing")
            previous = char
        else:
            previous = "atom"
        parts.append(char if char in SPECIAL else re.escape(char))
        position += 1
    if depth:
        raise DialectError(f"{expression!r}: {depth} '(' left unclosed")
    return "".join(parts)


def _check_quantifier(expression: str, char: str, previous: str) -> None:
    """Reject quantifiers that GCS rejects or that would have nothing to repeat."""
    if previous == "":
        raise DialectError(f"{expression!r}: invalid leading wildcard '{char}'")
    if previous == "quantifier":
        raise DialectError(
            f"{expression!r}: '{char}' may not follow another '*' or '?' "
            "(lazy and repeated quantifiers are not part of the dialect)"
        )
    if previous in "(|":
        raise DialectError(f"{expression!r}: '{char}' after '{previous}' has nothing to repeat")


def nested_repetition(expression: str) -> bool:
    """True if a ``*`` repeats a group that itself contains ``*``, as in ``(.*)*``.

    Such patterns take exponential time on a non-matching source of a few
    dozen characters; GCS accepts them, so the loader only warns.
    """
    open_groups: list[bool] = []
    closed_had_star = False
    position = 0
    while position < len(expression):
        char = expression[position]
        if char == "\\":
            position, closed_had_star = position + 2, False
            continue
        if char == "*" and closed_had_star:
            return True
        if char == "*":
            open_groups = [True] * len(open_groups)
        closed_had_star = False
        if char == "(":
            open_groups.append(False)
        elif char == ")" and open_groups:
            closed_had_star = open_groups.pop()
        position += 1
    return False


def compile_match(expression: str, *, ignore_case: bool = False, literal: bool = False):
    """Compile a match expression, or raise DialectError; callers use ``fullmatch``.

    The body is wrapped in a non-capturing group so that a top-level ``a|b``
    is anchored as a whole (GCS anchors only the outer branches).
    """
    body = re.escape(expression) if literal else translate_match(expression)
    try:
        return re.compile(f"(?:{body})", re.IGNORECASE if ignore_case else 0)
    except re.error as error:
        raise DialectError(f"{expression!r}: {error}") from None


@dataclass(frozen=True)
class Reference:
    """One ``{name}`` in a source or output expression."""

    text: str
    name: str

    @property
    def group(self) -> int | None:
        """The match-group number for ``{N}``, None for an identity field."""
        return int(self.name) if self.name.isdigit() else None


def references(template: str) -> list[Reference]:
    """Every ``{name}`` reference in a source/output expression, escapes skipped."""
    return [
        Reference(found.group(0), found.group(1))
        for found in _REFERENCE.finditer(template)
        if found.group(1) is not None
    ]


class MissingValue(LookupError):
    """A reference whose value is absent, null or not a string: the rule cannot apply."""


def interpolate(template: str, identity: dict, groups: tuple = ()) -> str:
    """Fill a source/output expression from an identity and the match groups.

    Raises MissingValue (naming the reference) rather than producing a
    half-filled name: a null e-mail must skip the rule, not map to "None".
    """

    def value(found: re.Match) -> str:
        name = found.group(1)
        if name is None:
            return found.group(0)
        if name.isdigit():
            index = int(name)
            result = groups[index] if index < len(groups) else None
            if result is None:
                raise MissingValue(f"match group {{{name}}} did not take part in the match")
            return result
        result = identity.get(name)
        if result is None:
            raise MissingValue(f"field {name!r} is missing or null")
        if not isinstance(result, str):
            raise MissingValue(f"field {name!r} is not a string ({type(result).__name__})")
        return result

    return _REFERENCE.sub(value, template)
