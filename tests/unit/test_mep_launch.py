"""What the child gets (env, payload, credentials memfd) and the registration contract."""

import json
import os
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet

from identity.policy import LocalAccount
from mep.command import StartCommand
from mep.decision import LaunchPlan
from mep.launch import CredentialChannel, child_environment, parse_user_environment, stdin_payload
from mep.monitor.audit import AuditLog, AuditWriteError, clean, record_line, session_line
from mep.registration import (
    EX_SOFTWARE,
    RegistrationError,
    parse_registration,
    registration_body,
    resolve_urls,
)
from templates.pidfile import AlreadyRunning, PidFile, running_pid
from templates.render_request import RenderRequest
from wire.queue_info import AmqpCreds

URL = "amqp://u:p@127.0.0.1:5672/%2F"
UEP = uuid.uuid4()


def creds(queue="x.tasks"):
    write = {"connection_url": URL, "exchange": "heartbeats", "queue": "heartbeats"}
    return AmqpCreds.from_dict(
        {
            "endpoint_id": str(UEP),
            "task_queue_info": {"connection_url": URL, "exchange": "tasks", "queue": queue},
            "result_queue_info": dict(write, exchange="results", queue="results"),
            "heartbeat_queue_info": write,
        }
    )


def plan(runtime=None):
    account = LocalAccount(
        "alice", 2001, 2001, (2001, 3000), "/home/alice", "/bin/bash", ("alice", "lab")
    )
    command = StartCommand(
        "uep.1", creds(), ({"id": "a1"},), "a1", "alice@uni.edu", {}, runtime or {}
    )
    return LaunchPlan(
        command,
        account,
        RenderRequest("engine: {type: ThreadPoolEngine}\n", {}, runtime or {}, {}, {}),
        {"posix_ppid": 7},
    )


@pytest.mark.parametrize(
    ("text", "expected", "warns"),
    [
        (None, {}, False),
        ("# only comments\n", {}, False),
        ("FOO: bar\nN: 3\nE:\n", {"FOO": "bar", "N": "3", "E": ""}, False),
        ("[unclosed", {}, True),
        ("- a list\n", {}, True),
        ("'A=B': x\n", {}, True),
    ],
)
def test_user_environment_parsing(text, expected, warns):
    variables, warning = parse_user_environment(text, "user_environment.yaml")
    assert variables == expected
    assert (warning is not None) == warns
    if warning:
        assert "user_environment.yaml" in warning


def test_child_environment_is_built_not_inherited(monkeypatch):
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", "leak-me")
    runtime = {"globus_compute_sdk_version": "4.19.0", "python": {"version": "3.11.2"}}
    env = child_environment(plan(runtime), {"PATH": "/opt/site/bin", "SITE": "1"}, "/opt/ca/bin")
    assert "GLOBUS_COMPUTE_CLIENT_SECRET" not in env
    assert env["HOME"] == "/home/alice" and env["USER"] == "alice"
    assert env["PATH"] == "/opt/site/bin" and env["SITE"] == "1"
    assert env["GC_USER_PYTHON_VERSION"] == "3.11.2" and env["GC_USER_SDK_VERSION"] == "4.19.0"
    assert env["GLOBUS_COMPUTE_ENDPOINT_NAME"] == "uep.1"
    default = child_environment(plan(), {}, "/opt/ca/bin")
    assert default["PATH"] == "/usr/local/bin:/usr/bin:/bin:/opt/ca/bin"


def test_stdin_payload_has_the_419_shape_with_what_to_render():
    payload = json.loads(
        stdin_payload(plan(), allowed_functions=["f1"], mem_fd=5, enckey="k", audit_fd=6, note_fd=7)
    )
    assert payload["amqp_creds"]["endpoint_id"] == str(UEP)
    assert "config" not in payload  # the manager never renders
    assert payload["render"]["template"].startswith("engine:")
    assert RenderRequest.from_document(payload["render"]) == plan().render
    assert payload["note_fd"] == 7
    assert payload["ep_info"] == {"posix_ppid": 7}
    assert payload["allowed_functions"] == ["f1"]
    assert (payload["mem_fd"], payload["enckey"], payload["audit_fd"]) == (5, "k", 6)
    bare = json.loads(stdin_payload(plan(), allowed_functions=None))
    assert not {"allowed_functions", "mem_fd", "enckey", "audit_fd"} & set(bare)


def test_credential_channel_rewrites_what_the_child_reads():
    channel = CredentialChannel("uep.1", creds("first"))
    try:
        read = lambda: json.loads(  # noqa: E731
            Fernet(channel.key.encode()).decrypt(os.pread(channel.child_fd, 1 << 16, 0))
        )
        assert read()["amqp_creds"]["task_queue_info"]["queue"] == "first"
        sealed = os.pread(channel.child_fd, 1 << 16, 0)
        channel.write(creds("first"))  # a token has a fresh IV: a second sealing would differ
        assert os.pread(channel.child_fd, 1 << 16, 0) == sealed
        channel.write(creds("second"))
        assert read()["amqp_creds"]["task_queue_info"]["queue"] == "second"
        assert os.fstat(channel.child_fd).st_size == os.fstat(channel._fd).st_size
    finally:
        channel.close()


def test_pidfile_refuses_a_second_instance_and_never_goes_stale(tmp_path):
    held = PidFile(tmp_path / "daemon.pid")
    try:
        assert running_pid(tmp_path) == os.getpid()
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
            PidFile(tmp_path / "daemon.pid")
    finally:
        held.release()
    assert running_pid(tmp_path) is None
    (tmp_path / "daemon.pid").write_text("12345\n")
    assert running_pid(tmp_path) is None
    PidFile(tmp_path / "daemon.pid").release()


def test_audit_lines_follow_the_official_format(tmp_path):
    assert clean("a\nb\r\0c") == "a bc"
    line = record_line(2001, 99, "uep-id", "fid=f tid=t bid= EXEC_START\n", when="T")
    assert line == "T uid=2001 pid=99 uep=uep-id fid=f tid=t bid= EXEC_START \n"
    assert (
        session_line(0, 1, "eid", True, when="T")
        == "T uid=0 pid=1 eid=eid Begin MEP session =====\n"
    )
    log = AuditLog(tmp_path / "audit.log")
    read_end, write_end = log.open_pipe()
    log.watch(read_end, 2001, 42, "u1")
    os.write(write_end, b"tid=1 RECEIVED")
    os.write(write_end, b"tid=1 EXEC_END")
    os.close(write_end)
    log.drain(timeout_s=1)
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "uid=2001 pid=42 uep=u1 tid=1 RECEIVED",
        "uid=2001 pid=42 uep=u1 tid=1 EXEC_END",
    ]
    assert oct((tmp_path / "audit.log").stat().st_mode & 0o777) == "0o600"
    log.close()


def test_audit_log_fails_closed(tmp_path):
    with pytest.raises(AuditWriteError, match="cannot open"):
        AuditLog(tmp_path / "missing-dir" / "audit.log")
    log = AuditLog(tmp_path / "audit.log")
    os.close(log._fd)
    log._fd = os.open("/dev/full", os.O_WRONLY)
    with pytest.raises(AuditWriteError, match="cannot write"):
        log.write("x\n")
    log.close()


def registration_answer(endpoint_id):
    return {
        "endpoint_id": str(endpoint_id),
        "command_queue_info": {"connection_url": URL, "queue": "e.commands"},
        "heartbeat_queue_info": {
            "connection_url": URL,
            "exchange": "heartbeats",
            "queue": "heartbeats",
            "queue_publish_kwargs": {"exchange": "heartbeats", "routing_key": "e.heartbeats"},
        },
    }


def test_registration_answer_is_checked():
    eid = uuid.uuid4()
    assert parse_registration(registration_answer(eid), eid).command_queue.queue == "e.commands"
    with pytest.raises(RegistrationError, match="mismatched endpoint id") as err:
        parse_registration(registration_answer(uuid.uuid4()), eid)
    assert err.value.exit_code == EX_SOFTWARE
    broken = registration_answer(eid)
    del broken["heartbeat_queue_info"]
    with pytest.raises(RegistrationError, match="invalid or unexpected registration data"):
        parse_registration(broken, None)


def test_registration_names_the_command_sender_and_one_broker():
    eid = uuid.uuid4()
    answer = dict(registration_answer(eid), command_sender="compute-service")
    registration = parse_registration(answer, eid)
    assert registration.command_sender == "compute-service"
    assert parse_registration(registration_answer(eid), eid).command_sender is None
    assert registration.broker(5999).port == 5999
    with pytest.raises(RegistrationError, match="command_sender is not a name"):
        parse_registration(dict(answer, command_sender=""), eid)
    split = registration_answer(eid)
    split["heartbeat_queue_info"]["connection_url"] = "amqp://u:p@elsewhere.org/"
    with pytest.raises(RegistrationError, match="two brokers"):
        parse_registration(split, eid)


def test_registration_body_includes_only_what_is_set():
    config = SimpleNamespace(
        public=True,
        high_assurance=False,
        display_name=None,
        allowed_functions=None,
        authentication_policy=None,
        subscription_id=None,
        admins=(),
    )
    body = registration_body(
        "ep", config, multi_user=True, config_text="x: 1", template_text="t", schema={}
    )
    assert body["endpoint_name"] == "ep" and body["multi_user"] is True and body["public"] is True
    assert "display_name" not in body and "admins" not in body
    assert body["metadata"]["endpoint_config"] == "x: 1"
    assert "multi_user" not in registration_body(
        "ep", config, multi_user=False, config_text="", template_text=None, schema=None
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("https://compute.api.globus.org", "https://auth.globus.org/")),
        (
            {
                "GLOBUS_SDK_ENVIRONMENT": "local",
                "GLOBUS_SDK_SERVICE_URL_AUTH": "http://localhost:5000/",
            },
            ("http://localhost:5000", "http://localhost:5000/"),
        ),
    ],
)
def test_urls_follow_config_then_environment(env, expected):
    assert (
        resolve_urls("https://compute.api.globus.org", "https://auth.globus.org", env) == expected
    )
    assert resolve_urls("http://svc:8000/", "http://svc:8000", env) == (
        "http://svc:8000",
        "http://svc:8000/",
    )


def test_the_manager_seals_credentials_without_loading_cryptography():
    """The Fernet token is made in a forked child: the manager's own modules stay lean."""
    program = (
        "import json, os, sys\n"
        "from mep.launch import CredentialChannel\n"
        "from wire.queue_info import AmqpCreds\n"
        "doc = json.loads(sys.stdin.read())\n"
        "channel = CredentialChannel('uep.1', AmqpCreds.from_dict(doc))\n"
        "token = os.pread(channel.child_fd, 1 << 16, 0).decode()\n"
        "print(json.dumps([channel.key, token, 'cryptography' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        input=json.dumps(creds("first").to_dict()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    key, token, loaded = json.loads(done.stdout)
    assert loaded is False, done.stderr
    opened = json.loads(Fernet(key.encode()).decrypt(token.encode()))
    assert opened["amqp_creds"]["task_queue_info"]["queue"] == "first"
