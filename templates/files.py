"""The default files shipped in this package, and reading an endpoint's template files.

Reading happens here, at the edge: the template and schema text are read by
whoever may read them (the root monitor opens them for the manager), and
:mod:`templates.rendering` is handed their text.
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
MAX_TEMPLATE_BYTES = 1 << 20
# Where user endpoints' workers run: the default template runs them on this
# host; each other name is a folder of templates/examples holding a template
# and schema for that batch system.
SCHEDULERS = ("local", "slurm", "pbspro")
SCHEDULER_FILES = (TEMPLATE_NAME, SCHEMA_NAME)


def default_text(name: str, scheduler: str = "local") -> str:
    """The text of one shipped default file (see :data:`DEFAULT_FILES`); the template
    and schema come in one flavour per :data:`SCHEDULERS`."""
    if name not in DEFAULT_FILES:
        raise KeyError(f"no default file named {name!r}")
    if scheduler not in SCHEDULERS:
        raise KeyError(f"no scheduler named {scheduler!r}")
    folder = resources.files("templates")
    if scheduler != "local" and name in SCHEDULER_FILES:
        folder = folder.joinpath("examples", scheduler)
    return folder.joinpath(name).read_text(encoding="utf-8")


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
    return parse_schema(read_text(path, "user config schema"), str(path))


def parse_schema(text: str, source: str) -> dict | bool:
    """A schema file's text as a schema; not JSON, or not an object, is a :class:`ConfigError`."""
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the user config schema is not valid JSON: {exc.msg}", source=source, line=exc.lineno
        ) from None
    if not isinstance(schema, dict | bool):
        raise ConfigError("the user config schema must be a JSON object", source=source)
    return schema
