"""The monitor's child table (reaping, with real tiny same-user children) and the
manager's restart book.

Stopping needs root (signals go out as the child's user) and is covered in
``tests/integration/test_children_stop.py``.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from identity.policy import LocalAccount
from mep.monitor.children import ChildTable, ExitRecord
from mep.monitor.spawn import Spawned
from mep.restart_policy import RestartBook, RestartPolicy, Verdict, exit_facts

ME = LocalAccount("someone", 4242, 4242, (4242,), "/home/someone", "/bin/sh")
OTHER = LocalAccount("other", 4343, 4343, (4343,), "/home/other", "/bin/sh")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fork_child(action) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            action()
        finally:
            os._exit(0)
    return pid


def wait_until_zombie(pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return
        time.sleep(0.01)
    raise AssertionError(f"child {pid} never exited")


def spawned(pid: int, account: LocalAccount = ME) -> Spawned:
    return Spawned(pid=pid, pgid=pid, account=account)


@pytest.fixture
def table():
    t = ChildTable(clock=Clock())
    yield t
    for name in ("a", "b", "c", "ep", "clean", "failed", "killed"):
        if name in t:
            pid = t.get(name).spawned.pid
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_reap_reports_exit_codes_and_signals_once(table):
    clean = fork_child(lambda: os._exit(0))
    failed = fork_child(lambda: os._exit(3))
    killed = fork_child(lambda: os.kill(os.getpid(), signal.SIGKILL))
    for name, pid in (("clean", clean), ("failed", failed), ("killed", killed)):
        table.add(name, spawned(pid))
    for pid in (clean, failed, killed):
        wait_until_zombie(pid)
    table._clock.now += 12.5
    records = {r.name: r for r in table.reap()}
    assert set(records) == {"clean", "failed", "killed"}
    assert (records["clean"].rc, records["clean"].signal, records["clean"].clean) == (0, None, True)
    assert records["clean"].describe() == "stopped normally"
    assert records["failed"].describe() == "return code 3" and not records["failed"].clean
    assert records["killed"].signal == signal.SIGKILL and records["killed"].rc is None
    assert records["killed"].describe() == "terminated by signal SIGKILL"
    assert all(r.ran_s == 12.5 and not r.stop_requested for r in records.values())
    assert table.reap() == []
    assert len(table) == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(clean, os.WNOHANG)


def test_running_children_stay_in_the_table(table):
    r, w = os.pipe()
    pid = fork_child(lambda: os.read(r, 1))
    table.add("ep", spawned(pid))
    assert table.reap() == []
    assert "ep" in table and table.get("ep").spawned.pid == pid
    os.write(w, b"x")
    wait_until_zombie(pid)
    assert [rec.name for rec in table.reap()] == ["ep"]
    os.close(r)
    os.close(w)


def test_reap_leaves_other_children_alone(table):
    """Only the table's own pids are waited for: subprocess & co keep their statuses."""
    stranger = fork_child(lambda: os._exit(7))
    wait_until_zombie(stranger)
    assert table.reap() == []
    _, status = os.waitpid(stranger, 0)
    assert os.waitstatus_to_exitcode(status) == 7


def test_one_user_endpoint_per_name(table):
    r, w = os.pipe()
    pids = [fork_child(lambda: os.read(r, 1)) for _ in range(3)]
    table.add("a", spawned(pids[0]))
    table.add("b", spawned(pids[1]))
    table.add("c", spawned(pids[2], OTHER))
    with pytest.raises(ValueError, match="already running"):
        table.add("a", spawned(pids[2]))
    assert len(table) == 3
    os.write(w, b"xxx")
    for pid in pids:
        wait_until_zombie(pid)
    assert len(table.reap()) == 3
    os.close(r)
    os.close(w)


def test_describe_an_unknown_status():
    record = ExitRecord("ep", 1, ME, None, None, 0.0, False)
    assert "unknown" in record.describe()


def test_an_exit_becomes_the_event_the_manager_reads():
    record = ExitRecord("ep", 7, ME, None, 9, 1.23456, True, "uep-id")
    assert record.event() == {
        "event": "exited",
        "name": "ep",
        "pid": 7,
        "rc": None,
        "signal": 9,
        "ran_s": 1.235,
        "stop_requested": True,
    }


@pytest.fixture
def book():
    return RestartBook(RestartPolicy(max_failures=2, healthy_run_s=60.0), clock=Clock())


def test_restart_history_is_kept_per_name(book):
    quick_crash = exit_facts(1, None, 1.0, False)
    assert book.after_exit("ep", quick_crash, True).verdict is Verdict.RESTART
    assert book.before_start("ep") is None
    assert book.after_exit("ep", quick_crash, True).verdict is Verdict.CIRCUIT_OPEN
    refused = book.before_start("ep")
    assert refused is not None and refused.verdict is Verdict.CIRCUIT_OPEN
    assert book.before_start("another") is None
    book._clock.now += book.policy.cooldown_s
    assert book.before_start("ep") is None


def test_a_clean_exit_with_work_is_restarted(book):
    healthy = exit_facts(0, None, 3600.0, False)
    decision = book.after_exit("ep", healthy, has_pending_work=True)
    assert decision.restart and decision.delay_s == 0.0
    assert not book.after_exit("ep", healthy, has_pending_work=False).restart


def test_failed_spawns_count(book):
    book.after_start_failure("ep")
    assert book.after_start_failure("ep").verdict is Verdict.CIRCUIT_OPEN


@pytest.mark.parametrize(
    ("rc", "sig", "words", "refused", "final"),
    [
        (0, None, "stopped normally", False, False),
        (3, None, "return code 3", False, False),
        (None, 9, "signal 9", False, False),
        (65, None, "return code 65", True, False),
        (78, None, "return code 78", False, True),
    ],
)
def test_exit_facts_from_the_monitors_report(rc, sig, words, refused, final):
    facts = exit_facts(rc, sig, 2.0, False)
    assert words in facts.description
    assert (facts.clean, facts.refused, facts.final) == (rc == 0, refused, final)
