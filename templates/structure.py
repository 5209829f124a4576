"""A researcher's text stays inside the one YAML scalar the admin put it in, or nothing renders.

Every string that comes from a submitter (options, keys, ``user_runtime``,
``gecos``) is JSON-quoted (:mod:`templates.quoting`), which is enough when the
template writes ``{{ x }}`` as a whole value. Written beside literal text, the
quotes become ordinary characters of a plain scalar, and in a flow mapping
``x, max_blocks: 99`` adds a key while ``a #x`` cuts the admin's text short.

So rendering marks where each quoted string lands: :func:`mark` wraps every
occurrence in an expression's output with two private-use characters (quoting
escapes every non-ASCII character, so a submitter cannot forge them), then
:func:`locate` strips the marks and remembers the spans. :func:`find_breakout`
scans the YAML and accepts a span only if it lies inside a single scalar token,
or touches no token at all (a comment). Anything else, a span that crosses into
a key, an entry, an anchor, a tag or a comment, is a value changing the
structure, and the config is refused. The check runs on the very text that is
then loaded, so what is checked is what runs.
"""

from __future__ import annotations

import dataclasses
import typing as t
from collections.abc import Iterable

import yaml

OPEN, CLOSE = "\ue000", "\ue001"


@dataclasses.dataclass(frozen=True)
class Breakout:
    """Where a submitter's value changes the structure: for the admin's message."""

    line: int  # 1-based, in the rendered text
    text: str  # that line
    value: str  # the quoted value, as rendered
    before: str  # the admin's text just before it on that line

    def template_lines(self, template: str) -> list[int]:
        """Template lines that write an expression right after the same literal text."""
        anchor = self.before.strip()[-12:]
        found = []
        for number, line in enumerate(template.splitlines(), start=1):
            at = line.find(anchor) if anchor else -1
            if at >= 0 and "{{" in line[at + len(anchor) : at + len(anchor) + 3]:
                found.append(number)
        return found


def _spans(text: str, quoted: Iterable[str]) -> list[tuple[int, int]]:
    """Non-overlapping occurrences of the quoted strings in ``text``, longest first at a tie."""
    found = []
    for needle in quoted:
        start = text.find(needle)
        while start >= 0:
            found.append((start, start + len(needle)))
            start = text.find(needle, start + 1)
    found.sort(key=lambda span: (span[0], -span[1]))
    chosen, end = [], -1
    for start, stop in found:
        if start >= end:
            chosen.append((start, stop))
            end = stop
    return chosen


def mark(text: str, quoted: t.Collection[str]) -> str:
    """``text`` with every quoted string in it wrapped in marks; marked parts are left alone."""
    if not quoted:
        return text
    pieces = []
    for number, part in enumerate(_outside_marks(text)):
        if number % 2:  # already marked by an inner expression (a macro's, a block set's)
            pieces.append(part)
            continue
        last = 0
        for start, stop in _spans(part, quoted):
            pieces += [part[last:start], OPEN, part[start:stop], CLOSE]
            last = stop
        pieces.append(part[last:])
    return "".join(pieces)


def _outside_marks(text: str) -> list[str]:
    """Alternating unmarked and marked parts (marked parts keep their marks)."""
    parts, position = [], 0
    while True:
        start = text.find(OPEN, position)
        if start < 0:
            parts.append(text[position:])
            return parts
        stop = text.find(CLOSE, start)
        stop = len(text) if stop < 0 else stop + 1
        parts += [text[position:start], text[start:stop]]
        position = stop


def locate(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """The text without marks, and the spans that were marked (nested marks flattened)."""
    text, spans, opened, depth = [], [], 0, 0
    length = 0
    for char in marked:
        if char == OPEN:
            if depth == 0:
                opened = length
            depth += 1
        elif char == CLOSE and depth:
            depth -= 1
            if depth == 0:
                spans.append((opened, length))
        else:
            text.append(char)
            length += 1
    return "".join(text), spans


def find_breakout(text: str, spans: list[tuple[int, int]]) -> Breakout | None:
    """The first span that is not inside one scalar token nor wholly outside every token."""
    if not spans:
        return None
    tokens = [
        (token.start_mark.index, token.end_mark.index, isinstance(token, yaml.ScalarToken))
        for token in yaml.scan(text, Loader=yaml.SafeLoader)
    ]
    for start, stop in spans:
        touched = [(a, b, scalar) for a, b, scalar in tokens if a < stop and b > start]
        if not touched:
            continue  # a comment, or between tokens
        if len(touched) == 1 and touched[0][2] and touched[0][0] <= start and stop <= touched[0][1]:
            continue
        line = text.count("\n", 0, start)
        line_start = text.rfind("\n", 0, start) + 1
        return Breakout(line + 1, text.splitlines()[line], text[start:stop], text[line_start:start])
    return None
