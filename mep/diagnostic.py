"""``compute-endpoint diagnostic``: one archive an admin can send for help.

It holds versions, each endpoint's configuration with secrets removed, recent
logs, status, and whether the service and the broker answer. Upstream's
diagnostic copies every file verbatim, identity-mapping programs and all; here
every text passes :func:`scrub` first, the env files keep only variable names,
and external mapping commands keep only the program name.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import socket
import tarfile
import time
import typing as t
import urllib.parse
from pathlib import Path

import typer

from wire.amqp import redact

LOG_TAIL_BYTES = 256 * 1024
SECRET_KEY = re.compile(r"(?i)(secret|passw(or)?d|token|api[_-]?key|credential)")
SECRET_VALUE = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(
        r"(?i)((?:client_)?secret|passw(?:or)?d|token|enckey)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"
    ),
]


def scrub(text: str) -> str:
    """Remove URL passwords, bearer tokens and ``secret=...``-style values from text."""
    text = redact(text)
    for pattern in SECRET_VALUE:
        text = pattern.sub(
            lambda m: m.group(1) + (m.group(2) if m.lastindex and m.lastindex > 1 else "") + "***",
            text,
        )
    return text


def env_names_only(text: str) -> str:
    """An env file reduced to its variable names: values are the secrets."""
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            names.append(line.split("=", 1)[0].removeprefix("export ").strip() + "=***")
    return "\n".join(names) + "\n"


def mapping_summary(text: str) -> str:
    """The identity mapping with external commands reduced to their program."""
    try:
        documents = json.loads(text)
    except ValueError as e:
        return f"(not valid JSON: {e})\n"
    if not isinstance(documents, list):
        return "(not a JSON list)\n"
    for document in documents:
        if isinstance(document, dict) and isinstance(document.get("command"), list):
            command = document["command"]
            document["command"] = [
                str(command[0]) if command else "",
                *["***"] * (len(command) - 1),
            ]
    return scrub(json.dumps(documents, indent=2)) + "\n"


def _tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - limit))
        return f.read().decode("utf-8", "replace")


def _reachable(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    default = {"https": 443, "http": 80, "amqps": 5671, "amqp": 5672}.get(parts.scheme, 0)
    host, port = parts.hostname, parts.port or default
    if not host:
        return f"{redact(url)}: no host"
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=5):
            return f"{redact(url)}: TCP {host}:{port} answers ({(time.monotonic() - started) * 1000:.0f} ms)"
    except OSError as e:
        return f"{redact(url)}: TCP {host}:{port} FAILED: {e}"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    lines = [
        f"python {platform.python_version()} ({platform.platform()})",
        f"host {socket.getfqdn()}",
    ]
    for dist in ("compute-agent", "globus-sdk", "parsl", "pika", "dill", "jinja2"):
        try:
            lines.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            lines.append(f"{dist} not installed")
    return "\n".join(lines) + "\n"


def endpoint_files(directory: Path, env_dir: Path) -> dict[str, str]:
    """Archive member name -> scrubbed text, for one endpoint directory."""
    from mep.lifecycle import endpoint_status

    name = directory.name
    out: dict[str, str] = {
        f"{name}/status.json": json.dumps(endpoint_status(directory), indent=2) + "\n"
    }
    for file in (
        "config.yaml",
        "user_config_template.yaml.j2",
        "user_config_schema.json",
        "user_environment.yaml",
        "endpoint.json",
        "status.json",
    ):
        path = directory / file
        if path.is_file():
            out[f"{name}/{file}"] = scrub(path.read_text(errors="replace"))
    for path in directory.glob("*identity_mapping*.json"):
        out[f"{name}/{path.name}"] = mapping_summary(path.read_text(errors="replace"))
    if (directory / "endpoint.log").is_file():
        out[f"{name}/endpoint.log"] = scrub(_tail(directory / "endpoint.log"))
    env_file = env_dir / f"{name}.env"
    if env_file.is_file():
        out[f"{name}/{name}.env"] = env_names_only(env_file.read_text(errors="replace"))
    return out


def connectivity(directory: Path) -> str:
    from mep.registration import resolve_urls
    from templates.manager_config import load_manager_config

    lines = []
    try:
        config = load_manager_config(directory / "config.yaml")
        service, auth = resolve_urls(config.service_url, config.auth_url, os.environ)
        lines += [f"service {_reachable(service)}", f"auth {_reachable(auth)}"]
    except Exception as e:
        lines.append(f"config not loadable: {scrub(str(e))}")
    try:
        broker = json.loads((directory / "status.json").read_text()).get("broker")
        lines.append(
            f"broker {_reachable(broker)}" if broker else "broker: unknown (never started)"
        )
    except (FileNotFoundError, ValueError):
        lines.append("broker: unknown (never started)")
    return "\n".join(lines) + "\n"


def build_archive(directories: t.Iterable[Path], env_dir: Path) -> bytes:
    members = {"versions.txt": _versions()}
    for directory in directories:
        members.update(endpoint_files(directory, env_dir))
        members[f"{directory.name}/connectivity.txt"] = connectivity(directory)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member, text in sorted(members.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"compute-agent-diagnostic/{member}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def diagnostic(
    name: str = typer.Argument(None, help="One endpoint (default: every endpoint)."),
    output: Path = typer.Option(None, "--output", "-o", help="Where to write the .tar.gz."),
    config_dir: str = typer.Option(None, "--config-dir", help="Config root."),
    env_dir: Path = typer.Option(
        Path("/etc/compute-agent"), "--env-dir", help="Where NAME.env files live."
    ),
) -> None:
    """Write a .tar.gz of versions, redacted configs, recent logs and connectivity checks.

    Secrets stay out: URL passwords, tokens and secret values are removed, env
    files keep only variable names, identity-mapping programs only their name.
    """
    from mep.lifecycle import _existing_dir, config_root

    if name:
        directories = [_existing_dir(name, config_dir)]
    else:
        directories = [p.parent for p in sorted(config_root(config_dir).glob("*/config.yaml"))]
    target = output or Path(f"compute-agent-diagnostic-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(build_archive(directories, env_dir))
    typer.echo(str(target))


def register(app: typer.Typer) -> None:
    app.command("diagnostic")(diagnostic)
