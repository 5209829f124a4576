"""The ``compute-endpoint`` program sends a user endpoint start past the admin CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mep.entry import user_endpoint_name
from uep.launch import EX_DATAERR

PROGRAM = Path(sys.executable).parent / "compute-endpoint"


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["_start-user-endpoint", "uep.a"], "uep.a"),
        (["_start-user-endpoint", "uep.a", "--die-with-parent"], "uep.a"),
        (["_start-user-endpoint", "--die-with-parent", "uep.a"], "uep.a"),
        (["_start-user-endpoint"], None),
        (["_start-user-endpoint", "--help"], None),
        (["_start-user-endpoint", "a", "b"], None),
        (["_start-user-endpoint", "a", "--die-with-parent", "--die-with-parent"], None),
        (["start", "uep.a"], None),
        ([], None),
    ],
)
def test_only_the_exact_start_command_takes_the_short_path(args, name):
    assert user_endpoint_name(args) == name


def _imports_of(args: list[str], stdin: bytes) -> tuple[int, set[str]]:
    done = subprocess.run(
        [str(PROGRAM), *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={"PYTHONPROFILEIMPORTTIME": "1", "PATH": "/usr/bin:/bin"},
    )
    lines = done.stderr.decode(errors="replace").splitlines()
    return done.returncode, {
        line.split("|")[-1].strip() for line in lines if line.startswith("import time:")
    }


def test_a_user_endpoint_start_never_imports_the_admin_cli():
    status, modules = _imports_of(["_start-user-endpoint", "uep.x"], b"not a payload")
    assert status == EX_DATAERR  # it got as far as reading the payload
    assert "uep.launch" in modules
    assert not {"typer", "mep.cli", "mep.diagnostic"} & modules


def test_other_commands_still_reach_the_admin_cli():
    status, modules = _imports_of(["_start-user-endpoint", "--help"], b"")
    assert status == 0
    assert {"typer", "mep.cli"} <= modules
