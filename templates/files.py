"""The default files shipped in this package, and reading an endpoint's template files.

Reading happens here, at the edge, so :mod:`templates.rendering` stays pure: the
manager reads the template, schema and include files (as root, before dropping
privileges) and hands their text over.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from templates.errors import ConfigError
from templates.manager_config import ENVIRONMENT_NAME, SCHEMA_NAME, TEMPLATE_NAME

CONFIG_NAME = "config.yaml"
EXAMPLE_IDENTITY_MAPPING_NAME = "example_identity_mapping_config.json"
IDENTITY_MAPPING_NAME = "identity_mapping_config.json"
DEFAULT_FILES = (
    CONFIG_NAME,
    TEMPLATE_NAME,
    SCHEMA_NAME,
    ENVIRONMENT_NAME,
    EXAMPLE_IDENTITY_MAPPING_NAME,
)
_INCLUDE_SUFFIXES = (".j2", ".jinja", ".yaml", ".yml")
MAX_TEMPLATE_BYTES = 1 << 20


def default_text(name: str) -> str:
    """The text of one shipped default file (see :data:`DEFAULT_FILES`)."""
    if name not in DEFAULT_FILES:
        raise KeyError(f"no default file named {name!r}")
    return resources.files("templates").joinpath(name).read_text(encoding="utf-8")


def read_text(path: Path, what: str) -> str:
    """A config file's text; unreadable, too large or not UTF-8 is a :class:`ConfigError`."""
    try:
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise ConfigError(
                f"the {what} is larger than {MAX_TEMPLATE_BYTES} bytes", source=str(path)
            )
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what}: {exc}", source=str(path)) from None


def read_schema(path: Path | None) -> dict | bool | None:
    """The user-options JSON schema, or None when there is none (no validation)."""
    if path is None or not path.exists():
        return None
    try:
        schema = json.loads(read_text(path, "user config schema"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the user config schema is not valid JSON: {exc.msg}",
            source=str(path),
            line=exc.lineno,
        ) from None
    if not isinstance(schema, dict | bool):
        raise ConfigError("the user config schema must be a JSON object", source=str(path))
    return schema


def read_template_files(directory: Path) -> dict[str, str]:
    """Templates next to the main one, for ``{% include %}``; none if the dir is unreadable."""
    found: dict[str, str] = {}
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.suffix in _INCLUDE_SUFFIXES and entry.is_file():
            try:
                found[entry.name] = read_text(entry, "template")
            except ConfigError:
                continue
    return found
