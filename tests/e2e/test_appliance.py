"""The whole appliance: official SDK -> compute-service -> root manager -> user endpoint.

Real everything: the service subprocess on port 5000, RabbitMQ, a manager
started with ``compute-endpoint start`` as root, local accounts created here,
and the researcher's code run through the unmodified official SDK configured
only by environment variables. Each task must run as the researcher's own
account; a mapping to nobody and a bad template option must come back to the
SDK as readable errors while the manager keeps serving.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.accounts import admin_command
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


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 60)
    return subprocess.run(args, capture_output=True, text=True, check=False, **kw)


@pytest.fixture(scope="module")
def local_users():
    """Two researchers' accounts (with a shared supplementary group), removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    group, names = f"ca-e2e-{tag}", [f"ca-e2e-{tag}-a", f"ca-e2e-{tag}-b"]
    admin_command("groupadd", group)
    try:
        for name in names:
            admin_command("useradd", "-m", "-G", group, "-s", "/bin/sh", name)
        yield [pwd.getpwnam(n) for n in names], group
    finally:
        for name in names:
            _run("pkill", "-KILL", "-u", name)
            with contextlib.suppress(RuntimeError):  # it may never have been created
                admin_command("userdel", "-r", name)
        admin_command("groupdel", group)


def _env(service, client: dict, user_dir: Path | None = None) -> dict:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO),
        GLOBUS_SDK_ENVIRONMENT="local",
        GLOBUS_SDK_SERVICE_URL_AUTH=f"{service.url}/",
        GLOBUS_COMPUTE_CLIENT_ID=client["client_id"],
        GLOBUS_COMPUTE_CLIENT_SECRET=client["client_secret"],
    )
    if user_dir:
        env["GLOBUS_COMPUTE_USER_DIR"] = str(user_dir)
    return env


@pytest.fixture(scope="module")
def manager(compute_service, local_users, tmp_path_factory):
    """A configured multi-user endpoint, started as root; stopped and checked afterwards."""
    (alice, bob), _ = local_users
    root = tmp_path_factory.mktemp("endpoints")
    admin = compute_service.add_client("admin@site.org")
    clients = {
        "alice": compute_service.add_client("alice@uni.edu"),
        "bob": compute_service.add_client("bob@lab.org"),
        "carol": compute_service.add_client("carol@nowhere.org"),
    }
    mapping = [
        {
            "DATA_TYPE": "expression_identity_mapping#1.0.0",
            "mappings": [
                {"source": "{username}", "match": "alice@uni\\.edu", "output": alice.pw_name},
                {"source": "{username}", "match": "bob@lab\\.org", "output": bob.pw_name},
                {"source": "{username}", "match": "(.*)@refuse\\.me", "output": "{0}"},
            ],
        }
    ]
    mapping_file = root / "mapping.json"
    mapping_file.write_text(json.dumps(mapping))
    cli = [sys.executable, "-m", "mep.cli"]
    done = _run(
        *cli,
        "configure",
        "ep",
        "--multi-user",
        "--contact-email",
        "admin@site.org",
        "--id-mapping-config",
        str(mapping_file),
        "--config-dir",
        str(root),
        env=_env(compute_service, admin),
    )
    assert done.returncode == 0, done.stderr
    directory = root / "ep"
    (directory / "user_config_template.yaml.j2").write_text(TEMPLATE)
    (directory / "user_config_schema.json").write_text(json.dumps(SCHEMA))
    log = open(root / "manager.out", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [*cli, "start", "ep", "--config-dir", str(root)],
        env=dict(_env(compute_service, admin), CA_ROOT_ONLY_MARKER="root-secret"),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        endpoint_id = process.stdout.readline().strip()
        assert process.poll() is None, (root / "manager.out").read_text()
        uuid.UUID(endpoint_id)
        yield {
            "id": endpoint_id,
            "dir": directory,
            "clients": clients,
            "service": compute_service,
            "process": process,
            "users": (alice, bob),
            "cli": cli,
            "root": root,
        }
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(45)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log.close()


def _submit(mgr, who: str, mode: str, tmp_path: Path) -> dict:
    user_dir = tmp_path / f"sdk-{who}"
    done = _run(
        sys.executable,
        str(REPO / "tests" / "e2e" / "appliance_client.py"),
        mgr["id"],
        mode,
        env=_env(mgr["service"], mgr["clients"][who], user_dir),
        timeout=200,
    )
    assert done.returncode == 0, done.stderr[-3000:] + _manager_log(mgr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _manager_log(mgr) -> str:
    return (
        "\n--- manager log ---\n"
        + (mgr["dir"] / "endpoint.log").read_text(errors="replace")[-4000:]
    )


def test_each_researcher_runs_as_their_own_account(manager, tmp_path):
    alice, bob = manager["users"]
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
        assert "raised by the researcher's function" in out["error"]
    listed = _run(*manager["cli"], "list", "--json", "--config-dir", str(manager["root"]))
    row = json.loads(listed.stdout)[0]
    assert row["status"] == "running" and row["id"] == manager["id"]


def test_unmapped_identity_gets_a_readable_error(manager, tmp_path):
    out = _submit(manager, "carol", "run", tmp_path)
    assert out["whoami"].startswith("TaskExecutionFailed")
    assert "Identity failed to map to a local user name" in out["whoami"]
    assert manager["process"].poll() is None


def test_bad_template_option_is_refused_with_the_schema_message(manager, tmp_path):
    out = _submit(manager, "alice", "bad-option", tmp_path)
    assert "label" in out["error"] and "string" in out["error"]
    assert manager["process"].poll() is None
    time.sleep(0.1)


def _uep_processes(manager_pid: int) -> dict[int, dict]:
    """The manager's live children: pid -> /proc facts."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != manager_pid:
                continue
            lines = (entry / "status").read_text().splitlines()
            status = dict(line.split(":", 1) for line in lines if ":" in line)
            found[int(entry.name)] = {
                "state": fields[0],
                "sid": int(fields[3]),
                "uid": status["Uid"].split(),
                "gid": status["Gid"].split(),
                "groups": sorted(int(g) for g in status["Groups"].split()),
                "cap_eff": status["CapEff"].strip(),
                "fds": {fd.name: os.readlink(fd) for fd in (entry / "fd").iterdir()},
                "cmdline": (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(),
            }
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return found


def test_user_endpoint_process_is_exactly_the_researcher(manager, tmp_path):
    alice, _ = manager["users"]
    out = _submit(manager, "alice", "run", tmp_path)
    assert out["whoami"]["user"] == alice.pw_name
    children = _uep_processes(manager["process"].pid)
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
    manager_files = {str(manager["dir"] / "endpoint.log"), str(manager["dir"] / "daemon.pid")}
    assert not manager_files & set(proc["fds"].values()), proc["fds"]
    assert "uep." in proc["cmdline"]  # the process title names the user endpoint


def _command_channel(mgr):
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(mgr["service"].amqp_url))
    channel = connection.channel()
    notices = channel.queue_declare("", exclusive=True).method.queue
    return connection, channel, notices


def _creds(mgr, notices: str) -> dict:
    url = mgr["service"].amqp_url
    write = {
        "connection_url": url,
        "exchange": "",
        "queue": notices,
        "queue_publish_kwargs": {"exchange": "", "routing_key": notices},
    }
    return {
        "endpoint_id": str(uuid.uuid4()),
        "task_queue_info": {"connection_url": url, "exchange": "", "queue": "unused"},
        "result_queue_info": write,
        "heartbeat_queue_info": write,
    }


def _command(mgr, notices: str, username: str, command: str = "cmd_start_endpoint") -> dict:
    identity_id = str(uuid.uuid4())
    identity = {"id": identity_id, "sub": identity_id, "username": username, "status": "used"}
    return {
        "command": command,
        "globus_username": username,
        "globus_effective_identity": identity_id,
        "globus_identity_set": [identity],
        "kwargs": {
            "name": f"uep.t.{uuid.uuid4().hex[:8]}",
            "amqp_creds": _creds(mgr, notices),
            "user_opts": {"label": "ok"},
            "user_runtime": {},
        },
    }


def _notice(channel, queue: str, timeout_s: float = 20) -> dict:
    from wire.messages import unpack

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method:
            return unpack(body).global_state
        channel.connection.sleep(0.1)
    pytest.fail("no failure notice arrived")


@pytest.mark.parametrize(
    ("username", "case", "expected"),
    [
        ("carol@nowhere.org", None, "failed to map to a local user"),
        ("root@refuse.me", None, "privileged"),
        ("daemon@refuse.me", None, "system account"),
        ("no-such-account-x@refuse.me", None, "does not exist"),
        ("alice@uni.edu", "bad option", "label"),
        ("alice@uni.edu", "stale", "too old"),
        ("alice@uni.edu", "unknown command", "Unknown or invalid command"),
    ],
)
def test_bad_commands_are_refused_on_the_ueps_queue_and_nothing_forks(
    manager, username, case, expected
):
    import pika

    connection, channel, notices = _command_channel(manager)
    try:
        before = set(_uep_processes(manager["process"].pid))
        command = "cmd_rm_rf" if case == "unknown command" else "cmd_start_endpoint"
        body = _command(manager, notices, username, command)
        if case == "bad option":
            body["kwargs"]["user_opts"] = {"label": "NOT VALID!"}
        timestamp = 1 if case == "stale" else int(time.time())
        properties = pika.BasicProperties(content_type="application/json", timestamp=timestamp)
        channel.basic_publish(
            "", f"{manager['id']}.commands", json.dumps(body).encode(), properties
        )
        state = _notice(channel, notices)
        assert expected.lower() in state["error"].lower(), state
        assert state["heartbeat_period"] == 3
        assert "no-such-account-x" not in state["error"]
        assert "daemon" not in state["error"]
        assert set(_uep_processes(manager["process"].pid)) <= before
        assert manager["process"].poll() is None
    finally:
        connection.close()


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"command": "cmd_start_endpoint"}', b"\xff\xfe", b"{" * 5000]
)
def test_garbage_bodies_leave_the_manager_serving(manager, raw):
    import pika

    connection, channel, _ = _command_channel(manager)
    try:
        json_props = pika.BasicProperties(
            content_type="application/json", timestamp=int(time.time())
        )
        channel.basic_publish("", f"{manager['id']}.commands", raw, json_props)
        text_props = pika.BasicProperties(content_type="text/plain")
        channel.basic_publish("", f"{manager['id']}.commands", raw, text_props)
    finally:
        connection.close()
    time.sleep(0.5)
    assert manager["process"].poll() is None
    assert "Traceback" not in (manager["dir"] / "endpoint.log").read_text(errors="replace")


def _uep_logs(mgr) -> str:
    """The user endpoints' own logs, for a failure message."""
    logs = []
    for account in mgr["users"]:
        for path in Path(account.pw_dir, ".compute_agent").glob("*/endpoint.log"):
            logs.append(f"\n--- {path} ---\n" + path.read_text(errors="replace")[-3000:])
    return "".join(logs)


def test_idle_user_endpoints_stop_and_are_reaped(manager, tmp_path):
    _submit(manager, "bob", "run", tmp_path)
    deadline = time.monotonic() + 90
    while _uep_processes(manager["process"].pid) and time.monotonic() < deadline:
        time.sleep(1)
    assert _uep_processes(manager["process"].pid) == {}, (
        "idle user endpoints not stopped and reaped" + _uep_logs(manager)
    )
    log = (manager["dir"] / "endpoint.log").read_text(errors="replace")
    assert "stopped normally" in log
    # Handling the exit must leave the manager serving: it reaps, decides, and goes on.
    time.sleep(2)
    assert manager["process"].poll() is None, log[-3000:]
    assert "Traceback" not in log and "the manager failed" not in log
    out = _submit(manager, "bob", "run", tmp_path / "again")
    assert out["whoami"]["user"] == manager["users"][1].pw_name
