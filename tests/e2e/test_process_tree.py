"""No orphans: every process a user endpoint starts goes with it.

With the default engine (GlobusComputeEngine + LocalProvider: bash wrappers, a
worker pool in its own session, workers, a resource tracker) and a researcher
who leaves a double-forked daemon that ignores SIGTERM, nothing of that user
endpoint may be left 5 s after: the manager stops, the manager is killed with
SIGKILL, the user endpoint is killed with SIGKILL, the user endpoint stops
because it is idle. A task still running when the manager stops is answered
with an explicit error, never left waiting. Per-user process limits apply to
everything the researcher starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.appliance import (
    client_env,
    local_accounts,
    manager_children,
    running_manager,
    submit,
    user_endpoint_logs,
)
from tests.fixtures_service import REPO
from tests.processes import processes_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates local users")

CLIENT = REPO / "tests" / "e2e" / "tree_client.py"
GONE_WITHIN_S = 5.0
TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: {{ idle }}
idle_heartbeats_hard: 100
engine:
  type: GlobusComputeEngine
  max_workers_per_node: 2
  provider:
    type: LocalProvider
    init_blocks: 1
    min_blocks: 0
    max_blocks: 1
"""
SCHEMA = {
    "type": "object",
    "properties": {"idle": {"type": "integer", "minimum": 1}},
    "required": ["idle"],
}
BUSY = {"idle": 50}
IDLE = {"idle": 1}


def gone_within(uid: int, seconds: float) -> dict[int, str]:
    """What is still alive of ``uid`` after waiting up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        left = processes_of(uid)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


@contextlib.contextmanager
def appliance(service, tmp_path, count: int = 1, config_yaml: str = ""):
    with local_accounts(count, "tree") as (users, _group):
        routes = {f"user{i}@uni.edu": u.pw_name for i, u in enumerate(users)}
        with running_manager(
            service, tmp_path, routes, TEMPLATE, SCHEMA, config=config_yaml
        ) as mgr:
            try:
                yield mgr
            finally:
                for user in users:
                    for pid in processes_of(user.pw_uid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)


def start_work(mgr, who: str, tmp_path: Path) -> dict:
    """A task that leaves a daemon; returns its pids once the engine is up and busy."""
    out = submit(mgr, who, CLIENT, "run", mgr.id, json.dumps(BUSY), user_dir=tmp_path / who)
    account = mgr.users[int(who.removeprefix("user"))]
    assert out["uid"] == account.pw_uid
    alive = processes_of(account.pw_uid)
    assert out["daemon"] in alive, "the daemon did not survive its task"
    assert len(alive) >= 4, alive  # user endpoint, interchange, pool, workers, daemon
    return out


def test_stopping_the_manager_leaves_nothing_behind(compute_service, tmp_path):
    with appliance(compute_service, tmp_path) as mgr:
        uid = mgr.users[0].pw_uid
        start_work(mgr, "user0", tmp_path)
        mgr.process.send_signal(signal.SIGTERM)
        mgr.process.wait(60)
        left = gone_within(uid, GONE_WITHIN_S)
        assert not left, f"left behind after the manager stopped: {left}"


def test_killing_the_manager_leaves_nothing_behind(compute_service, tmp_path):
    with appliance(compute_service, tmp_path) as mgr:
        uid = mgr.users[0].pw_uid
        start_work(mgr, "user0", tmp_path)
        mgr.process.kill()
        mgr.process.wait(10)
        left = gone_within(uid, GONE_WITHIN_S)
        assert not left, f"left behind after kill -9 of the manager: {left}"


def test_killing_a_user_endpoint_leaves_nothing_and_the_manager_serves_on(
    compute_service, tmp_path
):
    with appliance(compute_service, tmp_path) as mgr:
        uid = mgr.users[0].pw_uid
        start_work(mgr, "user0", tmp_path)
        [uep] = [p for p, f in manager_children(mgr.process.pid).items() if f["uid"][0] == str(uid)]
        before = set(processes_of(uid))
        os.kill(uep, signal.SIGKILL)
        # The manager restarts a crashed user endpoint (its journal may hold tasks to
        # answer): everything of the killed one must go, whatever the new one starts.
        deadline = time.monotonic() + GONE_WITHIN_S
        while before & set(processes_of(uid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {p: c for p, c in processes_of(uid).items() if p in before}
        assert not left, f"left behind after kill -9 of the user endpoint: {left}"
        assert mgr.process.poll() is None
        again = start_work(mgr, "user0", tmp_path / "again")
        assert again["uid"] == uid


def test_an_idle_user_endpoint_takes_everything_with_it(compute_service, tmp_path):
    with appliance(compute_service, tmp_path) as mgr:
        uid = mgr.users[0].pw_uid
        out = submit(mgr, "user0", CLIENT, "run", mgr.id, json.dumps(IDLE), user_dir=tmp_path / "u")
        assert out["daemon"] in processes_of(uid)
        deadline = time.monotonic() + 60
        while manager_children(mgr.process.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not manager_children(mgr.process.pid), "the idle user endpoint did not stop"
        left = gone_within(uid, GONE_WITHIN_S)
        assert not left, f"left behind after an idle stop: {left}\n{user_endpoint_logs(mgr)}"


def test_a_task_running_when_the_manager_stops_is_answered(compute_service, tmp_path):
    with appliance(compute_service, tmp_path) as mgr:
        env = client_env(mgr.service, mgr.clients["user0"], tmp_path / "sdk")
        args = [sys.executable, str(CLIENT), "sleep", mgr.id, json.dumps(BUSY), "60"]
        held = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([held.stdout], [], [], 120)
            assert ready, "the task was not submitted"
            json.loads(held.stdout.readline())
            deadline = time.monotonic() + 60
            while len(processes_of(mgr.users[0].pw_uid)) < 4:
                assert time.monotonic() < deadline, "the engine did not start"
                time.sleep(0.2)
            time.sleep(2)  # the task is running on a worker
            mgr.process.send_signal(signal.SIGTERM)
            try:
                out, _ = held.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    "the task was never answered\n" + mgr.log()[-3000:] + user_endpoint_logs(mgr)
                )
        finally:
            if held.poll() is None:
                held.kill()
                held.wait(10)
        outcome = json.loads(out.strip().splitlines()[-1])
        assert "error" in outcome and "stopped" in outcome["error"], outcome


def test_a_per_user_process_limit_holds_for_everything_they_start(compute_service, tmp_path):
    config = "limits:\n  processes_per_user: 40\n"
    with appliance(compute_service, tmp_path, config_yaml=config) as mgr:
        cfg = json.dumps(BUSY)
        out = submit(mgr, "user0", CLIENT, "fork", mgr.id, cfg, "200", user_dir=tmp_path / "u")
        assert out["refused"] and "Resource temporarily unavailable" in out["refused"], out
        assert out["started"] < 40
