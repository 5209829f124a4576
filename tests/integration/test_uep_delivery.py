# ruff: noqa: F811 - pytest fixtures imported from the harness are parameters here
"""Nothing is lost: crash, broker restart and idle shutdown of a user endpoint.

Every test ends with every submitted task answered by exactly one answer
(a result or an explicit error). A re-send of the *same* stored answer, which
happens when the broker persisted a result but its confirm never reached us,
is allowed: the bytes are identical, so the service sees one answer.
"""

from __future__ import annotations

import contextlib
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


def wait_for_gate(path):
    """A task that runs until the test opens its gate (a file); bounded at 60 s."""
    import os
    import time

    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return path


def _close_connections_of(vhost: str, name: str, timeout_s: float = 20) -> int:
    """Close the broker connections called ``name`` on ``vhost``, as a broker restart does.

    The management API lists a new connection only after its next statistics
    tick (a few seconds), so it is asked until the connection shows up.
    """
    import httpx

    api, auth = "http://127.0.0.1:15672/api", ("guest", "guest")
    deadline = time.monotonic() + timeout_s
    while True:
        found = [
            conn["name"]
            for conn in httpx.get(f"{api}/connections", auth=auth, timeout=10).json()
            if conn.get("vhost") == vhost
            and conn.get("client_properties", {}).get("connection_name") == name
        ]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for conn in found:
        httpx.delete(f"{api}/connections/{conn}", auth=auth, timeout=10)
    return len(found)


@contextlib.contextmanager
def endpoint_in_this_process(service, tmp_path, max_workers: int = 1):
    """A user endpoint run on a thread of the test (so a test can patch its code);
    stopped, with its engine, on the way out."""
    import threading

    from uep.endpoint import Settings, UserEndpoint
    from uep.engines.pools import ThreadPoolEngine
    from uep.store import Store
    from wire.queue_info import AmqpCreds

    engine = ThreadPoolEngine(max_workers=max_workers)
    engine.start(service.endpoint_id, tmp_path)
    creds = AmqpCreds.from_dict(service.amqp_creds())
    ready, holder = threading.Event(), {}

    def serve():  # the store belongs to the thread that runs the endpoint
        store = Store(tmp_path / "state.sqlite3")
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
    try:
        assert ready.wait(10)
        yield holder["endpoint"]
    finally:
        if "endpoint" in holder:
            holder["endpoint"].request_stop("test over")
        runner.join(30)
        engine.shutdown()
    assert not runner.is_alive()


def _wait_for_pending(endpoint, waiting: int, timeout_s: float = 30) -> None:
    """Until the session holds ``waiting`` deliveries the engine has no room for."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        session = endpoint._session
        if session is not None and len(session.pending) == waiting:
            return
        time.sleep(0.05)


def test_a_pump_in_the_last_pass_of_a_dropped_session_loses_nothing(service, tmp_path, monkeypatch):
    """The broker drops the connection while deliveries wait for room in the engine.

    pika ends a connection the broker closed from an ioloop callback, and the
    timers due in that same pass still run after it: a pump armed earlier (the
    pump re-arms itself while deliveries wait) then finds room (a task just
    finished) and channels that are already closed. Here the two events that
    race in production are put into that one pass: a task finishes and a pump
    is due when the session learns the connection is gone. Every task must
    still be answered, once.
    """
    import threading

    from uep import session as session_module

    gates = tmp_path / "gates"
    gates.mkdir()
    raced = threading.Event()
    real_on_closed = session_module.Session._on_closed

    def on_closed_in_the_race(self, conn, reason):
        if not raced.is_set():
            raced.set()
            (gates / "0").touch()  # the running task finishes: room for a delivery
            deadline = time.monotonic() + 10
            while (
                self.ep.engine.outstanding >= self.ep.window.floor and time.monotonic() < deadline
            ):
                time.sleep(0.01)
            conn.ioloop.call_later(0, self.pump)  # the pump an earlier pass armed
        real_on_closed(self, conn, reason)

    monkeypatch.setattr(session_module.Session, "_on_closed", on_closed_in_the_race)
    with endpoint_in_this_process(service, tmp_path) as endpoint:
        waiting = 3
        count = endpoint.window.floor + waiting
        try:
            ids = [service.submit(wait_for_gate, str(gates / str(n))) for n in range(count)]
            _wait_for_pending(endpoint, waiting)
            assert endpoint.engine.outstanding == endpoint.window.floor, (
                "the engine never filled up"
            )
            assert _close_connections_of(service.vhost, f"uep {service.endpoint_id}") == 1
            assert raced.wait(10), "the session never saw its connection close"
        finally:
            for n in range(count):
                (gates / str(n)).touch()
        answers = assert_answered_once(service, ids, settle=0.5)
        assert all(not a.is_error for a in answers.values())


def test_a_task_journaled_but_never_started_runs_when_delivered_again(
    service, tmp_path, monkeypatch
):
    """A pump cut short between the journal and the engine (here: the engine's
    hand-off fails once) must not leave the task journaled forever: its delivery
    was never acked, and when the broker delivers it again it runs."""
    from uep.endpoint import UserEndpoint

    real_submit = UserEndpoint.submit
    failures = []

    def submit_failing_once(self, verdict, body):
        if not failures:
            failures.append(verdict.task_id)
            raise RuntimeError("cut short between the journal and the engine")
        return real_submit(self, verdict, body)

    monkeypatch.setattr(UserEndpoint, "submit", submit_failing_once)
    with endpoint_in_this_process(service, tmp_path):
        task_id = service.submit(nap, 0)
        answers = assert_answered_once(service, [task_id], settle=0.5)
        assert failures == [task_id], "the injected failure never happened"
        assert not answers[task_id].is_error


def _queued(service, expected: int, timeout_s: float = 10) -> int:
    """Messages ready in the task queue, once the broker has taken back what it expects."""
    deadline = time.monotonic() + timeout_s
    while True:
        ready = service._channel().queue_declare(service.task_queue, passive=True)
        if ready.method.message_count == expected or time.monotonic() > deadline:
            return ready.method.message_count
        time.sleep(0.1)


def _counting_pumps(monkeypatch) -> list[tuple[int, int]]:
    """After each pump: (tasks the engine holds, the session's prefetch)."""
    from uep import session as session_module

    seen = []
    real_pump = session_module.Session.pump

    def pump_and_count(self):
        real_pump(self)
        seen.append((self.ep.engine.outstanding, self.prefetch))

    monkeypatch.setattr(session_module.Session, "pump", pump_and_count)
    return seen


def test_short_small_tasks_open_the_engines_window_and_the_prefetch(service, tmp_path, monkeypatch):
    """Tasks that finish in milliseconds let the engine hold more than its floor.

    With the floor alone, every refill waits for a result to come back and for
    the broker to send the next deliveries; that round trip set the pace of
    no-op bursts. The window opens by what the engine finished in the last
    ``SOON_S`` seconds, never past its ceiling, and the session consumes again
    so the broker may send up to the ceiling ahead.
    """
    seen = _counting_pumps(monkeypatch)
    ids = [service.submit(nap, 0.002) for _ in range(400)]
    with endpoint_in_this_process(service, tmp_path) as endpoint:
        answers = assert_answered_once(service, ids, settle=0.5)
    assert all(not a.is_error for a in answers.values())
    window = endpoint.window
    held = max(h for h, _ in seen)
    assert window.floor + 20 < held <= window.ceiling, (window.floor, held)
    assert seen[0][1] == window.floor
    assert max(p for _, p in seen) == window.ceiling


def test_big_tasks_are_never_sent_ahead(service, tmp_path, monkeypatch):
    """Short tasks of 200 KB each open the engine's window, but the broker's
    prefetch stays at the floor: a ceiling of such tasks waiting in memory
    would cost the user endpoint tens of megabytes for nothing."""
    from uep.window import SMALL_TASK_BYTES

    seen = _counting_pumps(monkeypatch)
    ballast = b"x" * (2 * SMALL_TASK_BYTES)
    ids = [service.submit(len, ballast) for _ in range(300)]
    with endpoint_in_this_process(service, tmp_path) as endpoint:
        answers = assert_answered_once(service, ids, settle=0.5)
    assert {a.is_error for a in answers.values()} == {False}
    assert {p for _, p in seen} == {endpoint.window.floor}


def test_slow_tasks_keep_the_floor_and_a_stop_leaves_the_rest_queued(service, tmp_path):
    """Tasks that do not finish never open the window: the engine holds its floor,
    the session holds a prefetch of the floor waiting for room, and the broker
    keeps the rest. A stop answers only what the engine held as unknown; the
    waiting deliveries were never acked, so they go back to the queue and the next
    session runs them."""
    from uep.session import SHUTTING_DOWN

    gates = tmp_path / "gates"
    gates.mkdir()
    beyond = 10
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    try:
        with endpoint_in_this_process(service, first_dir) as endpoint:
            floor = endpoint.window.floor
            ids = [
                service.submit(wait_for_gate, str(gates / "open"))
                for _ in range(2 * floor + beyond)
            ]
            _wait_for_pending(endpoint, floor)
            time.sleep(0.5)
            assert len(endpoint._session.pending) == floor, "the prefetch rose for slow tasks"
            assert endpoint._session.prefetch == floor
            assert endpoint.engine.outstanding == floor
            assert _queued(service, beyond) == beyond
            endpoint.request_stop("the admin stops it")
            stopped = service.wait_results(ids[:floor], timeout=30)  # one queue: FIFO
            (gates / "open").touch()
        assert all(r.is_error and r.data == SHUTTING_DOWN for r in stopped.values())
        assert _queued(service, floor + beyond) == floor + beyond
        service.drain()
        assert set(service.results) == set(ids[:floor])
        with endpoint_in_this_process(service, second_dir):
            answers = assert_answered_once(service, ids, settle=0.5)
    finally:
        (gates / "open").touch()
    ran = [a for a in answers.values() if not a.is_error]
    assert len(ran) == floor + beyond
