"""``compute-endpoint``: the site admin's command line.

Each package contributes its own commands through a ``register(app)`` function
so this module stays a table of contents. Command bodies import heavy modules
lazily: a user endpoint starts through this same entry point and must not pay
for the manager's imports.
"""

from __future__ import annotations

import typer

from identity.cli import register as register_identity
from mep.diagnostic import register as register_diagnostic
from mep.lifecycle import register as register_lifecycle
from templates.cli import register as register_templates
from uep.cli import register as register_uep

app = typer.Typer(
    name="compute-endpoint",
    help=(
        "Run and administer a compute-agent multi-user endpoint: a root-run "
        "manager that starts per-user endpoints for Globus Compute tasks.\n\n"
        "Exit codes: 0 success; 1 the command ran but the answer is 'no'; "
        "2 bad usage or invalid input."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


register_identity(app)
register_lifecycle(app)
register_diagnostic(app)
register_templates(app)
register_uep(app)


@app.callback()
def _root() -> None:
    """Keep the command group shape even while it has a single command."""


@app.command()
def version() -> None:
    """Print the versions of compute-agent and the libraries it speaks through."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    for dist in ("compute-agent", "globus-sdk", "parsl", "pika", "dill"):
        try:
            typer.echo(f"{dist} {dist_version(dist)}")
        except PackageNotFoundError:
            typer.echo(f"{dist} (not installed)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
