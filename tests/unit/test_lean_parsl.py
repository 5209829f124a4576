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


POOL_PROBE = """
import json, sys
from uep import lean_parsl
lean_parsl.install()
{setup}
import parsl.executors.high_throughput.process_worker_pool
heavy = ["parsl.dataflow.dflow", "parsl.providers.slurm.slurm",
         "parsl.monitoring.monitoring", "requests"]
loaded = [name for name in heavy if name in sys.modules]
from parsl import python_app, curvezmq
from parsl.executors import HighThroughputExecutor
import parsl, parsl.monitoring, requests
print(json.dumps([
    loaded,
    python_app.__module__,
    HighThroughputExecutor.__module__,
    type(parsl.monitoring.MonitoringHub).__name__,
    callable(parsl.load),
    parsl.__version__ == parsl.version.VERSION,
    curvezmq.__name__,
    requests.codes.ok,
]))
"""
AFTERWARDS = [
    "parsl.app.app",
    "parsl.executors.high_throughput.executor",
    "type",
    True,
    True,
    "parsl.curvezmq",
    200,
]


def _probe(program: str) -> list:
    """The JSON list a probe program prints last, run in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_deferral_the_pool_loads_all_of_parsl_and_requests():
    """The premise: importing the pool runs parsl/__init__, which loads the
    dataflow kernel, every provider and the monitoring hub."""
    assert _probe(POOL_PROBE.format(setup="")) == [
        [
            "parsl.dataflow.dflow",
            "parsl.providers.slurm.slurm",
            "parsl.monitoring.monitoring",
            "requests",
        ],
        *AFTERWARDS,
    ]


def test_a_deferred_pool_loads_neither_and_a_task_still_gets_all_of_parsl():
    """What a researcher's task imports afterwards in a forked worker (the whole
    parsl package, names from its __init__ files, requests) is the real thing."""
    assert _probe(POOL_PROBE.format(setup="lean_parsl.defer()")) == [[], *AFTERWARDS]


def test_parsl_addresses_gets_requests_when_it_is_used():
    program = (
        "import json, sys\n"
        "from uep import lean_parsl\n"
        "lean_parsl.install()\n"
        "lean_parsl.defer()\n"
        "from parsl import addresses\n"
        "before = 'requests' in sys.modules\n"
        "stand_in = type(addresses.requests).__name__\n"
        "ok = addresses.requests.codes.ok\n"
        "print(json.dumps([before, stand_in, ok, 'requests' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == [False, "_OnFirstUse", 200, True]


ENDPOINT_PROBE = """
import json, sys
from uep import lean_parsl
lean_parsl.install()
lean_parsl.defer()
from parsl.executors.high_throughput.executor import HighThroughputExecutor
from parsl.executors.high_throughput.mpi_executor import MPIExecutor
from parsl.jobs.job_status_poller import JobStatusPoller
import parsl.executors.high_throughput.interchange
import parsl.providers
local = parsl.providers.LocalProvider
others = ["parsl.executors.workqueue.executor", "parsl.providers.slurm.slurm",
          "parsl.providers.aws.aws", "parsl.dataflow.dflow"]
loaded = [name for name in others if name in sys.modules]
from parsl.providers import SlurmProvider
import parsl.executors
print(json.dumps([
    loaded,
    SlurmProvider.__module__,
    parsl.providers.LocalProvider is local,
    parsl.executors.HighThroughputExecutor is HighThroughputExecutor,
    parsl.executors.MPIExecutor is MPIExecutor,
    parsl.executors.ThreadPoolExecutor.__name__,
]))
"""


def test_a_deferred_endpoint_loads_only_the_executor_and_provider_it_builds():
    """What a GlobusComputeEngine's user endpoint imports loads no other executor or
    provider; a template's other provider, asked for by name, is the real class,
    and the names loaded one by one are those the whole package defines."""
    assert _probe(ENDPOINT_PROBE) == [
        [],
        "parsl.providers.slurm.slurm",
        True,
        True,
        True,
        "ThreadPoolExecutor",
    ]
