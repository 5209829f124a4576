# ruff: noqa: F811 - pytest fixtures imported from the harness are parameters here
"""Nothing is lost: crash, broker restart and idle shutdown of a user endpoint.

Every test ends with every submitted task answered by exactly one answer
(a result or an explicit error). A re-send of the *same* stored answer, which
happens when the broker persisted a result but its confirm never reached us,
is allowed: the bytes are identical, so the service sees one answer.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.integration.test_uep_harness import (  # noqa: F401 - fixtures too
    engine_yaml,
    launch,
    service,
    vhost,
)
from uep.endpoint import RESTARTED

pytestmark = pytest.mark.rabbitmq


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def assert_answered_once(service, task_ids, settle: float = 2.0) -> dict:
    service.wait_results(task_ids, timeout=90)
    time.sleep(settle)
    service.drain()
    answers = {}
    for task_id in task_ids:
        copies = service.results[task_id]
        assert all(c == copies[0] for c in copies), f"task {task_id} answered differently"
        answers[task_id] = copies[0]
    assert set(service.results) == set(task_ids)
    return answers


def test_kill_9_mid_batch_loses_nothing(service, launch):
    config = engine_yaml("ProcessPoolEngine")
    first = launch(config)
    ids = [service.submit(nap, 0.05) for _ in range(120)]
    deadline = time.monotonic() + 60
    while len(service.results) < 20 and time.monotonic() < deadline:
        service.drain()
        time.sleep(0.05)
    first.kill(signal.SIGKILL)
    first.wait(10)
    done_before = len(service.results)
    assert 0 < done_before < len(ids)
    launch(config)
    answers = assert_answered_once(service, ids)
    lost = [a for a in answers.values() if a.is_error]
    assert all(a.data == RESTARTED and a.error_details.code == "UNKNOWN_TASK_FAILURE" for a in lost)
    assert sum(not a.is_error for a in answers.values()) >= done_before


def test_broker_restart_mid_batch_loses_nothing(service, launch):
    launch(engine_yaml("ProcessPoolEngine"))
    ids = [service.submit(nap, 0.05) for _ in range(100)]
    deadline = time.monotonic() + 60
    while len(service.results) < 10 and time.monotonic() < deadline:
        service.drain()
        time.sleep(0.05)
    try:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
        time.sleep(2)
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
    answers = assert_answered_once(service, ids)
    assert all(not a.is_error for a in answers.values())


def _title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def _active_beats(service) -> list:
    service.drain()
    return [h for h in service.heartbeats if h.global_state.get("active") is True]


def test_idle_soft_limit_stops_at_the_right_heartbeat(service, launch):
    ep = launch(engine_yaml("ThreadPoolEngine", heartbeat_period=5, idle_heartbeats_soft=2))
    task_id = service.submit(nap, 0)
    service.wait_results([task_id])
    deadline = time.monotonic() + 30
    while len(_active_beats(service)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "[idle; shut down in 5s]" in _title(ep.proc.pid)
    assert ep.wait(30) == 0
    service.wait_heartbeat(lambda s: s.get("active") is False)
    # beat 1 saw nothing, beat 2 the task, beats 3 and 4 are the two idle ones
    assert len(_active_beats(service)) == 4


def test_idle_hard_limit_stops_an_endpoint_that_never_worked(service, launch):
    ep = launch(
        engine_yaml(
            "ThreadPoolEngine", heartbeat_period=5, idle_heartbeats_soft=1, idle_heartbeats_hard=2
        )
    )
    deadline = time.monotonic() + 30
    while len(_active_beats(service)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "[possibly idle; shut down in 5s]" in _title(ep.proc.pid)
    assert ep.wait(30) == 0
    service.wait_heartbeat(lambda s: s.get("active") is False)
    # hard counts 1, 2, 3: past max(soft + 1, hard) = 2 at the third beat
    assert len(_active_beats(service)) == 3


def test_endpoint_stops_when_its_parent_goes_away(service, launch):
    import os

    ep = launch(engine_yaml("ThreadPoolEngine"), _via_shell=True)
    report = service.wait_heartbeat(lambda s: s.get("active") is True)
    pid = report.global_state["posix_pid"]
    assert pid != ep.proc.pid
    os.kill(ep.proc.pid, signal.SIGKILL)
    service.wait_heartbeat(lambda s: s.get("active") is False, timeout=30)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}")


def test_a_task_delivered_twice_is_answered_once(service, launch):
    from tests.integration.test_uep_harness import sdk_task

    launch(engine_yaml("ThreadPoolEngine"))
    task_id, body = sdk_task(nap, 0)
    service.publish_task(task_id, body)
    service.wait_results([task_id])
    service.publish_task(task_id, body)
    marker = service.submit(nap, 0)
    answers = assert_answered_once(service, [task_id, marker], settle=1.0)
    assert len(service.results[task_id]) == 1
    assert not answers[task_id].is_error


def test_second_endpoint_in_the_same_directory_refuses_to_start(service, launch):
    launch(engine_yaml("ThreadPoolEngine"))
    service.wait_heartbeat(lambda s: s.get("active") is True)
    second = launch(engine_yaml("ThreadPoolEngine"))
    report = service.wait_heartbeat(lambda s: "error" in s)
    assert "already running" in report.global_state["error"]
    assert second.wait(30) != 0


def test_a_crash_inside_a_session_reconnects_and_redelivers(service, tmp_path):
    """In process: the store fails once while accepting; the task is redelivered."""
    import threading

    from uep.endpoint import Settings, UserEndpoint
    from uep.engines.pools import ThreadPoolEngine
    from uep.store import Store
    from wire.queue_info import AmqpCreds

    engine = ThreadPoolEngine(max_workers=2)
    engine.start(service.endpoint_id, tmp_path)
    creds = AmqpCreds.from_dict(service.amqp_creds())
    failures, ready, holder = [], threading.Event(), {}

    def serve():  # the store belongs to the thread that runs the endpoint
        store = Store(tmp_path / "state.sqlite3")
        real_accept = store.accept

        def accept_failing_once(tasks, results):
            if not failures:
                failures.append(tasks)
                raise OSError("disk hiccup")
            return real_accept(tasks, results)

        store.accept = accept_failing_once
        holder["endpoint"] = UserEndpoint(
            engine=engine,
            store=store,
            credentials=lambda: creds,
            endpoint_id=service.endpoint_id,
            ep_info={},
            settings=Settings(30.0, 0, 5760, None, None, 5.0, False),
        )
        ready.set()
        try:
            holder["endpoint"].run()
        finally:
            store.close()

    runner = threading.Thread(target=serve, daemon=True)
    runner.start()
    assert ready.wait(10)
    try:
        task_id = service.submit(nap, 0)
        answers = assert_answered_once(service, [task_id], settle=0.5)
        assert not answers[task_id].is_error
        assert failures, "the injected failure never happened"
    finally:
        holder["endpoint"].request_stop("test over")
        runner.join(30)
        engine.shutdown()
    assert not runner.is_alive()


def test_opted_in_retries_rerun_journaled_tasks_after_a_crash(service, launch):
    config = (
        "engine:\n  type: GlobusComputeEngine\n  max_workers_per_node: 2\n"
        "  max_retries_on_system_failure: 1\n"
        "  provider:\n    type: LocalProvider\n    init_blocks: 1\n    max_blocks: 1\n"
    )
    first = launch(config)
    ids = [service.submit(nap, 0.3) for _ in range(20)]
    deadline = time.monotonic() + 60
    while len(service.results) < 4 and time.monotonic() < deadline:
        service.drain()
        time.sleep(0.05)
    first.kill(signal.SIGKILL)
    first.wait(10)
    assert len(service.results) < len(ids)
    launch(config)
    answers = assert_answered_once(service, ids)
    assert all(not a.is_error for a in answers.values())


def test_killed_endpoint_leaves_no_pool_workers_behind(service, launch):
    import os

    ep = launch(engine_yaml("ProcessPoolEngine"))
    task_id = service.submit(nap, 0)
    service.wait_results([task_id])

    def group() -> list[str]:
        found = subprocess.run(["pgrep", "-g", str(ep.proc.pid)], capture_output=True, text=True)
        return found.stdout.split()

    assert len(group()) > 1, "expected pool workers next to the endpoint"
    os.kill(ep.proc.pid, signal.SIGKILL)
    ep.proc.wait(10)
    deadline = time.monotonic() + 15
    while group() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group() == []
