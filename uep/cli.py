"""The hidden ``_start-user-endpoint NAME`` command a manager execs as the user."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("_start-user-endpoint", hidden=True)
    def start_user_endpoint(
        name: str,
        die_with_parent: bool = typer.Option(False, "--die-with-parent", hidden=True),
    ) -> None:
        """Run a user endpoint from the JSON launch payload on stdin."""
        from uep.launch import exit_now, main

        exit_now(main(name))
