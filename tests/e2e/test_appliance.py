"""The whole appliance: official SDK -> compute-service -> root manager -> user endpoint.

Real everything: the service subprocess on port 5000, RabbitMQ, a manager
started with ``compute-endpoint start`` as root, local accounts created here,
and the researcher's code run through the unmodified official SDK configured
only by environment variables. Each task must run as the researcher's own
account; a mapping to nobody and a bad template option must come back to the
SDK as readable errors while the manager keeps serving.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.e2e.appliance import (
    ServiceSide,
    local_accounts,
    manager_children,
    run,
    running_manager,
    submit,
    user_endpoint_logs,
)
from tests.fixtures_service import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the appliance test creates local users")

TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: 2
idle_heartbeats_hard: 60
engine:
  type: ThreadPoolEngine
  max_workers: 2
# label {{ label }} only has to render
"""
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"label": {"type": "string", "pattern": "^[a-z0-9-]+$"}},
    "additionalProperties": False,
}


CLIENT = REPO / "tests" / "e2e" / "appliance_client.py"


@pytest.fixture(scope="module")
def manager(compute_service, tmp_path_factory):
    """Two researchers' accounts and a multi-user endpoint mapping them, started as root."""
    with local_accounts(2, "e2e") as (users, _group):
        alice, bob = users
        routes = {"alice@uni.edu": alice.pw_name, "bob@lab.org": bob.pw_name}
        root = tmp_path_factory.mktemp("endpoints")
        extra = ("carol@nowhere.org",)
        with running_manager(compute_service, root, routes, TEMPLATE, SCHEMA, extra) as mgr:
            yield mgr


def _submit(mgr, who: str, mode: str, tmp_path: Path) -> dict:
    return submit(mgr, who, CLIENT, mgr.id, mode, user_dir=tmp_path / f"sdk-{who}")


def test_each_researcher_runs_as_their_own_account(manager, tmp_path):
    alice, bob = manager.users
    for who, account in (("alice", alice), ("bob", bob)):
        out = _submit(manager, who, "run", tmp_path)
        me = out["whoami"]
        assert (me["user"], me["uid"], me["gid"]) == (
            account.pw_name,
            account.pw_uid,
            account.pw_gid,
        )
        assert set(os.getgrouplist(account.pw_name, account.pw_gid)) == set(me["groups"])
        assert me["home"] == account.pw_dir
        assert me["secret_in_env"] is False
        assert me["rendering_loaded"] == [], "the user endpoint renders in a forked child"
        assert "raised by the researcher's function" in out["error"]
    listed = run(*manager.cli, "list", "--json", "--config-dir", str(manager.root))
    row = json.loads(listed.stdout)[0]
    assert row["status"] == "running" and row["id"] == manager.id


def test_unmapped_identity_gets_a_readable_error(manager, tmp_path):
    out = _submit(manager, "carol", "run", tmp_path)
    assert out["whoami"].startswith("TaskExecutionFailed")
    assert "Identity failed to map to a local user name" in out["whoami"]
    assert manager.process.poll() is None


def test_bad_template_option_is_refused_with_the_schema_message(manager, tmp_path):
    out = _submit(manager, "alice", "bad-option", tmp_path)
    assert "label" in out["error"] and "string" in out["error"]
    assert manager.process.poll() is None
    # The user endpoint refused the options as alice and left the admin a note.
    assert "said why: [render:schema]" in manager.log()
    time.sleep(0.1)


def test_user_endpoint_process_is_exactly_the_researcher(manager, tmp_path):
    alice, _ = manager.users
    out = _submit(manager, "alice", "run", tmp_path)
    assert out["whoami"]["user"] == alice.pw_name
    children = manager_children(manager.process.pid)
    mine = {pid: p for pid, p in children.items() if p["uid"][0] == str(alice.pw_uid)}
    assert len(mine) == 1, mine
    pid, proc = mine.popitem()
    assert proc["uid"] == [str(alice.pw_uid)] * 4
    assert proc["gid"] == [str(alice.pw_gid)] * 4
    assert proc["groups"] == sorted(os.getgrouplist(alice.pw_name, alice.pw_gid))
    assert proc["cap_eff"] == "0000000000000000"
    assert proc["sid"] == pid
    # setproctitle reuses the environ area, so read the environment from inside the
    # task: a ThreadPoolEngine runs it in the user endpoint's own process.
    env_keys = set(out["whoami"]["env_keys"])
    assert "CA_ROOT_ONLY_MARKER" not in env_keys
    assert not {k for k in env_keys if "SECRET" in k or k.startswith("GLOBUS_COMPUTE_CLIENT")}
    assert out["whoami"]["home"] == alice.pw_dir
    manager_files = {str(manager.dir / "endpoint.log"), str(manager.dir / "daemon.pid")}
    assert not manager_files & set(proc["fds"].values()), proc["fds"]
    assert "uep." in proc["cmdline"]  # the process title names the user endpoint


@pytest.fixture
def service_side(manager):
    side = ServiceSide(manager)
    yield side
    side.close()


@pytest.mark.parametrize(
    ("username", "case", "expected"),
    [
        ("carol@nowhere.org", None, "failed to map to a local user"),
        ("root@refuse.me", None, "privileged"),
        ("daemon@refuse.me", None, "system account"),
        ("no-such-account-x@refuse.me", None, "does not exist"),
        ("alice@uni.edu", "stale", "too old"),
        ("alice@uni.edu", "unknown command", "Unknown or invalid command"),
    ],
)
def test_bad_commands_are_refused_to_the_submitter_and_nothing_forks(
    manager, service_side, username, case, expected
):
    before = set(manager_children(manager.process.pid))
    command = service_side.command(username)
    if case == "unknown command":
        command["command"] = "cmd_rm_rf"
    service_side.publish(command, timestamp=1 if case == "stale" else None)
    state = service_side.notice(command["kwargs"]["amqp_creds"]["endpoint_id"])
    assert expected.lower() in state["error"].lower(), state
    assert state["heartbeat_period"] == 3
    assert "no-such-account-x" not in state["error"]
    assert "daemon" not in state["error"]
    assert set(manager_children(manager.process.pid)) <= before
    assert manager.process.poll() is None


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"command": "cmd_start_endpoint"}', b"\xff\xfe", b"{" * 5000]
)
def test_garbage_bodies_leave_the_manager_serving(manager, service_side, raw):
    service_side.publish(raw)
    service_side.publish(raw, content_type="text/plain")
    time.sleep(0.5)
    assert manager.process.poll() is None
    assert "Traceback" not in manager.log()


def test_idle_user_endpoints_stop_and_are_reaped(manager, tmp_path):
    _submit(manager, "bob", "run", tmp_path)
    deadline = time.monotonic() + 90
    while manager_children(manager.process.pid) and time.monotonic() < deadline:
        time.sleep(1)
    assert manager_children(manager.process.pid) == {}, (
        "idle user endpoints not stopped and reaped" + user_endpoint_logs(manager)
    )
    log = manager.log()
    assert "stopped normally" in log
    # Handling the exit must leave the manager serving: it reaps, decides, and goes on.
    time.sleep(2)
    assert manager.process.poll() is None, log[-3000:]
    assert "Traceback" not in log and "the manager failed" not in log
    out = _submit(manager, "bob", "run", tmp_path / "again")
    assert out["whoami"]["user"] == manager.users[1].pw_name
