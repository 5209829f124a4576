"""A safe YAML loader that remembers on which line each mapping key was written.

Config errors must name the file *and* the line, and a key written twice is a
mistake we refuse instead of silently keeping the last value (PyYAML's default).
Everything else is exactly ``yaml.safe_load``: no Python tags, no code.
"""

from __future__ import annotations

import typing as t

import yaml
from yaml.nodes import MappingNode, ScalarNode

from templates.errors import ConfigError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class LocatedDict(dict):
    """A mapping from YAML; ``line_of(key)`` is the 1-based line where ``key`` was written."""

    line: int | None = None
    key_lines: dict

    def line_of(self, key: t.Any) -> int | None:
        return getattr(self, "key_lines", {}).get(key, self.line)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings are :class:`LocatedDict` and refuse duplicate keys."""


def _refuse_duplicates(loader: _Loader, node: MappingNode) -> None:
    seen: set = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise ConfigError(
                "this key is written twice in the same mapping",
                key=str(key),
                line=key_node.start_mark.line + 1,
            )
        seen.add(key)


def _construct_mapping(loader: _Loader, node: MappingNode) -> LocatedDict:
    _refuse_duplicates(loader, node)
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConfigError(
                "a mapping key must be a plain value, not a list or mapping",
                line=key_node.start_mark.line + 1,
            ) from None
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_located(text: str, source: str | None = None) -> t.Any:
    """Parse one YAML document; syntax errors become :class:`ConfigError` with the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader derives from SafeLoader
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=exc.key, source=source, line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = f"not valid YAML: {exc.problem or exc.context}"
        line = mark.line + 1 if mark else None
        raise ConfigError(problem, source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from None


def plain(value: t.Any) -> t.Any:
    """The same data with every :class:`LocatedDict` turned into a plain ``dict``."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
