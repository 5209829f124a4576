"""``compute-service``: run and administer the self-hosted compute service."""

from __future__ import annotations

import typer

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


@app.callback()
def _root() -> None:
    """Keep the command group shape even while it has a single command."""


@app.command()
def version() -> None:
    """Print the compute-agent version."""
    from importlib.metadata import version as dist_version

    typer.echo(f"compute-agent {dist_version('compute-agent')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
