"""``compute-endpoint map-identity``: test a mapping file before users hit it.

Admins' top complaint with multi-user endpoints is "Identity failed to map to
a local user name" with no way to see why. This command runs the same mapper
and account policy the manager uses on an identity set of the admin's choice
and, with ``--explain``, shows every document, rule and identity tried.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer

EXIT_MAPPED, EXIT_NO, EXIT_INVALID = 0, 1, 2


def register(app: typer.Typer) -> None:
    app.command("map-identity")(map_identity)


def map_identity(
    config: Annotated[Path, typer.Option("--config", help="Identity mapping JSON file.")],
    identity_set: Annotated[
        str | None,
        typer.Option(
            "--identity-set",
            help="JSON file (or '-' for stdin): a list of Globus identities, or an "
            "object with 'identity_set' (userinfo) or 'identities' (GCS input).",
        ),
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", help="Quick check: one identity with this username.")
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show every document, rule and identity tried.")
    ] = False,
    min_uid: Annotated[int, typer.Option(help="Lowest uid a mapping may run as.")] = 1000,
    allow_system_account: Annotated[
        list[str] | None, typer.Option(help="Account below --min-uid that is allowed (repeat).")
    ] = None,
    allowed_group: Annotated[
        list[str] | None, typer.Option(help="Only members of these groups may run (repeat).")
    ] = None,
    denied_user: Annotated[list[str] | None, typer.Option(help="Never run as (repeat).")] = None,
    manager_uid: Annotated[
        int | None, typer.Option(help="The manager's uid (default: this process's uid).")
    ] = None,
    endpoint_id: Annotated[
        str | None, typer.Option(help="Endpoint id passed to external programs after -s.")
    ] = None,
) -> None:
    """Map an identity set with a mapping file and apply the account policy.

    Prints the local user name and exits 0; exits 1 with the reason on stderr
    if nothing matched or the account policy refuses; exits 2 for an invalid
    mapping file or identity set.
    """
    from identity.external import run_program
    from identity.mapping import NIL_GATEWAY_ID, MappingConfigError, load_mapping_file
    from identity.policy import AccountPolicy, Refused, check_account

    identities = _identities_or_exit(identity_set, username)
    try:
        mapper = load_mapping_file(
            config, storage_gateway=endpoint_id or NIL_GATEWAY_ID, runner=run_program
        )
    except MappingConfigError as error:
        _fail(EXIT_INVALID, f"invalid identity mapping configuration: {error}")
    for warning in mapper.warnings:
        _say(f"warning: {warning}")
    outcome = mapper.map(identities, exhaustive=explain)
    if explain:
        _say(f"identity set: {len(identities)} identities; {len(mapper.documents)} documents")
        for line in outcome.explain():
            _say(f"  {line}")
    if outcome.local_user is None:
        _fail(EXIT_NO, "no mapping matched any identity" + ("" if explain else _hint()))
    _say(f"mapped identity {outcome.matched_identity_id} to local user {outcome.local_user!r}")
    policy = AccountPolicy(
        min_uid=min_uid,
        allow_system_accounts=tuple(allow_system_account or ()),
        allowed_groups=tuple(allowed_group or ()),
        denied_users=tuple(denied_user or ()),
    )
    uid = os.getuid() if manager_uid is None else manager_uid
    verdict = check_account(outcome.local_user, policy, uid)
    if isinstance(verdict, Refused):
        _fail(EXIT_NO, f"refused by the account policy ({verdict.rule}): {verdict.admin_message}")
    if explain:
        _say(f"account policy: allowed (uid {verdict.uid}, groups {list(verdict.group_names)})")
    typer.echo(verdict.name)


def _identities_or_exit(identity_set: str | None, username: str | None) -> list:
    if (identity_set is None) == (username is None):
        _fail(EXIT_INVALID, "give exactly one of --identity-set FILE|- or --username NAME")
    if username is not None:
        return [_identity_for(username)]
    try:
        text = sys.stdin.read() if identity_set == "-" else Path(identity_set).read_text()
        return _identity_list(json.loads(text))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
        _fail(EXIT_INVALID, f"cannot read identity set {identity_set}: {error}")


def _identity_for(username: str) -> dict:
    """A stand-in identity: a stable made-up id, the username, status 'used'."""
    identity_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"compute-agent:map-identity:{username}"))
    return {"id": identity_id, "sub": identity_id, "username": username, "status": "used"}


def _identity_list(data: object) -> list:
    """Accept the shapes admins have at hand: a list, userinfo output, or GCS mapping input."""
    if isinstance(data, dict):
        for key in ("identity_set", "identities"):
            if isinstance(data.get(key), list):
                return data[key]
        if "id" in data or "sub" in data:
            return [data]
    if isinstance(data, list):
        return data
    raise ValueError("expected a JSON list of identity objects")


def _hint() -> str:
    return "; run again with --explain to see every rule tried"


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _fail(code: int, message: str):
    _say(f"error: {message}")
    raise typer.Exit(code)
