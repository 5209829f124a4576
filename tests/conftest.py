"""Shared test helpers: the repository root and running our two CLIs.

CLIs are run as ``python -m mep.cli`` / ``python -m service.cli`` (the same
functions the console scripts call) with this checkout on ``PYTHONPATH``, so a
test exercises the working tree even before ``make install`` has copied it into
the virtual environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(module: str, args: tuple[str, ...], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ if kwargs.get("env") is None else kwargs.pop("env"))
    kwargs.pop("env", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    kwargs.setdefault("timeout", 60)
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, **kwargs
    )


@pytest.fixture
def endpoint_cli():
    """Run ``compute-endpoint ARGS...``; returns the CompletedProcess."""
    return lambda *args, **kw: _run("mep.cli", args, **kw)


@pytest.fixture
def service_cli():
    """Run ``compute-service ARGS...``; returns the CompletedProcess."""
    return lambda *args, **kw: _run("service.cli", args, **kw)


# The compute-service fixtures (tests/fixtures_service.py), registered once for
# the whole session: importing them into several modules would start one
# session-scoped service per module.
pytest_plugins = ["tests.fixtures_service"]


def pytest_sessionfinish(session, exitstatus) -> None:
    """Every process a test started must be gone: anything left that names this session's
    temporary directory is killed, listed, and fails the run."""
    from tests.processes import kill_mentioning

    basetemp = session.config._tmp_path_factory.getbasetemp()
    left = kill_mentioning(f"{basetemp}/")  # the slash: pytest-6 must not match pytest-60
    if left:
        print("\nprocesses left behind by tests (killed now):")
        for pid, what in left.items():
            print(f"  {pid}: {what}")
        session.exitstatus = 1
