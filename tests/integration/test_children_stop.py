"""Stopping and reaping real privilege-dropped children through ChildTable."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from mep.monitor.children import ChildTable
from tests.integration.test_privilege_parent_death import alive
from tests.integration.test_privilege_spawn import (  # noqa: F401 (fixtures)
    local_account,
    make_request,
    probe_dir,
    spawn_user_endpoint,
    wait_for_log,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users and drop privileges"),
]


@pytest.fixture
def table():
    t = ChildTable()
    yield t
    t.stop_all(grace_s=1.0)
    t.reap()


def start(table, name, account, probe_dir, *args, **overrides):  # noqa: F811
    req = make_request(account, probe_dir, *args, **overrides)
    spawned = spawn_user_endpoint(req)
    table.add(name, spawned)
    return spawned, os.path.join(req.log_dir, req.log_name)


def my_zombies() -> list[int]:
    zombies = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = dict(
                line.split(":\t", 1)
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            )
        except (OSError, ValueError):
            continue
        if int(fields["PPid"]) == os.getpid() and fields["State"].startswith("Z"):
            zombies.append(int(pid))
    return zombies


def test_stop_ends_a_cooperative_child_with_sigterm(table, local_account, probe_dir, caplog):  # noqa: F811
    spawned, log = start(table, "ep", local_account, probe_dir)
    wait_for_log(log, "ready")
    assert table.stop("ep", grace_s=10.0)
    assert not [r for r in caplog.records if r.name == "mep.monitor.children"], (
        "no signal went astray"
    )
    assert "ep" not in table and not alive(spawned.pid)
    [record] = table.reap()
    assert (record.name, record.pid, record.signal) == ("ep", spawned.pid, signal.SIGTERM)
    assert record.stop_requested
    assert table.reap() == []


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(table, local_account, probe_dir):  # noqa: F811
    spawned, log = start(table, "stubborn", local_account, probe_dir, "ignore-term")
    wait_for_log(log, "ready")
    began = time.monotonic()
    assert table.stop("stubborn", grace_s=1.0)
    assert time.monotonic() - began >= 1.0, "SIGTERM was ignored, so the grace period ran out"
    [record] = table.reap()
    assert record.signal == signal.SIGKILL and record.describe() == "terminated by signal SIGKILL"
    assert not alive(spawned.pid)


def test_stop_kills_the_whole_process_group(table, local_account, probe_dir):  # noqa: F811
    """A worker the user endpoint forked (same group) does not outlive the stop."""
    helper = probe_dir / "forker.py"
    helper.write_text(
        "import os, signal, time, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "if os.fork() == 0:\n"
        "    print('worker', os.getpid(), flush=True)\n"
        "    time.sleep(600)\n"
        "time.sleep(600)\n"
    )
    helper.chmod(0o644)
    _, log = start(table, "grp", local_account, probe_dir, argv=("/usr/bin/python3", str(helper)))
    worker = int(wait_for_log(log, "worker").split()[1])
    assert alive(worker)
    assert table.stop("grp", grace_s=0.5)
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)


def test_stop_all_uses_one_grace_period_for_everyone(table, local_account, probe_dir):  # noqa: F811
    logs = [start(table, f"ep{i}", local_account, probe_dir, "ignore-term")[1] for i in range(3)]
    for log in logs:
        wait_for_log(log, "ready")
    began = time.monotonic()
    table.stop_all(grace_s=1.0)
    assert time.monotonic() - began < 3.0 * 1.0, "the grace periods did not add up"
    records = table.reap()
    assert sorted(r.name for r in records) == ["ep0", "ep1", "ep2"]
    assert all(r.signal == signal.SIGKILL and r.stop_requested for r in records)
    assert len(table) == 0


def test_a_child_that_exits_by_itself_is_reaped(table, local_account, probe_dir):  # noqa: F811
    spawned, _ = start(table, "short", local_account, probe_dir, "exit=4")
    deadline = time.monotonic() + 30
    records = []
    while not records and time.monotonic() < deadline:
        time.sleep(0.05)
        records = table.reap()
    [record] = records
    assert (record.pid, record.rc, record.stop_requested) == (spawned.pid, 4, False)
    assert record.describe() == "return code 4"


def test_a_hundred_start_stop_cycles_leave_no_zombies_or_descriptors(
    table,
    local_account,  # noqa: F811
    probe_dir,  # noqa: F811
):
    fds_before = len(os.listdir("/proc/self/fd"))
    for i in range(100):
        start(table, f"cycle-{i % 3}", local_account, probe_dir, argv=("/bin/sleep", "60"))
        assert table.stop(f"cycle-{i % 3}", grace_s=5.0)
        [record] = table.reap()
        assert record.signal == signal.SIGTERM
    assert len(table) == 0
    assert my_zombies() == []
    assert len(os.listdir("/proc/self/fd")) == fds_before
