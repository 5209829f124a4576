"""The child table's bookkeeping and reaping, with real (tiny, same-user) child processes.

Stopping needs root (signals go out as the child's user) and is covered in
``tests/integration/test_children_stop.py``.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from mep.children import ChildTable, ExitRecord
from mep.privilege import LocalAccount, Spawned
from mep.restart_policy import RestartPolicy, Verdict

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
    t = ChildTable(RestartPolicy(max_failures=2, healthy_run_s=60.0), clock=Clock())
    yield t
    for name in list(t.running_users()):
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


def test_one_user_endpoint_per_name_and_per_user_counts(table):
    r, w = os.pipe()
    pids = [fork_child(lambda: os.read(r, 1)) for _ in range(3)]
    table.add("a", spawned(pids[0]))
    table.add("b", spawned(pids[1]))
    table.add("c", spawned(pids[2], OTHER))
    with pytest.raises(ValueError, match="already running"):
        table.add("a", spawned(pids[2]))
    assert table.running_users() == {"a": "someone", "b": "someone", "c": "other"}
    assert (table.count_for("someone"), table.count_for("other"), table.count_for("x")) == (2, 1, 0)
    os.write(w, b"xxx")
    for pid in pids:
        wait_until_zombie(pid)
    assert len(table.reap()) == 3
    os.close(r)
    os.close(w)


def test_describe_an_unknown_status():
    record = ExitRecord("ep", 1, ME, None, None, 0.0, False)
    assert "unknown" in record.describe()


def test_restart_history_is_kept_per_name(table):
    quick_crash = ExitRecord("ep", 1, ME, 1, None, 1.0, False)
    assert table.after_exit(quick_crash, True).verdict is Verdict.RESTART
    assert table.before_start("ep") is None
    assert table.after_exit(quick_crash, True).verdict is Verdict.CIRCUIT_OPEN
    refused = table.before_start("ep")
    assert refused is not None and refused.verdict is Verdict.CIRCUIT_OPEN
    assert table.before_start("another") is None
    table._clock.now += table.policy.cooldown_s
    assert table.before_start("ep") is None


def test_a_clean_exit_with_work_is_restarted(table):
    healthy = ExitRecord("ep", 1, ME, 0, None, 3600.0, False)
    decision = table.after_exit(healthy, has_pending_work=True)
    assert decision.restart and decision.delay_s == 0.0
    assert not table.after_exit(healthy, has_pending_work=False).restart


def test_failed_spawns_count(table):
    table.after_start_failure("ep")
    assert table.after_start_failure("ep").verdict is Verdict.CIRCUIT_OPEN
