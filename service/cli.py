"""``compute-service``: run and administer the self-hosted compute service."""

from __future__ import annotations

import json
import os

import typer

DEFAULT_DB = "sqlite:///" + os.path.join(
    os.environ.get("STATE_DIRECTORY", os.path.expanduser("~")), "compute-service.db"
)
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"

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

DbOption = typer.Option(DEFAULT_DB, "--db", envvar="COMPUTE_SERVICE_DB", help="Database URL.")
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


@app.callback()
def _root() -> None:
    """Keep the command group shape even while it has a single command."""


@app.command()
def version() -> None:
    """Print the compute-agent version."""
    from importlib.metadata import version as dist_version

    typer.echo(f"compute-agent {dist_version('compute-agent')}")


@app.command()
def start(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(5000, help="Port (the SDK's 'local' environment uses 5000)."),
    amqp_url: str = typer.Option(
        DEFAULT_AMQP, "--amqp-url", envvar="COMPUTE_SERVICE_AMQP_URL", help="RabbitMQ URL."
    ),
    amqp_prefix: str = typer.Option("", help="Prefix for every exchange and queue name."),
    db: str = DbOption,
    token_ttl: int = typer.Option(7200, help="Access token lifetime in seconds."),
    log_level: str = typer.Option("info", help="Log level."),
) -> None:
    """Run the service in the foreground until interrupted."""
    import logging

    import uvicorn

    from service import store
    from service.app import create_app
    from service.context import Settings
    from wire.amqp import install_redaction
    from wire.errors import QueueInfoError
    from wire.queue_info import check_connection_url

    try:
        check_connection_url(amqp_url, "--amqp-url")
    except QueueInfoError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    store.dispose(open_database(db))

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    install_redaction()
    settings = Settings(
        db_url=db, amqp_url=amqp_url, amqp_prefix=amqp_prefix, token_ttl_s=token_ttl
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
    from service import auth, store

    sessions = open_database(db)
    with sessions.begin() as s:
        client, secret = auth.add_client(s, username, linked, email)
        doc = {
            "client_id": client.client_id,
            "client_secret": secret,
            "identity_id": client.identity_id,
        }
    store.dispose(sessions)
    typer.echo(json.dumps(doc))


@client_app.command("list")
def client_list(db: str = DbOption) -> None:
    """List clients and their identity sets as JSON lines (no secrets)."""
    from sqlalchemy import select

    from service import auth, schema, store

    sessions = open_database(db)
    with sessions() as s:
        for client in s.scalars(select(schema.ApiClient).order_by(schema.ApiClient.created)):
            identities = [auth.identity_doc(i) for i in store.identity_set(s, client)]
            typer.echo(json.dumps({"client_id": client.client_id, "identities": identities}))
    store.dispose(sessions)


@client_app.command("remove")
def client_remove(client_id: str = typer.Argument(...), db: str = DbOption) -> None:
    """Remove a client and revoke its tokens."""
    from service import schema, store

    sessions = open_database(db)
    with sessions.begin() as s:
        client = s.get(schema.ApiClient, client_id)
        if client is not None:
            s.query(schema.AccessToken).filter_by(client_id=client_id).delete()
            s.delete(client)
    store.dispose(sessions)
    if client is None:
        typer.echo(f"no client {client_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed client {client_id}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
