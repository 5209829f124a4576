"""Parsl imported the lean way loads neither SQLAlchemy nor the Globus Compute SDK,
and a task can still import both."""

from __future__ import annotations

import json
import subprocess
import sys

from uep import lean_parsl

PROBE = """
import json, sys
{setup}
import parsl.executors.high_throughput.process_worker_pool
from parsl.monitoring import monitoring
from parsl.executors import globus_compute
loaded_with_parsl = sorted({{"sqlalchemy", "globus_compute_sdk"}} & set(sys.modules))
import sqlalchemy
import globus_compute_sdk
missing = type(monitoring._db_manager_excepts).__name__
print(json.dumps([
    loaded_with_parsl,
    missing,
    globus_compute._globus_compute_enabled,
    sqlalchemy.__name__,
    globus_compute_sdk.Executor.__name__,
]))
"""


def _run(setup: str) -> list:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_parsl_alone_loads_both_here():
    """The premise: in this environment Parsl's probes find both packages and load them."""
    assert _run("") == [
        ["globus_compute_sdk", "sqlalchemy"],
        "NoneType",
        True,
        "sqlalchemy",
        "Executor",
    ]


def test_lean_parsl_hides_it_from_the_probe_only():
    """Parsl sees what it sees where neither is installed (as in a production
    install); the researcher's imports afterwards work."""
    assert _run("from uep import lean_parsl; lean_parsl.install()") == [
        [],
        "OptionalModuleMissing",
        False,
        "sqlalchemy",
        "Executor",
    ]


def test_a_program_run_through_it_gets_its_arguments(tmp_path):
    done = subprocess.run(
        [*lean_parsl.command("json.tool"), "--compact"],
        input='{"a": [1, 2]}',
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == '{"a":[1,2]}'
