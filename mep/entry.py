"""The ``compute-endpoint`` program's first step: choose the command's path.

A manager execs every user endpoint as ``compute-endpoint _start-user-endpoint
NAME``. That start goes straight to :mod:`uep.launch`, without importing the
admin's command line (Typer and every command's module, about 0.1 s and
several megabytes). The same saving repeats in each task worker a
ProcessPoolEngine starts with multiprocessing's spawn, because a spawned
process imports the parent's main program again, and for a user endpoint that
program is this module. Anything else, ``--help`` included, goes to
:mod:`mep.cli`.
"""

from __future__ import annotations

import sys

START = "_start-user-endpoint"
DIE_WITH_PARENT = "--die-with-parent"


def user_endpoint_name(args: list[str]) -> str | None:
    """The NAME of ``_start-user-endpoint NAME [--die-with-parent]``; else None."""
    if not args or args[0] != START:
        return None
    rest = [a for a in args[1:] if a != DIE_WITH_PARENT]
    if len(rest) != 1 or rest[0].startswith("-") or args.count(DIE_WITH_PARENT) > 1:
        return None
    return rest[0]


def main() -> None:
    name = user_endpoint_name(sys.argv[1:])
    if name is not None:
        from uep.launch import exit_now
        from uep.launch import main as start_user_endpoint

        exit_now(start_user_endpoint(name))
    from mep.cli import main as admin_cli

    admin_cli()
