"""The broker's trust boundaries, attacked from where an attacker sits.

Real everything: the service on port 5000, RabbitMQ, a root manager, two
researchers' local accounts, the official SDK. Alice's function scans every
process of her own account (memory through /proc/PID/mem, environment,
command lines, descriptors and memfds, her home directory) for broker
credentials and tries each one, and the well-known ``guest``, against
the manager's command queue, Bob's task queue and result queue, the service's
queues, and the broker's configuration. It also forges a result for Bob's
pending task and an error report for Bob's user endpoint with her own account,
which the broker lets through and the service must ignore. Commands from
anyone but the service, and a refresh naming another identity, must change
nothing.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pika
import pytest

from service.routing import Topology, user_endpoint_id
from tests.e2e.appliance import (
    ServiceSide,
    client_env,
    local_accounts,
    manager_children,
    running_manager,
    submit,
)
from tests.fixtures_service import REPO, _rabbitmqctl, service_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates local users")

CLIENT = REPO / "tests" / "e2e" / "trust_client.py"
TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: 30
idle_heartbeats_hard: 120
engine:
{% if gce %}
  type: GlobusComputeEngine
  max_workers_per_node: 1
  provider:
    type: LocalProvider
    init_blocks: 1
    min_blocks: 0
    max_blocks: 1
{% else %}
  type: ThreadPoolEngine
  max_workers: 4
{% endif %}
# {{ tag }}
"""
SCHEMA = {
    "type": "object",
    "properties": {"gce": {"type": "boolean"}, "tag": {"type": "string"}},
    "required": ["gce", "tag"],
    "additionalProperties": False,
}
REFUSED = (
    "read_manager_commands",
    "consume_manager_commands",
    "publish_command",
    "publish_command_default_exchange",
    "read_other_task_queue",
    "inject_other_task",
    "read_service_results",
    "read_service_heartbeats",
    "read_other_clients_results",
    "declare_exchange",
    "declare_queue",
    "declare_private_queue",
    "bind_service_results",
    "delete_results_exchange",
    "delete_service_results",
    "purge_service_results",
    "publish_as_other_user_endpoint",
    "heartbeat_as_manager",
    "heartbeat_as_other",
)


@pytest.fixture(scope="module")
def appliance(compute_service, tmp_path_factory):
    with local_accounts(2, "trust") as (users, _group):
        alice, bob = users
        routes = {"alice@uni.edu": alice.pw_name, "bob@lab.org": bob.pw_name}
        root = tmp_path_factory.mktemp("trust")
        with running_manager(compute_service, root, routes, TEMPLATE, SCHEMA) as mgr:
            yield mgr


@pytest.fixture
def flag():
    """A file a held task waits for; in /tmp so the researcher's account can see it."""
    path = Path(f"/tmp/ca-release-{uuid.uuid4().hex}")
    yield path
    path.unlink(missing_ok=True)


class Held:
    """A researcher's task that waits for ``flag``: pending, on a live user endpoint."""

    def __init__(self, mgr, who: str, config: dict, flag: Path, tmp_path: Path) -> None:
        env = client_env(mgr.service, mgr.clients[who], tmp_path / f"sdk-{who}")
        args = [sys.executable, str(CLIENT), "hold", mgr.id, json.dumps(config), str(flag)]
        self.flag = flag
        self.process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], 120)
        assert ready, "the held task was not submitted"
        self.task_id = json.loads(self.process.stdout.readline())["task_id"]
        self.uep_id = user_endpoint_id(mgr.id, mgr.clients[who]["identity_id"], config)

    def release(self) -> dict:
        self.flag.touch(mode=0o644)
        out, _ = self.process.communicate(timeout=120)
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def held(appliance, flag, tmp_path):
    made = []

    def hold(who: str, config: dict) -> Held:
        made.append(Held(appliance, who, config, flag, tmp_path))
        return made[-1]

    yield hold
    flag.touch()
    for each in made:
        each.stop()


def _task_status(mgr, who: str, task_id: str) -> dict:
    with mgr.service.api(mgr.service.token(mgr.clients[who])) as api:
        return api.get(f"/v2/tasks/{task_id}").json()


def _user_endpoints_of(mgr, uid: int) -> set[str]:
    """Ids of the user endpoints the manager runs as ``uid`` (from their process titles)."""
    ids = set()
    for proc in manager_children(mgr.process.pid).values():
        if proc["uid"][0] == str(uid):
            ids |= set(re.findall(r"uep\.([0-9a-f-]{36})", proc["cmdline"]))
    return ids


def _dropped(mgr) -> dict[tuple[str, str], int]:
    done = service_cli("status", "--db", mgr.service.db_url)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return {(r["kind"], r["reason"]): r["count"] for r in rows}


@pytest.mark.parametrize("engine", ["ThreadPoolEngine", "GlobusComputeEngine"])
def test_a_researchers_function_reaches_nothing_but_its_own_queues(
    appliance, held, engine, tmp_path
):
    mgr = appliance
    bob = held("bob", {"gce": False, "tag": "victim"})
    bob_task = _task_status(mgr, "bob", bob.task_id)
    assert bob_task["status"] == "waiting-for-ep"
    before = _dropped(mgr)
    url = urllib.parse.urlsplit(mgr.service.amqp_url)
    targets = {
        "prefix": "",
        "broker": f"{url.hostname}:{url.port}{url.path}",
        "manager_id": mgr.id,
        "other_uep_id": bob.uep_id,
        "other_task_queue": f"{bob.uep_id}.tasks",
        "other_sdk_queue": f"tg.{mgr.clients['bob']['identity_id']}.{bob_task['task_group_id']}",
        "other_task_id": bob.task_id,
        "service_user": urllib.parse.unquote(url.username),
    }
    config = {"gce": engine == "GlobusComputeEngine", "tag": f"scan-{engine}"}
    report = submit(
        mgr,
        "alice",
        CLIENT,
        "scan",
        mgr.id,
        json.dumps(config),
        json.dumps(targets),
        user_dir=tmp_path / "sdk-alice",
    )
    own = f"uep.{user_endpoint_id(mgr.id, mgr.clients['alice']['identity_id'], config)}"
    found = {c["user"]: c["sources"] for c in report["credentials"]}
    assert own in found, f"the scan found no live credential at all: {report}"
    alices = {f"uep.{u}" for u in _user_endpoints_of(mgr, mgr.users[0].pw_uid)}
    assert set(found) <= alices, f"credentials the broker accepts, besides Alice's own: {found}"
    for sources in found.values():
        assert set(sources) <= {"memory", "memfd"}, "a secret in env, argv or a file"
    for user, outcomes in report["attacks"].items():
        allowed = {a: outcomes[a] for a in REFUSED if not outcomes[a].startswith("refused")}
        assert not allowed, f"{user} could: {allowed}"
    mine = report["attacks"][own]
    # Refused by the broker's permissions, not by a connection that happened to fail.
    assert all("ACCESS_REFUSED" in mine[a] for a in REFUSED), mine
    assert "PRECONDITION_FAILED" in mine["spoof_service_user_id"]
    assert mine["spoof_service_user_id"].startswith("refused"), mine["spoof_service_user_id"]
    assert mine["own_task_queue_passive"] == "allowed"  # a working credential, confined
    # The broker lets Alice publish under her own name; the service must not believe it.
    assert mine["forge_result_for_other_task"] == "allowed"
    assert mine["forge_error_heartbeat_for_other"] == "allowed"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        after = _dropped(mgr)
        if after.get(("result", "not_the_tasks_endpoint"), 0) > before.get(
            ("result", "not_the_tasks_endpoint"), 0
        ) and after.get(("heartbeat", "not_the_senders_endpoint"), 0) > before.get(
            ("heartbeat", "not_the_senders_endpoint"), 0
        ):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the forgeries were not refused and counted: {after}")
    assert _task_status(mgr, "bob", bob.task_id)["status"] == "waiting-for-ep"
    assert bob.release() == {"result": "the real result"}


def test_a_command_from_anyone_but_the_service_starts_nothing(appliance):
    """Even with a broker misconfigured to let an intruder write the command queue."""
    mgr = appliance
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(mgr.service.amqp_url).path[1:])
    intruder, secret = f"intruder-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    _rabbitmqctl("add_user", intruder, secret)
    side = ServiceSide(mgr)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, intruder, "", ".*", "")
        url = Topology(mgr.service.amqp_url).party_url(intruder, secret)
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            before = set(manager_children(mgr.process.pid))
            log_before = mgr.log().count("dropping a command not sent by the service")
            forged = [side.command("alice@uni.edu"), side.command("alice@uni.edu")]
            side.publish(forged[0], user_id=None, channel=channel)
            side.publish(forged[1], user_id=intruder, channel=channel)
            deadline = time.monotonic() + 15
            while mgr.log().count("dropping a command not sent by the service") < log_before + 2:
                assert time.monotonic() < deadline, mgr.log()[-3000:]
                time.sleep(0.2)
        finally:
            connection.close()
        for command in forged:
            assert side.no_notice(command["kwargs"]["amqp_creds"]["endpoint_id"], wait_s=1)
        assert set(manager_children(mgr.process.pid)) <= before
        assert mgr.process.poll() is None
    finally:
        side.close()
        _rabbitmqctl("delete_user", intruder)


def _memfd(pid: int) -> bytes:
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        if os.readlink(fd).startswith("/memfd:compute-agent-creds"):
            return fd.read_bytes()
    raise AssertionError(f"user endpoint {pid} holds no credential memfd")


def test_a_refresh_naming_another_identity_changes_nothing(appliance, held):
    mgr = appliance
    alice_account = mgr.users[0]
    alice = held("alice", {"gce": False, "tag": "refresh-target"})
    deadline = time.monotonic() + 60
    while True:
        mine = [
            pid
            for pid, p in manager_children(mgr.process.pid).items()
            if p["uid"][0] == str(alice_account.pw_uid) and alice.uep_id in p["cmdline"]
        ]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(mine) == 1, manager_children(mgr.process.pid)
    before = _memfd(mine[0])
    side = ServiceSide(mgr)
    try:
        name = f"uep.{alice.uep_id}"
        as_bob = side.command("bob@lab.org", name=name, creds=side.creds(f"{alice.uep_id}.tasks"))
        as_bob["kwargs"]["amqp_creds"]["endpoint_id"] = alice.uep_id
        other_id = side.command("alice@uni.edu", name=name)
        count = mgr.log().count("refresh refused")
        side.publish(as_bob)
        side.publish(other_id)
        deadline = time.monotonic() + 15
        while mgr.log().count("refresh refused") < count + 2:
            assert time.monotonic() < deadline, mgr.log()[-3000:]
            time.sleep(0.2)
        assert side.no_notice(alice.uep_id, wait_s=1)
    finally:
        side.close()
    assert _memfd(mine[0]) == before, "the running endpoint's credentials were rewritten"
    assert _task_status(mgr, "alice", alice.task_id)["status"] == "waiting-for-ep"
    assert alice.release() == {"result": "the real result"}
