"""``configure`` and ``render-user-config``: the admin's commands for endpoint files.

Registered on the ``compute-endpoint`` app by :func:`register`. Bodies import
lazily so ``compute-endpoint`` stays quick to start.
"""

from __future__ import annotations

import typing as t
from pathlib import Path
from typing import Annotated

import typer

EXIT_REFUSED = 1
EXIT_INVALID = 2
NULL_IDENTITY = "00000000-0000-0000-0000-000000000000"


def _fail(message: str, code: int = EXIT_INVALID) -> t.NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def configure(
    name: Annotated[str, typer.Argument(help="Endpoint name: 1-128 of A-Z a-z 0-9 . _ -")],
    multi_user: Annotated[
        bool | None,
        typer.Option(
            "--multi-user/--single-user",
            help="Map submitters to local accounts (default: when run as root).",
        ),
    ] = None,
    contact_email: Annotated[
        str | None,
        typer.Option(help="Support address shown to users (required for multi-user)."),
    ] = None,
    id_mapping_config: Annotated[
        Path | None, typer.Option(help="Identity mapping JSON to copy into the endpoint.")
    ] = None,
    display_name: Annotated[str | None, typer.Option(help="Name shown to users.")] = None,
    high_assurance: Annotated[
        bool,
        typer.Option("--high-assurance", help="Register as high assurance and keep an audit log."),
    ] = False,
    config_dir: Annotated[
        Path | None,
        typer.Option(
            help="Base directory for endpoints (default: $COMPUTE_AGENT_DIR, "
            "/etc/compute-agent as root, else ~/.compute_agent)."
        ),
    ] = None,
    scheduler: Annotated[
        str,
        typer.Option(
            help="Where workers run: local (this host), slurm or pbspro; picks the "
            "example template and schema to start from."
        ),
    ] = "local",
) -> None:
    """Create an endpoint directory with the default config, template and schema."""
    import os

    from templates.endpoint_dir import (
        ConfigureRequest,
        endpoint_dir,
        plan_endpoint_files,
        write_endpoint_dir,
    )
    from templates.errors import ConfigError

    try:
        id_mapping_text = id_mapping_config.read_text() if id_mapping_config else None
        request = ConfigureRequest(
            name=name,
            multi_user=os.geteuid() == 0 if multi_user is None else multi_user,
            contact_email=contact_email,
            display_name=display_name,
            high_assurance=high_assurance,
            id_mapping_text=id_mapping_text,
            scheduler=scheduler,
        )
        directory = endpoint_dir(name, config_dir)
        planned = plan_endpoint_files(directory, request)
        write_endpoint_dir(directory, planned)
    except (ConfigError, OSError, UnicodeDecodeError) as exc:
        _fail(str(exc))
    kind = "multi-user" if request.multi_user else "single-user"
    typer.echo(f"Created {kind} endpoint {name!r} in {directory} (mode 0700):")
    for item in planned:
        typer.echo(f"  {item.name:<38} {item.purpose} ({item.mode:04o})")
    typer.echo("Next steps:")
    if request.multi_user:
        typer.echo("  - write the identity mapping for your site and point")
        typer.echo("    identity_mapping_config_path in config.yaml at it")
    typer.echo("  - adapt user_config_template.yaml.j2 and user_config_schema.json to your site;")
    typer.echo(f"    try them with: compute-endpoint render-user-config -e {name} -o OPTIONS.json")
    typer.echo(f"  - start the endpoint: compute-endpoint start {name}")


MAX_OPTION_FILE = 16 << 20


def _read_json(source: str, what: str) -> t.Any:
    """A JSON file (or stdin), with a message for every way it can be unusable."""
    import json
    import sys

    try:
        if source == "-":
            raw = sys.stdin.buffer.read(MAX_OPTION_FILE + 1)
        else:
            with open(source, "rb") as f:
                raw = f.read(MAX_OPTION_FILE + 1)
        if len(raw) > MAX_OPTION_FILE:
            _fail(f"the {what} is larger than {MAX_OPTION_FILE >> 20} MiB")
        return json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read the {what}: {exc}")
    except json.JSONDecodeError as exc:
        _fail(f"the {what} is not valid JSON: {exc}")
    except RecursionError:
        _fail(f"the {what} nest too deeply to read (keep them to a few levels)")


def _mapped_identity(user: str | None, globus_id: str) -> dict:
    """What a start would give the template for local account ``user`` (default: you)."""
    from identity.policy import local_account, mapped_identity, own_account, passwd_lookup

    if user is None:
        return mapped_identity(own_account(), globus_id)
    entry = passwd_lookup(user)
    if entry is None:
        _fail(f"no local user named {user!r}")
    return mapped_identity(local_account(entry), globus_id)


def _this_runtime() -> dict:
    """What the SDK reports as ``user_runtime`` when submitting from this interpreter."""
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version

    def installed(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {
        "globus_compute_sdk_version": installed("globus-compute-sdk"),
        "globus_sdk_version": installed("globus-sdk"),
        "python_version": sys.version,
        "python": {
            "version": platform.python_version(),
            "version_description": sys.version,
            "version_tuple": list(sys.version_info[:3]),
            "version_info": list(sys.version_info),
            "compiler": platform.python_compiler(),
            "implementation": platform.python_implementation(),
        },
        "platform": {
            "architecture": list(platform.architecture()),
            "machine": platform.machine(),
            "node": platform.node(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "release": platform.release(),
        },
    }


def render_user_config(
    options: Annotated[
        str,
        typer.Option(
            "-o", "--user-options", help="JSON file of user_endpoint_config, or - for stdin."
        ),
    ],
    endpoint: Annotated[str | None, typer.Option("-e", "--endpoint", help="Endpoint name.")] = None,
    template: Annotated[
        Path | None, typer.Option("-t", "--template", help="Template file.")
    ] = None,
    schema: Annotated[
        Path | None, typer.Option("-s", "--user-schema", help="JSON schema file.")
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="Local account to render for (default: you).")
    ] = None,
    user_runtime: Annotated[
        str | None, typer.Option(help="JSON file of the submitter's user_runtime, or -.")
    ] = None,
    config_dir: Annotated[
        Path | None, typer.Option(help="Base directory for endpoints (see configure).")
    ] = None,
    globus_id: Annotated[
        str,
        typer.Option(help="The submitter's Globus identity id (_GC.mapped_identity.globus.id)."),
    ] = NULL_IDENTITY,
) -> None:
    """Render a user endpoint config as a submitter's options would, and check it.

    Prints the YAML on stdout, or the error the submitter would see on stderr (exit 1).
    """
    from templates import files
    from templates.endpoint_dir import endpoint_dir
    from templates.errors import ConfigError
    from templates.manager_config import load_manager_config, manager_config_from_text
    from templates.render_request import RenderRequest
    from templates.rendering import RenderError

    if (endpoint is None) == (template is None):
        _fail("give exactly one of -e ENDPOINT or -t TEMPLATE")
    if options == "-" and user_runtime == "-":
        _fail("only one of -o and --user-runtime can read stdin")
    try:
        if endpoint is not None:
            directory = endpoint_dir(endpoint, config_dir)
            if not directory.is_dir():
                _fail(f"no endpoint directory {directory}; create it with configure")
            manager = load_manager_config(directory / files.CONFIG_NAME)
            template = manager.user_config_template_path
            schema = schema or manager.user_config_schema_path
        else:
            template = template.absolute()
            manager = manager_config_from_text("", template.parent)
        template_text = files.read_text(template, "user config template")
        schema_data = files.read_schema(schema) if schema else None
    except ConfigError as exc:
        _fail(str(exc))
    request = RenderRequest(
        template=template_text,
        schema=schema_data,
        options=_read_json(options, "user options"),
        user_runtime=_read_json(user_runtime, "user runtime") if user_runtime else _this_runtime(),
        mapped_identity=_mapped_identity(user, globus_id),
        parent_config=manager.template_view(),
        include_dir=str(template.parent.absolute()),
    )
    outcome = request.render()
    if isinstance(outcome, RenderError):
        typer.echo(outcome.user_message, err=True)
        typer.echo(f"(for the admin, step {outcome.step}: {outcome.admin_message})", err=True)
        raise typer.Exit(EXIT_REFUSED)
    typer.echo(outcome.yaml_text, nl=False)


def register(app: typer.Typer) -> None:
    app.command("configure")(configure)
    app.command("render-user-config")(render_user_config)
