"""Validate Action Provider documents with the official globus-action-provider-tools package.

The package lives in its own venv (``make action-provider-tools``; it pins
globus-sdk<4 and pydantic<2, which the project's venv cannot hold), and
``tests/action_docs_check.py`` runs there. Tests collect the documents they
saw and check them all in one call: one interpreter start per check.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

TOOLS_PYTHON = Path(
    os.environ.get(
        "COMPUTE_AGENT_AP_TOOLS_PYTHON",
        "/var/tmp/compute-agent/action-provider-tools-0.21/bin/python",
    )
)
CHECKER = Path(__file__).with_name("action_docs_check.py")


def problems(items: list[list]) -> list[list[str]]:
    """One list of problems per ``[kind, document, ...]`` item (kinds: status, request,
    introspection)."""
    assert TOOLS_PYTHON.exists(), (
        f"globus-action-provider-tools is not installed at {TOOLS_PYTHON}:"
        " run `make action-provider-tools` (or set COMPUTE_AGENT_AP_TOOLS_PYTHON)"
    )
    done = subprocess.run(
        [str(TOOLS_PYTHON), str(CHECKER)],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def assert_valid(items: list[list]) -> None:
    """Every document passes the package's models and schemas."""
    found = problems(items)
    bad = [(item[0], item[1], p) for item, p in zip(items, found, strict=True) if p]
    assert not bad, "documents the action-provider tools refuse:\n" + "\n".join(
        f"{kind}: {json.dumps(doc)[:400]}\n  -> {p}" for kind, doc, p in bad
    )
