"""One fault in the middle of a 1,000-task batch; nothing may be lost or answered twice.

Each case: a local account, a root manager (ThreadPoolEngine), the service on
port 5000, the official SDK submitting with ``Client.batch_run``; once the first
answers are in, the fault; then the batch must settle: every task answered
(a result or an explicit error), none twice. Each row lands in the table
printed at the end and in ``bench/results/faults.json``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.appliance import local_accounts, manager_children, running_manager
from tests.faults.conftest import ROWS
from tests.faults.harness import Batch
from tests.fixtures_service import RunningService, free_port

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creates local users"),
    pytest.mark.timeout(420),
]

TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: 30
idle_heartbeats_hard: 200
engine:
  type: ThreadPoolEngine
  max_workers: 4
{% if state_dir is defined %}
paths:
  endpoint_dir: {{ state_dir }}
{% endif %}
"""
SCHEMA = {"type": "object", "properties": {"state_dir": {"type": "string"}}}
FIRST_ANSWERS = 50
SETTLE_S = 180.0


@pytest.fixture
def appliance(compute_service, tmp_path):
    with local_accounts(1, "fault") as (users, _group):
        routes = {"alice@uni.edu": users[0].pw_name}
        with running_manager(compute_service, tmp_path, routes, TEMPLATE, SCHEMA) as mgr:
            yield mgr


def through(appliance, tmp_path, fault: str, inject, config=None, poison=None, settle=SETTLE_S):
    """Submit, wait for the first answers, inject the fault, settle; record and check the row."""
    batch = Batch(appliance, "alice", tmp_path, config=config, poison=poison)
    try:
        batch.submit()
        batch.wait_answered(FIRST_ANSWERS, timeout_s=120)
        inject()
        batch.settle(settle)
        row = batch.row(fault)
        ROWS.append(row)
        failed = row.lost or row.answered_twice or row.results + row.errors != row.submitted
        keep = Path(os.environ.get("CA_FAULTS_EVIDENCE", tmp_path / "evidence")) / tmp_path.name
        why = batch.explain(keep if failed else None)
        if os.environ.get("CA_FAULTS_DEBUG"):
            print(why)
        assert row.lost == 0, f"{row.lost} task(s) never answered: {row}\n{why}"
        assert row.answered_twice == 0, f"{row}\n{why}"
        assert row.results + row.errors == row.submitted
        return batch, row
    finally:
        batch.close()


def rabbitmq(action: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", action], check=True, capture_output=True, timeout=120)


def broker_outage(seconds: float):
    def inject() -> None:
        rabbitmq("stop_app")
        try:
            time.sleep(seconds)
        finally:
            rabbitmq("start_app")

    return inject


def test_a_two_second_broker_restart(appliance, tmp_path):
    through(appliance, tmp_path, "broker restart (2 s outage)", broker_outage(2))


@pytest.mark.timeout(560)
def test_a_two_minute_broker_outage(appliance, tmp_path):
    through(appliance, tmp_path, "broker outage (120 s)", broker_outage(120), settle=300)


def test_kill_9_of_the_user_endpoint(appliance, tmp_path):
    def inject() -> None:
        uid = str(appliance.users[0].pw_uid)
        for pid, facts in manager_children(appliance.process.pid).items():
            if facts["uid"][0] == uid:
                os.kill(pid, signal.SIGKILL)

    _batch, row = through(appliance, tmp_path, "kill -9 of the user endpoint", inject)
    assert row.results > 0


def test_kill_9_of_the_manager_and_its_restart(appliance, tmp_path):
    def inject() -> None:
        appliance.process.kill()
        appliance.process.wait(10)
        time.sleep(2)
        appliance.start()

    through(appliance, tmp_path, "kill -9 of the manager, restart", inject)


def test_kill_9_of_the_service_and_its_restart(appliance, tmp_path):
    service = appliance.service

    def inject() -> None:
        service.kill()
        time.sleep(1)
        service.start()

    through(appliance, tmp_path, "kill -9 of the service, restart", inject)


def test_two_service_replicas_one_killed(appliance, tmp_path):
    service = appliance.service
    if not service.db_url.startswith("postgresql"):
        pytest.skip("replicas share the service's PostgreSQL database; none answers here")
    replica = RunningService(
        port=free_port(), db_url=service.db_url, amqp_url=service.amqp_url, log_path=tmp_path / "r"
    )
    replica.start()
    try:
        through(appliance, tmp_path, "two replicas, one killed (PostgreSQL)", replica.kill)
    finally:
        replica.kill()


@contextlib.contextmanager
def small_disk(size: str = "16m"):
    """A size-limited tmpfs every local user may write in; unmounted afterwards."""
    mount = Path(f"/tmp/ca-faults-disk-{uuid.uuid4().hex[:8]}")
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        mount.rmdir()


def test_the_user_endpoints_disk_fills_up(appliance, tmp_path):
    with small_disk() as disk:
        filler = disk / "filler"

        def inject() -> None:
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
            time.sleep(5)
            filler.unlink()

        config = {"state_dir": str(disk / "uep")}
        through(appliance, tmp_path, "disk full under the journal (5 s)", inject, config=config)


def test_a_poison_result(appliance, tmp_path):
    def inject() -> None:
        """The poison is in the batch: task 500 fails with a NUL and a NaN in its traceback."""

    _batch, row = through(appliance, tmp_path, "poison result (NUL, NaN)", inject, poison=500)
    assert row.errors >= 1
