"""Names and places: endpoint names, where endpoint directories and user endpoint state live.

Free of YAML and Jinja on purpose: the root monitor asks here where a user
endpoint's log goes, and must not load a parser to learn it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from pathlib import Path

from templates.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
ROOT_BASE_DIR = Path("/etc/compute-agent")
USER_BASE_DIR_NAME = ".compute_agent"
BASE_DIR_VARIABLE = "COMPUTE_AGENT_DIR"


def check_endpoint_name(name: str) -> str:
    """A name that is safe as a directory, a systemd unit suffix and a shell word."""
    problem = None
    if not _NAME.fullmatch(name):
        problem = "use 1-128 characters from A-Z a-z 0-9 . _ -"
    elif name.startswith("."):
        problem = "it must not start with a dot"
    else:
        try:
            uuid.UUID(name)
            problem = "it must not be a UUID (UUIDs name registered endpoints)"
        except ValueError:
            pass
    if problem:
        raise ConfigError(f"invalid endpoint name {name!r}: {problem}")
    return name


def base_dir(environ: Mapping[str, str], euid: int, home: Path) -> Path:
    """Where endpoint directories live: $COMPUTE_AGENT_DIR, /etc for root, else ~."""
    if environ.get(BASE_DIR_VARIABLE):
        return Path(environ[BASE_DIR_VARIABLE]).expanduser()
    return ROOT_BASE_DIR if euid == 0 else home / USER_BASE_DIR_NAME


def _under_home(path: str, home: Path) -> Path:
    """A configured path with a leading ``~`` meaning the *user's* home (the manager is root)."""
    if path == "~" or path.startswith("~/"):
        return home / path[2:]
    return Path(path)


def user_endpoint_paths(
    home: str | Path, name: str, endpoint_dir: str | None = None, endpoint_log: str | None = None
) -> tuple[Path, Path]:
    """(state directory, log file) of one user endpoint.

    The template's 4.19 ``paths:`` (``endpoint_dir``, ``endpoint_log``) win;
    otherwise ``~/.compute_agent/NAME`` and ``endpoint.log`` in it. The manager
    (which opens the log) and the user endpoint (which keeps its state there)
    both ask here, so they always agree.
    """
    home = Path(home)
    directory = (
        _under_home(endpoint_dir, home) if endpoint_dir else home / USER_BASE_DIR_NAME / name
    )
    log = _under_home(endpoint_log, home) if endpoint_log else directory / "endpoint.log"
    return directory, log
