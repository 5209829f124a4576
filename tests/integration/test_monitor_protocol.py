"""The root monitor against a manager that is broken or taken over.

A real monitor (``python -I -m mep.monitor``, as root) runs a stand-in manager
(``manager_program``), dropped to the real manager account like the real one,
which sends what each test scripts: valid requests the monitor must still
refuse (root, a system account, a denied account, the manager's own account),
and requests outside the table (unknown, out of order, malformed, wrong
descriptors) that must get no answer at all and end the session. The stand-in
prints each answer on its stdout, which is the monitor's stderr.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from mep.monitor.channel import sealed_memfd
from mep.monitor.settings import MonitorSettings
from tests.e2e.appliance import local_accounts
from tests.processes import processes_of

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the monitor is root"),
    pytest.mark.timeout(90),
]

MANAGER_ACCOUNT = "compute-agent"
STAND_IN = textwrap.dedent(
    """
    import json, os, socket, sys
    from mep.monitor import channel

    def descriptors(kinds):
        made = []
        for kind in kinds:
            if kind == "sealed":
                made.append(channel.sealed_memfd(b"{}"))
            elif kind == "memfd":
                made.append(os.memfd_create("creds"))
            elif kind == "pipe":
                made.append(os.pipe()[1])
            elif kind == "monitor-socket":
                made.append(3)
            elif kind == "file":
                made.append(os.open("/etc/hostname", os.O_RDONLY))
        return made

    def say(**what):
        print("STAND-IN " + json.dumps(what), flush=True)

    sock = socket.socket(fileno=3)
    for number, step in enumerate(json.load(open(os.environ["COMPUTE_AGENT_TEST_STEPS"]))):
        say(sent=number)
        if "raw" in step:
            sock.send(bytes.fromhex(step["raw"]))
        else:
            try:
                channel.send(sock, step["message"], descriptors(step.get("fds", [])))
            except OSError as e:
                say(closed=str(e))
                sys.exit(0)
        try:
            reply, fds = channel.receive(sock)
        except (channel.ChannelClosed, ConnectionError) as e:
            say(closed=type(e).__name__)
            sys.exit(0)
        say(reply=reply, fds=len(fds))
        if step.get("then_event"):
            event, _ = channel.receive(sock)
            say(event=event)
    say(done=True)
    """
)


@pytest.fixture(scope="module")
def stand_in():
    """The stand-in manager, where the manager account can read it."""
    directory = Path(tempfile.mkdtemp(prefix="ca-monitor-test-", dir="/tmp"))
    directory.chmod(0o755)
    (directory / "stand_in.py").write_text(STAND_IN)
    (directory / "stand_in.py").chmod(0o644)
    yield directory
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def researchers():
    with local_accounts(2, "mon") as (users, _group):
        yield users


def run_monitor(tmp_path: Path, stand_in: Path, steps: list, denied: tuple[str, ...] = ()):
    """Run a monitor whose manager plays ``steps``; (exit code, stand-in lines, stdout, log)."""
    endpoint_dir = tmp_path / "ep"
    endpoint_dir.mkdir(mode=0o700)
    (endpoint_dir / "config.yaml").write_text("display_name: test\n")
    (endpoint_dir / "user_config_template.yaml.j2").write_text("engine: {type: ThreadPoolEngine}\n")
    steps_file = stand_in / f"steps-{uuid.uuid4().hex}.json"
    steps_file.write_text(json.dumps(steps))
    steps_file.chmod(0o644)
    settings = MonitorSettings(
        name="ep",
        endpoint_dir=str(endpoint_dir),
        manager_account=MANAGER_ACCOUNT,
        files={
            "config": str(endpoint_dir / "config.yaml"),
            "template": str(endpoint_dir / "user_config_template.yaml.j2"),
        },
        stop_grace_s=3.0,
        manager_program=str(stand_in / "stand_in.py"),
    )
    document = {**json.loads(settings.to_json()), "policy": {"denied_users": list(denied)}}
    stdin = sealed_memfd(json.dumps(document).encode())
    env = dict(os.environ, COMPUTE_AGENT_TEST_STEPS=str(steps_file))
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-m", "mep.monitor"],
            stdin=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    finally:
        os.close(stdin)
        steps_file.unlink()
    said = [
        json.loads(line.split(" ", 1)[1])
        for line in done.stderr.splitlines()
        if line.startswith("STAND-IN ")
    ]
    log = (endpoint_dir / "endpoint.log").read_text()
    return done.returncode, said, done.stdout, log


def registered(endpoint_id: str | None = None) -> dict:
    message = {"op": "registered", "endpoint_id": endpoint_id or str(uuid.uuid4())}
    return {"message": {**message, "heartbeat_period": 30}}


def spawn(user: str, fds=("sealed", "memfd", "pipe"), **changes) -> dict:
    message = {
        "op": "spawn",
        "name": f"uep.test.{uuid.uuid4().hex[:8]}",
        "user": user,
        "endpoint_id": str(uuid.uuid4()),
        "identity": "someone@uni.edu",
        "env": {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"},
    }
    return {"message": {**message, **changes}, "fds": list(fds)}


def test_a_served_manager_reads_by_name_and_registers(tmp_path, stand_in):
    endpoint_id = str(uuid.uuid4())
    steps = [
        {"message": {"op": "read", "file": "config"}},
        {"message": {"op": "read", "file": "identity_mapping"}},
        registered(endpoint_id),
        {"message": {"op": "status", "connected": True}},
    ]
    code, said, stdout, log = run_monitor(tmp_path, stand_in, steps)
    said = [s for s in said if "sent" not in s]
    assert [s.get("reply") for s in said[:4]] == [
        {"ok": True},
        {"ok": False, "missing": True, "error": "no identity_mapping file is set"},
        {"ok": True},
        {"ok": True},
    ]
    assert said[0]["fds"] == 1 and said[-1] == {"done": True}
    assert stdout.strip() == endpoint_id
    endpoint_file = tmp_path / "ep" / "endpoint.json"
    assert json.loads(endpoint_file.read_text()) == {"endpoint_id": endpoint_id}
    assert code == 0, log  # the manager stopped on its own: so does the monitor
    assert "the manager stopped on its own" in log


def test_the_monitor_refuses_accounts_whatever_the_manager_decided(tmp_path, stand_in, researchers):
    denied = researchers[1]
    system = pwd.getpwuid(1).pw_name  # daemon: below min_uid
    steps = [
        registered(),
        spawn("root"),
        spawn(system),
        spawn(denied.pw_name),
        spawn(MANAGER_ACCOUNT),
        spawn("no-such-account-here"),
    ]
    code, said, _stdout, log = run_monitor(tmp_path, stand_in, steps, denied=(denied.pw_name,))
    said = [s for s in said if "sent" not in s]
    refusals = [s["reply"] for s in said[1:6]]
    assert all(r["ok"] is False and r["step"] == "account check" for r in refusals), refusals
    reasons = " ".join(r["admin_message"] for r in refusals)
    for rule in ("superuser", "below min_uid", "denied_users", "manager's own", "password"):
        assert rule in reasons
    assert all(denied.pw_name not in r["user_message"] for r in refusals)
    assert code == 0, log
    assert "started user endpoint" not in log
    assert processes_of(denied.pw_uid) == {}


def test_an_allowed_spawn_starts_and_its_exit_is_reported(tmp_path, stand_in, researchers):
    user = researchers[0]
    step = spawn(user.pw_name)
    step["then_event"] = True
    code, said, _stdout, log = run_monitor(tmp_path, stand_in, [registered(), step])
    said = [s for s in said if "sent" not in s]
    reply, event = said[1]["reply"], said[2]["event"]
    assert reply["ok"] is True and reply["pid"] > 0, log
    assert event["event"] == "exited" and event["pid"] == reply["pid"]
    assert event["rc"] == 65, "the user endpoint refused the stand-in's payload ({})"
    assert code == 0, log


OUTSIDE = [
    ("unknown op", [{"message": {"op": "become_root"}}]),
    ("spawn before registering", [spawn("nobody")]),
    ("registered twice", [registered(), registered()]),
    ("a field too many", [{"message": {"op": "read", "file": "config", "path": "/etc/shadow"}}]),
    ("a path as a file name", [{"message": {"op": "read", "file": "/etc/shadow"}}]),
    ("a wrong type", [{"message": {"op": "status", "connected": "yes"}}]),
    (
        "descriptors where none belong",
        [{"message": {"op": "read", "file": "config"}, "fds": ["pipe"]}],
    ),
    ("not JSON", [{"raw": b"\xff\xfe not json".hex()}]),
    ("a JSON array", [{"raw": b"[1, 2]".hex()}]),
    ("a duplicate key", [{"raw": b'{"op": "read", "file": "config", "file": "schema"}'.hex()}]),
    ("too few descriptors", [registered(), spawn("nobody", fds=("sealed", "memfd"))]),
    (
        "its own socket as a payload",
        [registered(), spawn("nobody", fds=("monitor-socket", "memfd", "pipe"))],
    ),
    ("an unsealed payload", [registered(), spawn("nobody", fds=("memfd", "memfd", "pipe"))]),
    ("a file as the note pipe", [registered(), spawn("nobody", fds=("sealed", "memfd", "file"))]),
    ("a name that walks up", [registered(), spawn("nobody", name="../../etc")]),
    ("an environment with NUL", [registered(), spawn("nobody", env={"A": "x\u0000y"})]),
]


@pytest.mark.parametrize(("case", "steps"), OUTSIDE, ids=[c for c, _ in OUTSIDE])
def test_anything_outside_the_table_gets_no_answer_and_ends_the_session(
    tmp_path, stand_in, case, steps
):
    code, said, _stdout, log = run_monitor(tmp_path, stand_in, steps)
    replies = [s["reply"] for s in said if "reply" in s]
    assert len(replies) == len(steps) - 1, f"{case}: the monitor answered {replies}"
    assert all(r["ok"] for r in replies), "only the valid steps before were answered"
    assert {"sent": len(steps) - 1} in said, "the stand-in sent the bad request"
    assert code == 70, log
    assert "broke the protocol" in log
    assert "started user endpoint" not in log
