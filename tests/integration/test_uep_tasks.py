# ruff: noqa: F811 - pytest fixtures imported from the harness are parameters here
"""User endpoint end to end: engines run tasks, every error code from a real case.

Real RabbitMQ (a private vhost), the real ``_start-user-endpoint`` process, and
tasks serialized by the official SDK.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

import pytest

from bench import memory
from tests.integration.test_uep_harness import (  # noqa: F401 - fixtures too
    decode_result,
    engine_yaml,
    launch,
    service,
    vhost,
)
from tests.processes import mentioning

pytestmark = pytest.mark.rabbitmq


def add(a, b):
    return a + b


def fail():
    raise ZeroDivisionError("deliberate")


def huge():
    return "x" * (11 * 1024 * 1024)


def where():
    import os

    return os.environ["GC_TASK_UUID"], os.environ.get("GC_TASK_SANDBOX_DIR"), os.getcwd()


def crash():
    import os

    os._exit(9)


def sleep(seconds):
    import time

    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize("engine", ["ThreadPoolEngine", "ProcessPoolEngine"])
def test_pool_engines_run_tasks(service, launch, engine):
    launch(engine_yaml(engine))
    ids = [service.submit(add, i, 1) for i in range(20)]
    results = service.wait_results(ids)
    assert [decode_result(results[t]) for t in ids] == [i + 1 for i in range(20)]
    first = results[ids[0]]
    assert first.details["endpoint_id"] == service.endpoint_id
    assert [s.state.value for s in first.task_statuses] == ["execution-start", "execution-end"]
    report = service.wait_heartbeat(lambda s: s.get("active") is True)
    assert report.global_state["engine_type"] == engine
    assert report.global_state["posix_pid"] > 0


def test_globus_compute_engine_runs_tasks(service, launch, tmp_path):
    config = (
        "engine:\n  type: GlobusComputeEngine\n  max_workers_per_node: 2\n"
        "  run_in_sandbox: true\n"
        "  provider:\n    type: LocalProvider\n    init_blocks: 1\n    max_blocks: 1\n"
        "heartbeat_period: 5\n"
    )
    launch(config)
    ids = [service.submit(add, i, 2) for i in range(10)]
    where_id = service.submit(where)
    results = service.wait_results([*ids, where_id], timeout=90)
    assert [decode_result(results[t]) for t in ids] == [i + 2 for i in range(10)]
    task_uuid, sandbox, cwd = decode_result(results[where_id])
    assert task_uuid == where_id
    assert sandbox == cwd and sandbox.endswith(where_id)
    report = service.wait_heartbeat(lambda s: s.get("managers", 0) >= 1, timeout=60)
    assert report.global_state["engine_type"] == "GlobusComputeEngine"


def worker_facts():
    """Who runs a GlobusComputeEngine task: its command line, its parent's, and
    how many TCP sockets it holds (its socket inodes found in /proc/net/tcp*)."""
    import contextlib
    import os

    def cmdline(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode()

    tcp = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            tcp |= {line.split()[9] for line in list(f)[1:]}
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    mine = [t for t in targets if t.startswith("socket:[") and t[8:-1] in tcp]
    return cmdline(os.getpid()), cmdline(os.getppid()), len(mine)


def test_globus_compute_engine_forks_its_workers(service, launch, tmp_path):
    """A task worker is a fork of the pool (same command line, the pool its parent)
    without the pool's network sockets, and no spawned helper or manager server
    process is in the tree."""
    config = (
        "engine:\n  type: GlobusComputeEngine\n  max_workers_per_node: 2\n"
        "  provider:\n    type: LocalProvider\n    init_blocks: 1\n    max_blocks: 1\n"
    )
    launch(config)
    ids = [service.submit(worker_facts) for _ in range(4)]
    results = service.wait_results(ids, timeout=90)
    for task_id in ids:
        own, parent, network_sockets = decode_result(results[task_id])
        assert "uep.worker_pool" in parent
        assert own == parent
        assert network_sockets == 0
    tree = mentioning(f"{tmp_path}/")
    pool = [line for line in tree.values() if "uep.worker_pool" in line]
    assert len(pool) == 3, "the pool and its 2 workers; its manager is a thread of the pool"
    assert not [
        line for line in tree.values() if "resource_tracker" in line or "spawn_main" in line
    ]


def parsl_in_a_worker():
    """What a task worker had loaded before the task imported anything, then
    what the task gets when it imports Parsl and requests."""
    import sys

    heavy = ("parsl.dataflow.dflow", "parsl.monitoring.monitoring", "requests")
    loaded = [name for name in heavy if name in sys.modules]
    import parsl
    import requests
    from parsl import python_app
    from parsl.executors import HighThroughputExecutor

    return (
        loaded,
        python_app.__module__,
        HighThroughputExecutor.__name__,
        callable(parsl.load),
        requests.codes.ok,
    )


def test_a_worker_loads_no_more_of_parsl_than_the_pool_needs_and_a_task_gets_all_of_it(
    service, launch
):
    """The pool defers Parsl's package __init__ files and requests (lean_parsl.defer);
    a researcher's task that imports them gets the real thing."""
    launch(
        "engine:\n  type: GlobusComputeEngine\n"
        "  provider:\n    type: LocalProvider\n    init_blocks: 1\n    max_blocks: 1\n"
    )
    task_id = service.submit(parsl_in_a_worker)
    result = decode_result(service.wait_results([task_id], timeout=90)[task_id])
    assert result == ([], "parsl.app.app", "HighThroughputExecutor", True, 200)


def _descriptors(pid: int) -> set[str]:
    """What a process's descriptors above stderr point at, but anonymous inodes
    (every eventfd and epoll instance reads alike)."""
    fds = Path(f"/proc/{pid}/fd")
    targets = set()
    for fd in fds.iterdir():
        if int(fd.name) > 2:
            with contextlib.suppress(FileNotFoundError):
                targets.add(os.readlink(fd))
    return {target for target in targets if not target.startswith("anon_inode:")}


def test_the_interchange_is_forked_without_the_endpoints_descriptors(service, launch):
    """The interchange shares the endpoint's pages (an exec'd one shares none it
    wrote) and holds none of its connections, files, pipes or locks; stopping the
    endpoint stops it."""
    ep = launch(
        "engine:\n  type: GlobusComputeEngine\n"
        "  provider:\n    type: LocalProvider\n    init_blocks: 1\n    max_blocks: 1\n"
    )
    task_id = service.submit(add, 1, 2)
    assert decode_result(service.wait_results([task_id], timeout=90)[task_id]) == 3
    children = Path(f"/proc/{ep.proc.pid}/task/{ep.proc.pid}/children").read_text().split()
    titles = {int(c): Path(f"/proc/{c}/cmdline").read_bytes() for c in children}
    [interchange] = [pid for pid, title in titles.items() if title.startswith(b"parsl: HTEX")]
    assert memory.smaps_kib(interchange, "Shared_Dirty") > 4096
    endpoint_fds = _descriptors(ep.proc.pid)
    assert any(target.startswith("socket:") for target in endpoint_fds)
    assert any(target.endswith("uep_state.sqlite3") for target in endpoint_fds)
    assert _descriptors(interchange) & endpoint_fds == set()
    # It logs to its own file only, as an exec'd interchange does.
    assert "Starting main interchange method" not in ep.log_text()
    ep.kill(signal.SIGTERM)  # the endpoint alone: its engine must stop the interchange
    assert ep.proc.wait(30) == 0
    assert not Path(f"/proc/{interchange}").exists()


def test_error_codes_from_real_cases(service, launch):
    allowed = str(uuid.uuid4())
    launch(
        engine_yaml("ProcessPoolEngine"),
        allowed_functions=[service.function_id, allowed],
    )
    raised = service.submit(fail)
    too_big = service.submit(huge)
    not_allowed = service.submit(add, 1, 2, headers={"function_uuid": str(uuid.uuid4())})
    bad_spec = service.submit(add, 1, 2, headers={"resource_specification": '{"num_nodes": 2}'})
    task_id = str(uuid.uuid4())
    service.publish_task(task_id, b"\x01not json")
    results = service.wait_results([raised, too_big, not_allowed, bad_spec, task_id])

    def code(tid):
        assert results[tid].is_error, results[tid].data
        return results[tid].error_details.code

    assert code(raised) == "RemoteExecutionError"
    assert "ZeroDivisionError: deliberate" in results[raised].data
    assert code(too_big) == "MaxResultSizeExceeded"
    assert code(not_allowed) == "FUNCTION_NOT_ALLOWED"
    assert code(bad_spec) == "CouldNotExecuteUserTaskError"
    assert "Failed to start task" in results[bad_spec].data
    assert code(task_id) == "CouldNotExecuteUserTaskError"


def test_disallowed_serializer_is_refused(service, launch):
    config = (
        "engine:\n  type: ThreadPoolEngine\n  allowed_serializers:\n"
        "    - globus_compute_sdk.serialize.DillCodeSource\n"
        "    - globus_compute_sdk.serialize.JSONData\n"
    )
    launch(config)
    task_id = service.submit(add, 1, 2)
    result = service.wait_results([task_id])[task_id]
    assert result.error_details.code == "CouldNotExecuteUserTaskError"
    assert "disabled by this endpoint's configuration" in result.data


def test_process_worker_crash_fails_only_that_task(service, launch):
    launch(engine_yaml("ProcessPoolEngine"))
    before = [service.submit(sleep, 0.2) for _ in range(3)]
    crasher = service.submit(crash)
    after = [service.submit(add, i, 1) for i in range(5)]
    results = service.wait_results([*before, crasher, *after])
    assert results[crasher].is_error
    assert "BrokenProcessPool" in results[crasher].data
    assert all(not results[t].is_error for t in before + after)


def test_a_globus_compute_engine_worker_crash_fails_only_that_task(service, launch):
    """The pool learns which task a dead worker held from its manager's dict (which
    the pool serves from a thread), answers it, and starts a new worker."""
    launch(
        "engine:\n  type: GlobusComputeEngine\n  max_workers_per_node: 1\n"
        "  provider:\n    type: LocalProvider\n    init_blocks: 1\n    max_blocks: 1\n"
    )
    before = service.submit(add, 1, 1)
    service.wait_results([before], timeout=90)
    crasher = service.submit(crash)
    results = service.wait_results([crasher], timeout=90)
    assert results[crasher].is_error
    assert "WorkerLost" in results[crasher].data
    after = [service.submit(add, i, 1) for i in range(3)]
    results = service.wait_results(after, timeout=90)
    assert [decode_result(results[t]) for t in after] == [1, 2, 3]


def test_stop_answers_unfinished_tasks_explicitly(service, launch):
    ep = launch(engine_yaml("ThreadPoolEngine"))
    slow = service.submit(sleep, 60)
    fast = service.submit(add, 1, 1)
    service.wait_results([fast])
    ep.kill(signal.SIGTERM)
    results = service.wait_results([slow], timeout=40)
    assert results[slow].error_details.code == "UNKNOWN_TASK_FAILURE"
    assert ep.wait(30) == 0
    final = service.wait_heartbeat(lambda s: s.get("active") is False)
    assert final.endpoint_id == uuid.UUID(service.endpoint_id)


def test_shell_function_runs(service, launch):
    from globus_compute_sdk import ShellFunction

    launch(engine_yaml("ProcessPoolEngine"))
    shell = ShellFunction("echo hello {name}; pwd")
    task_id = service.submit(shell, name="there")
    result = decode_result(service.wait_results([task_id])[task_id])
    assert result.returncode == 0
    assert "hello there" in result.stdout


@pytest.mark.parametrize(
    "config, words",
    [
        ("engine:\n  type: NoSuchEngine\n", "NoSuchEngine"),
        ("engine:\n  type: ThreadPoolEngine\nendpoint_setup: exit 3\n", "exit status 3"),
    ],
)
def test_startup_failure_is_reported_to_the_user(service, launch, config, words):
    ep = launch(config)
    report = service.wait_heartbeat(lambda s: "error" in s)
    assert report.global_state["heartbeat_period"] == 3
    assert words in report.global_state["error"]
    assert ep.wait(30) != 0
    assert words in ep.log_text()


def test_credentials_are_read_from_the_encrypted_memfd(service, launch):
    import json

    from cryptography.fernet import Fernet

    key = Fernet.generate_key()
    fd = os.memfd_create("creds", 0)
    token = Fernet(key).encrypt(json.dumps({"amqp_creds": service.amqp_creds()}).encode())
    os.write(fd, token)
    os.set_inheritable(fd, True)
    try:
        launch(
            engine_yaml("ThreadPoolEngine"),
            mem_fd=fd,
            enckey=key.decode(),
            _pass_fds=(fd,),
        )
        task_id = service.submit(add, 2, 3)
        assert decode_result(service.wait_results([task_id])[task_id]) == 5
    finally:
        os.close(fd)


def mpi_environment():
    import os

    return {k: v for k, v in os.environ.items() if k.startswith("PARSL_")}


def test_globus_mpi_engine_runs_tasks_with_resource_specs(service, launch):
    config = (
        "engine:\n  type: GlobusMPIEngine\n  mpi_launcher: mpiexec\n"
        "  max_workers_per_block: 1\n"
        "  provider:\n    type: LocalProvider\n    init_blocks: 1\n    max_blocks: 1\n"
        "    launcher: {type: SimpleLauncher}\n"
        # A one-node "PBS allocation", so Parsl's MPI mode knows its nodes.
        "    worker_init: hostname > $HOME/nodes; export PBS_NODEFILE=$HOME/nodes\n"
    )
    launch(config)
    spec = '{"num_nodes": 1, "ranks_per_node": 2}'
    ok = service.submit(mpi_environment, headers={"resource_specification": spec})
    missing = service.submit(mpi_environment)
    results = service.wait_results([ok, missing], timeout=90)
    env = decode_result(results[ok])
    assert env["PARSL_NUM_RANKS"] == "2"
    assert env["PARSL_MPI_PREFIX"].startswith("mpiexec")
    assert results[missing].error_details.code == "CouldNotExecuteUserTaskError"
    assert "needs a resource_specification" in results[missing].data


def test_engine_failure_stops_the_endpoint_and_answers_its_tasks(service, launch):
    config = (
        "engine:\n  type: GlobusComputeEngine\n  job_status_kwargs: {strategy_period: 1}\n"
        "  provider:\n    type: LocalProvider\n    init_blocks: 1\n    max_blocks: 1\n"
        "    worker_init: exit 3\n"
    )
    ep = launch(config)
    task_id = service.submit(add, 1, 2)
    result = service.wait_results([task_id], timeout=60)[task_id]
    assert result.is_error
    assert ep.wait(60) == 0
    service.wait_heartbeat(lambda s: s.get("active") is False)
    assert "engine failed" in ep.log_text()


def test_audit_records_go_to_the_manager_pipe(service, launch):
    import select

    read_end, write_end = os.pipe2(os.O_DIRECT)
    os.set_inheritable(write_end, True)
    try:
        launch(
            engine_yaml("ThreadPoolEngine"),
            audit_fd=write_end,
            allowed_functions=[service.function_id],
            _pass_fds=(write_end,),
        )
        ran = service.submit(add, 1, 2)
        refused = service.submit(add, 1, 2, headers={"function_uuid": str(uuid.uuid4())})
        service.wait_results([ran, refused])
        records = []
        while len(records) < 3 and select.select([read_end], [], [], 5)[0]:
            records.append(os.read(read_end, 4096).decode())
    finally:
        os.close(read_end)
        os.close(write_end)
    assert f"fid={service.function_id} tid={ran} bid= RECEIVED" in records
    assert f"fid={service.function_id} tid={ran} bid= EXEC_END" in records
    assert any(
        f"tid={refused}" in r and r.endswith("FAILED - Function not permitted on endpoint")
        for r in records
    )
