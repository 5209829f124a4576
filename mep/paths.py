"""Where endpoints live, and which names are safe to use as directory names.

Every command that takes an endpoint NAME goes through :func:`endpoint_dir`,
so a name can never walk out of the config root (upstream validates names only
in ``configure``).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

NAME_RULE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
SYSTEM_ROOT = Path("/etc/compute-agent")


class BadName(ValueError):
    """An endpoint name that is not safe as a directory name."""


def config_root(config_dir: str | None = None) -> Path:
    """``--config-dir``, then ``COMPUTE_AGENT_DIR``, then /etc for root or ~/.compute_agent."""
    if config_dir:
        return Path(config_dir).expanduser()
    if os.environ.get("COMPUTE_AGENT_DIR"):
        return Path(os.environ["COMPUTE_AGENT_DIR"]).expanduser()
    return SYSTEM_ROOT if os.geteuid() == 0 else Path.home() / ".compute_agent"


def check_name(name: str) -> str:
    if not NAME_RULE.match(name or ""):
        raise BadName(
            f"invalid endpoint name {name!r}: use 1-128 of A-Z a-z 0-9 . _ - and do not start with a dot"
        )
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise BadName(f"invalid endpoint name {name!r}: a name must not be a UUID")


def endpoint_dir(name: str, config_dir: str | None = None) -> Path:
    return config_root(config_dir) / check_name(name)
