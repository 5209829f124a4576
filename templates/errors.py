"""The one error type of :mod:`templates`: a config file or value is wrong.

It carries the key path, the file and the line separately so the manager can
log them for the admin and the CLI can print them, and its text reads like a
compiler diagnostic an admin can act on without opening the source.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration (manager config, rendered user config, template input) is invalid."""

    def __init__(
        self,
        problem: str,
        *,
        key: str | None = None,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.problem = problem
        self.key = key
        self.source = source
        self.line = line
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"{self.key}: {self.problem}" if self.key else self.problem
        line = f"line {self.line}" if self.line is not None else None
        if self.source:
            return ", ".join(filter(None, (self.source, line))) + f": {text}"
        return f"{text} ({line})" if line else text
