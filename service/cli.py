"""``compute-service``: run and administer the self-hosted compute service."""

from __future__ import annotations

import contextlib
import json
import os

import typer

DEFAULT_DB = "sqlite:///" + os.path.join(
    os.environ.get("STATE_DIRECTORY", os.path.expanduser("~")), "compute-service.db"
)

app = typer.Typer(
    name="compute-service",
    help=(
        "The self-hosted compute service: the REST API the official Globus "
        "Compute SDK and endpoints talk to, with Globus-Auth-shaped tokens and "
        "RabbitMQ routing."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
client_app = typer.Typer(help="Manage API clients (credentials bound to identities).")
app.add_typer(client_app, name="client")
policy_app = typer.Typer(
    help="Manage authentication policies that endpoints name in authentication_policy."
)
app.add_typer(policy_app, name="policy")

DbOption = typer.Option(DEFAULT_DB, "--db", envvar="COMPUTE_SERVICE_DB", help="Database URL.")
AmqpOption = typer.Option(
    ...,
    "--amqp-url",
    envvar="COMPUTE_SERVICE_AMQP_URL",
    help="RabbitMQ URL of the service's own account (administrator tag).",
)
BrokerApiOption = typer.Option(
    "",
    "--broker-api",
    envvar="COMPUTE_SERVICE_BROKER_API",
    help="RabbitMQ management API base URL (default: the broker host, port 15672, /api).",
)
LinkedOption = typer.Option([], "--linked", help="Linked identities (repeatable).")


def open_database(db: str):
    """The session factory for ``db``, or a clear message and exit status 2."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from service import store

    try:
        return store.open_database(db)
    except (SQLAlchemyError, ArgumentError, ImportError, ValueError) as e:
        try:
            shown = make_url(db).render_as_string(hide_password=True)
        except ArgumentError:
            shown = "(unparseable URL)"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        typer.echo(f"cannot open the database {shown}: {reason}", err=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def database(db: str, write: bool = False):
    """One session on ``db`` (a transaction committed on success when ``write``), then close."""
    from service import store

    sessions = open_database(db)
    try:
        with sessions.begin() if write else sessions() as s:
            yield s
    finally:
        store.dispose(sessions)


@app.callback()
def _root() -> None:
    """Keep the command group shape even while it has a single command."""


@app.command()
def version() -> None:
    """Print the compute-agent version."""
    from importlib.metadata import version as dist_version

    typer.echo(f"compute-agent {dist_version('compute-agent')}")


def check_broker_account(amqp_url: str, api_url: str | None, allow_guest: bool) -> None:
    """Refuse a broker account that would make every party's isolation moot.

    The service's account is the one that may do anything, so it must not be
    RabbitMQ's well-known ``guest`` (outside loopback development, asked for
    explicitly), and it must be able to manage accounts. A broker that does not
    answer yet is only a warning: the service retries on demand.
    """
    import ipaddress
    import urllib.parse

    from service.broker_admin import BrokerAdmin, BrokerAdminError, NotAdministrator

    parts = urllib.parse.urlsplit(amqp_url)
    if urllib.parse.unquote(parts.username or "") == "guest":
        try:
            loopback = ipaddress.ip_address(parts.hostname or "").is_loopback
        except ValueError:
            loopback = parts.hostname == "localhost"
        if not (allow_guest and loopback):
            typer.echo(
                "refusing RabbitMQ's default 'guest' account: give the service an account of"
                " its own with the administrator tag (--dev-allow-guest permits guest on"
                " loopback, for development only)",
                err=True,
            )
            raise typer.Exit(2)
    try:
        BrokerAdmin.for_url(amqp_url, api_url).check()
    except NotAdministrator as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    except BrokerAdminError as e:
        typer.echo(f"warning: {e}; per-party broker accounts wait for it", err=True)


@app.command()
def start(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(5000, help="Port (the SDK's 'local' environment uses 5000)."),
    amqp_url: str = AmqpOption,
    broker_api: str = BrokerApiOption,
    amqp_prefix: str = typer.Option("", help="Prefix for every exchange and queue name."),
    db: str = DbOption,
    token_ttl: int = typer.Option(7200, help="Access token lifetime in seconds."),
    dev_allow_guest: bool = typer.Option(
        False, help="Development only: accept RabbitMQ's 'guest' account on loopback."
    ),
    start_timeout: float = typer.Option(
        3600.0,
        min=0.0,
        help="Fail tasks whose user endpoint has not started this many seconds after"
        " they were sent to it (0: wait forever).",
    ),
    login_failures_per_client: int = typer.Option(
        10, min=1, help="Wrong secrets one client id may try per window before it must wait."
    ),
    login_failures_per_address: int = typer.Option(
        100, min=1, help="Wrong secrets one address may try per window before it must wait."
    ),
    login_failure_window: float = typer.Option(
        300.0, min=1.0, help="Seconds a wrong secret counts against its client id and address."
    ),
    log_level: str = typer.Option("info", help="Log level."),
) -> None:
    """Run the service in the foreground until interrupted."""
    import logging

    import uvicorn

    from service import store
    from service.app import create_app
    from service.context import Settings
    from wire.errors import QueueInfoError
    from wire.queue_info import check_connection_url
    from wire.redaction import install_redaction

    try:
        check_connection_url(amqp_url, "--amqp-url")
    except QueueInfoError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    check_broker_account(amqp_url, broker_api or None, dev_allow_guest)
    store.dispose(open_database(db))

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    install_redaction()
    settings = Settings(
        db_url=db,
        amqp_url=amqp_url,
        amqp_prefix=amqp_prefix,
        token_ttl_s=token_ttl,
        broker_api_url=broker_api or None,
        start_timeout_s=start_timeout,
        login_failures_per_client=login_failures_per_client,
        login_failures_per_address=login_failures_per_address,
        login_failure_window_s=login_failure_window,
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, log_level=log_level)


@client_app.command("add")
def client_add(
    username: str = typer.Option(..., help="The client's own identity, e.g. alice@uni.edu."),
    linked: list[str] = LinkedOption,
    email: str = typer.Option(None, help="Email of the primary identity."),
    db: str = DbOption,
) -> None:
    """Create a client; prints its id, secret (shown once) and identity id as JSON."""
    from service import auth

    with database(db, write=True) as s:
        client, secret = auth.add_client(s, username, linked, email)
        doc = {
            "client_id": client.client_id,
            "client_secret": secret,
            "identity_id": client.identity_id,
        }
    typer.echo(json.dumps(doc))


@client_app.command("list")
def client_list(db: str = DbOption) -> None:
    """List clients and their identity sets as JSON lines (no secrets)."""
    from sqlalchemy import select

    from service import auth, schema, store

    with database(db) as s:
        for client in s.scalars(select(schema.ApiClient).order_by(schema.ApiClient.created)):
            identities = [auth.identity_doc(i) for i in store.identity_set(s, client)]
            typer.echo(json.dumps({"client_id": client.client_id, "identities": identities}))


@client_app.command("remove")
def client_remove(
    client_id: str = typer.Argument(...),
    db: str = DbOption,
    amqp_url: str = typer.Option(
        "", "--amqp-url", envvar="COMPUTE_SERVICE_AMQP_URL", help="Revoke its broker account now."
    ),
    broker_api: str = BrokerApiOption,
    amqp_prefix: str = typer.Option("", help="The service's --amqp-prefix."),
) -> None:
    """Remove a client, revoke its tokens and its broker account."""
    from service import broker_accounts, schema
    from service.broker_admin import BrokerAdmin, BrokerAdminError
    from service.routing import Topology

    with database(db, write=True) as s:
        client = s.get(schema.ApiClient, client_id)
        if client is not None:
            s.query(schema.AccessToken).filter_by(client_id=client_id).delete()
            s.delete(client)
    if client is None:
        typer.echo(f"no client {client_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed client {client_id}")
    account = broker_accounts.username(Topology("", amqp_prefix), broker_accounts.SDK, client_id)
    later = f"the running service removes its broker account {account} within 10 minutes"
    if not amqp_url:
        typer.echo(f"{later} (give --amqp-url to remove it now)", err=True)
        return
    try:
        BrokerAdmin.for_url(amqp_url, broker_api or None).remove(account)
    except BrokerAdminError as e:
        typer.echo(f"{e}; {later}", err=True)
        return
    typer.echo(f"removed its broker account {account}")


@app.command()
def status(db: str = DbOption) -> None:
    """What the service refused: messages dropped by kind and reason, as JSON lines."""
    from service import store

    with database(db) as s:
        for row in store.dropped_counts(s):
            doc = {
                "kind": row.kind,
                "reason": row.reason,
                "count": row.count,
                "last_at": row.last_at,
                "last_detail": row.last_detail,
            }
            typer.echo(json.dumps(doc))


def policy_doc(policy) -> dict:
    return {
        "id": policy.id,
        "display_name": policy.display_name,
        "description": policy.description,
        "domain_constraints_include": policy.domain_constraints_include,
        "domain_constraints_exclude": policy.domain_constraints_exclude,
        "high_assurance": policy.high_assurance,
        "authentication_assurance_timeout": policy.authentication_assurance_timeout,
    }


@policy_app.command("add")
def policy_add(
    name: str = typer.Option(..., "--name", help="A name for admins to recognise it by."),
    include_domain: list[str] = typer.Option(
        [], help="Submitters need an identity from one of these domains (repeatable)."
    ),
    exclude_domain: list[str] = typer.Option(
        [], help="Identities from these domains never satisfy the policy (repeatable)."
    ),
    high_assurance: bool = typer.Option(
        False, help="Require a recent authentication: an access token younger than --timeout."
    ),
    timeout: int = typer.Option(1800, help="Seconds a high-assurance authentication lasts."),
    description: str = typer.Option("", help="Free text."),
    db: str = DbOption,
) -> None:
    """Create a policy; prints it as JSON (put its id in an endpoint's authentication_policy)."""
    import uuid

    from service import schema

    if timeout <= 0:
        typer.echo("--timeout must be a positive number of seconds", err=True)
        raise typer.Exit(2)
    with database(db, write=True) as s:
        policy = schema.AuthPolicy(
            id=str(uuid.uuid4()),
            display_name=name,
            description=description,
            domain_constraints_include=[d.lower() for d in include_domain],
            domain_constraints_exclude=[d.lower() for d in exclude_domain],
            high_assurance=high_assurance,
            authentication_assurance_timeout=timeout if high_assurance else None,
        )
        s.add(policy)
        doc = policy_doc(policy)
    typer.echo(json.dumps(doc))


@policy_app.command("list")
def policy_list(db: str = DbOption) -> None:
    """List policies as JSON lines."""
    from sqlalchemy import select

    from service import schema

    with database(db) as s:
        for policy in s.scalars(select(schema.AuthPolicy).order_by(schema.AuthPolicy.created)):
            typer.echo(json.dumps(policy_doc(policy)))


@policy_app.command("remove")
def policy_remove(policy_id: str = typer.Argument(...), db: str = DbOption) -> None:
    """Remove a policy no endpoint names any more."""
    from sqlalchemy import select

    from service import schema

    with database(db, write=True) as s:
        policy = s.get(schema.AuthPolicy, policy_id)
        users = s.scalars(
            select(schema.Endpoint.id).where(schema.Endpoint.authentication_policy == policy_id)
        ).all()
        if policy is not None and not users:
            s.delete(policy)
    if policy is None:
        typer.echo(f"no policy {policy_id}", err=True)
        raise typer.Exit(1)
    if users:
        typer.echo(f"policy {policy_id} is named by endpoint(s) {', '.join(users)}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed policy {policy_id}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
