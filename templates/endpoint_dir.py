"""Endpoint names, where an endpoint's directory lives, and creating it (``configure``).

What to write is decided by :func:`plan_endpoint_files` from plain data; only
:func:`write_endpoint_dir` touches the disk, creating the directory 0700 and each
file with its exact mode whatever the umask, and removing everything it made if
any step fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import yaml

from templates import files
from templates.errors import ConfigError
from templates.manager_config import (
    ENVIRONMENT_NAME,
    SCHEMA_NAME,
    TEMPLATE_NAME,
    manager_config_from_text,
)
from templates.paths import ROOT_BASE_DIR, base_dir, check_endpoint_name


def endpoint_dir(name: str, config_dir: str | Path | None = None) -> Path:
    """The directory of endpoint ``name``; ``config_dir`` replaces the base directory."""
    if config_dir:
        base = Path(config_dir).expanduser()
    else:
        base = base_dir(os.environ, os.geteuid(), Path.home())
    return base.absolute() / check_endpoint_name(name)


@dataclasses.dataclass(frozen=True)
class ConfigureRequest:
    """What the admin asked ``configure`` for; ``id_mapping_text`` is the given file's text."""

    name: str
    multi_user: bool
    contact_email: str | None = None
    display_name: str | None = None
    high_assurance: bool = False
    id_mapping_text: str | None = None
    scheduler: str = "local"


@dataclasses.dataclass(frozen=True)
class PlannedFile:
    name: str
    text: str
    mode: int
    purpose: str


def _check_request(request: ConfigureRequest) -> None:
    check_endpoint_name(request.name)
    if request.scheduler not in files.SCHEDULERS:
        raise ConfigError(
            f"unknown scheduler {request.scheduler!r}: choose one of {', '.join(files.SCHEDULERS)}"
        )
    if request.multi_user and not request.contact_email:
        raise ConfigError(
            "Email must be specified for a multi-user endpoint: add --contact-email ADDRESS "
            "(people whose tasks fail need someone to ask)"
        )
    if request.id_mapping_text is not None:
        if not request.multi_user:
            raise ConfigError("--id-mapping-config needs a multi-user endpoint (--multi-user)")
        try:
            mapping = json.loads(request.id_mapping_text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the identity mapping file is not valid JSON: {exc}") from None
        if not isinstance(mapping, list):
            raise ConfigError(
                "the identity mapping file must hold a JSON list of mapping documents"
            )


def _config_text(directory: Path, request: ConfigureRequest, id_mapping_name: str | None) -> str:
    keys: dict[str, object] = {}
    if request.display_name:
        keys["display_name"] = request.display_name
    if request.contact_email:
        keys["email"] = request.contact_email
    if id_mapping_name:
        keys["identity_mapping_config_path"] = str(directory / id_mapping_name)
    if request.high_assurance:
        keys["high_assurance"] = True
        keys["audit_log_path"] = str(directory / "audit.log")
    if request.multi_user:
        keys["public"] = True
    generated = yaml.safe_dump(keys, sort_keys=False) if keys else ""
    heading = "\n# Written by `compute-endpoint configure`:\n" if keys else ""
    return files.default_text(files.CONFIG_NAME) + heading + generated


def plan_endpoint_files(directory: Path, request: ConfigureRequest) -> list[PlannedFile]:
    """The files ``configure`` writes, with their text and mode (pure)."""
    _check_request(request)
    id_mapping_name = None
    planned = []
    if request.multi_user:
        if request.id_mapping_text is not None:
            id_mapping_name = files.IDENTITY_MAPPING_NAME
            text, purpose = request.id_mapping_text, "identity mapping"
        else:
            id_mapping_name = files.EXAMPLE_IDENTITY_MAPPING_NAME
            text, purpose = files.default_text(id_mapping_name), "identity mapping (example)"
        planned.append(PlannedFile(id_mapping_name, text, 0o600, purpose))
    template_mode = 0o644 if request.multi_user else 0o600
    planned[:0] = [
        PlannedFile(
            files.CONFIG_NAME,
            _config_text(directory, request, id_mapping_name),
            0o600,
            "manager config",
        ),
        PlannedFile(
            TEMPLATE_NAME,
            files.default_text(TEMPLATE_NAME, request.scheduler),
            template_mode,
            "user endpoint template",
        ),
        PlannedFile(
            SCHEMA_NAME,
            files.default_text(SCHEMA_NAME, request.scheduler),
            0o600,
            "user options schema",
        ),
        PlannedFile(
            ENVIRONMENT_NAME,
            files.default_text(ENVIRONMENT_NAME),
            0o600,
            "user endpoint environment",
        ),
    ]
    return planned


def _write_file(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(text)


def write_endpoint_dir(directory: Path, planned: list[PlannedFile]) -> None:
    """Create ``directory`` (0700; it must not exist) holding ``planned``; all or nothing."""
    if directory.exists() or directory.is_symlink():
        raise ConfigError(f"{directory} already exists; choose another name or remove it first")
    parent_mode = 0o755 if directory.parent == ROOT_BASE_DIR else 0o700
    directory.parent.mkdir(mode=parent_mode, parents=True, exist_ok=True)
    os.mkdir(directory, 0o700)
    try:
        os.chmod(directory, 0o700)
        for item in planned:
            _write_file(directory / item.name, item.text, item.mode)
        config_path = directory / files.CONFIG_NAME
        manager_config_from_text(config_path.read_text(), directory, str(config_path))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
