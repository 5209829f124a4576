"""``compute-endpoint diagnostic``: one archive an admin can send for help.

It holds versions, each endpoint's configuration, recent logs, status, and
whether the service and the broker answer. Upstream's diagnostic copies every
file verbatim, identity-mapping programs and all. Here, as sosreport does, what
goes in is an allow-list: named files only, each reduced to what helps support
and cannot hold a secret by construction (the config as loaded, known fields
of JSON files, the template's structure with only harmless values, variable
names of env files, a mapping program's name). The log is the one free text; it
passes :func:`scrub`, which masks every shape a secret is known to take. The
archive is written to a new file only (never over a file or through a link).
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import secrets
import socket
import tarfile
import time
import typing as t
import urllib.parse
from pathlib import Path

import typer

from wire.redaction import redact

LOG_TAIL_BYTES = 256 * 1024
# Free text (logs) can only be scrubbed: every pattern a secret is known to take.
_SECRET_NAME = (
    r"[\w.-]*(?:secret|passw(?:or)?d|passphrase|pass|pwd|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|credential|enckey|session[_-]?key)[\w.-]*"
)
SECRET_PATTERNS = [
    # PEM private keys, whole blocks
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
        ),
        "***PRIVATE KEY***",
    ),
    # Authorization headers of any scheme, and bare bearer tokens
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)\w+\s+[^\s\"',]+"), r"\1***"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    # URL credentials, passwords with / or : in them included
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@]+(@)"), r"\1***\2"),
    # NAME=value, NAME: value, "name": "value" where the name says secret; quoted values whole
    (
        re.compile(rf"(?i)({_SECRET_NAME}[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;}}]+)"),
        r"\1***",
    ),
]
# Template keys whose values go into the bundle as written; every other value is masked.
TEMPLATE_KEYS_SHOWN = frozenset(
    {
        "type",
        "engine",
        "provider",
        "launcher",
        "address",
        "partition",
        "queue",
        "account",
        "walltime",
        "nodes_per_block",
        "init_blocks",
        "min_blocks",
        "max_blocks",
        "max_workers",
        "max_workers_per_node",
        "max_workers_per_block",
        "cores_per_worker",
        "mem_per_worker",
        "cores_per_node",
        "mem_per_node",
        "heartbeat_period",
        "heartbeat_threshold",
        "idle_heartbeats_soft",
        "idle_heartbeats_hard",
        "label",
        "debug",
        "cpu_affinity",
        "available_accelerators",
        "strategy",
        "job_name",
        "display_name",
        "amqp_port",
        "encrypted",
        "exclusive",
        "parallelism",
        "ntasks",
        "launch_cmd",
        "overrides",
    }
)
_TEMPLATE_LINE = re.compile(r"^(\s*(?:-\s+)?)([\w.-]+)(\s*:\s*)(.*)$")
_LITERAL = re.compile(r"\"[^\"]*\"|'[^']*'")
_HARMLESS = re.compile(r"(?i)^(?:-?\d+(?:\.\d+)?|true|false|null|~|\{\{[^}]*\}\}|[|>][-+]?)$")


def scrub(text: str) -> str:
    """Free text with every known shape of secret masked (for logs, which cannot be sifted)."""
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return redact(text)


def template_view(text: str) -> str:
    """The template's structure: keys, Jinja logic with its literals masked, and only the
    values of keys known to hold no secret (engine and provider types, sizes, times)."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if "{%" in line or "{#" in line:
            lines.append(_LITERAL.sub("'***'", line))
            continue
        found = _TEMPLATE_LINE.match(line)
        if found is None:
            lines.append(f"{line[: len(line) - len(line.lstrip())]}***" if stripped else "")
            continue
        indent, key, colon, value = found.groups()
        lines.append(f"{indent}{key}{colon}{_value_view(key, value.split(' #', 1)[0].strip())}")
    return "\n".join(lines) + "\n"


def _value_view(key: str, value: str) -> str:
    """A value as shown: a one-level flow mapping pair by pair; a scalar shown if its key is
    known to hold no secret (and even then scrubbed); anything else masked."""
    if value.startswith("{") and value.endswith("}") and not value.startswith("{{"):
        inner = value[1:-1]
        if re.search(r"[{}\[\]]", re.sub(r"\{\{.*?\}\}", "", inner)):
            return "{***}"  # nested: shown no further
        pairs = [pair.partition(":") for pair in inner.split(",")]
        return (
            "{"
            + ", ".join(f"{k.strip()}: {_value_view(k.strip(), v.strip())}" for k, _, v in pairs)
            + "}"
        )
    if not value or _HARMLESS.match(value):
        return value
    if key in TEMPLATE_KEYS_SHOWN and not re.search(r"[{}\[\]]", re.sub(r"\{\{.*?\}\}", "", value)):
        return scrub(value)
    return "***"


def schema_view(text: str) -> str:
    """The options schema without example and default values (the shape is what helps)."""
    try:
        schema = json.loads(text)
    except ValueError as e:
        return f"(not valid JSON: {e.msg})\n"

    def sift(node: t.Any) -> t.Any:
        if isinstance(node, dict):
            return {
                k: "***" if k in ("default", "examples", "const", "example") else sift(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [sift(v) for v in node]
        return node

    return json.dumps(sift(schema), indent=2) + "\n"


def env_names_only(text: str) -> str:
    """An env file (or user_environment.yaml) reduced to its variable names."""
    names = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for separator in ("=", ":"):
            if separator in line:
                names.append(line.split(separator, 1)[0].removeprefix("export ").strip() + "=***")
                break
    return "\n".join(names) + "\n"


MAPPING_FIELDS = frozenset({"DATA_TYPE", "mappings", "command", "timeout_s", "run_as"})
RULE_FIELDS = frozenset({"source", "match", "output", "ignore_case", "literal"})


def mapping_summary(text: str) -> str:
    """The identity mapping's known fields; an external command reduced to its program."""
    try:
        documents = json.loads(text)
    except ValueError as e:
        return f"(not valid JSON: {e.msg})\n"
    if not isinstance(documents, list):
        return "(not a JSON list)\n"
    kept = []
    for document in documents:
        if not isinstance(document, dict):
            continue
        view = {k: v for k, v in document.items() if k in MAPPING_FIELDS}
        if isinstance(view.get("command"), list):
            command = view["command"]
            view["command"] = [str(command[0]) if command else "", *["***"] * (len(command) - 1)]
        if isinstance(view.get("mappings"), list):
            view["mappings"] = [
                {k: v for k, v in rule.items() if k in RULE_FIELDS}
                for rule in view["mappings"]
                if isinstance(rule, dict)
            ]
        kept.append(view)
    return json.dumps(kept, indent=2) + "\n"


def config_view(directory: Path) -> str:
    """The manager config as loaded (every key known, defaults filled in), URLs redacted."""
    from templates.manager_config import load_manager_config

    try:
        view = load_manager_config(directory / "config.yaml").template_view()
    except Exception as e:
        return f"(config.yaml not loadable: {scrub(str(e))})\n"
    shown = {k: scrub(v) if isinstance(v, str) else v for k, v in view.items()}
    return json.dumps(shown, indent=2, default=str) + "\n"


def _known_fields(path: Path, fields: tuple[str, ...]) -> str:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return "(unreadable)\n"
    if not isinstance(document, dict):
        return "(not an object)\n"
    return json.dumps({k: document.get(k) for k in fields if k in document}, indent=2) + "\n"


def _tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - limit))
        return f.read().decode("utf-8", "replace")


def _reachable(url: str) -> str:
    shown = scrub(url)
    try:
        parts = urllib.parse.urlsplit(url)
        default = {"https": 443, "http": 80, "amqps": 5671, "amqp": 5672}.get(parts.scheme, 0)
        host, port = parts.hostname, parts.port or default
    except ValueError:
        return f"{shown}: not a usable URL"
    if not host:
        return f"{shown}: no host"
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=5):
            took = (time.monotonic() - started) * 1000
            return f"{shown}: TCP {host}:{port} answers ({took:.0f} ms)"
    except OSError as e:
        return f"{shown}: TCP {host}:{port} FAILED: {e}"


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
    """Archive member name -> text, for one endpoint directory: an allow-list of files, each
    reduced to what helps (structure, known fields, names); only the log is free text."""
    from mep.lifecycle import endpoint_status

    name = directory.name
    out: dict[str, str] = {
        f"{name}/status.json": json.dumps(endpoint_status(directory), indent=2) + "\n",
        f"{name}/config.json": config_view(directory),
    }
    views = {
        "user_config_template.yaml.j2": template_view,
        "user_config_schema.json": schema_view,
        "user_environment.yaml": env_names_only,
    }
    for file, view in views.items():
        path = directory / file
        if path.is_file():
            out[f"{name}/{file}"] = view(path.read_text(errors="replace"))
    for file, fields in (
        ("endpoint.json", ("endpoint_id",)),
        ("status.json", ("endpoint_id", "pid", "connected", "user_endpoints", "updated")),
    ):
        if (directory / file).is_file():
            out[f"{name}/{file}.fields"] = _known_fields(directory / file, fields)
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
    except Exception as e:  # its text may quote a URL with a password in it
        lines.append(f"service and auth URLs not usable ({type(e).__name__})")
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
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    target = output or Path(f"compute-agent-diagnostic-{stamp}.tar.gz")
    archive = build_archive(directories, env_dir)
    try:  # a new file only: never through a planted link, never over another file
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        typer.echo(f"Error: {target} exists; give another --output", err=True)
        raise typer.Exit(1) from None
    with os.fdopen(fd, "wb") as f:
        f.write(archive)
    typer.echo(str(target))


def register(app: typer.Typer) -> None:
    app.command("diagnostic")(diagnostic)
