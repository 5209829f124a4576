"""The monitor's closed request table, its settings, and what the manager inherits: pure parts."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from identity.policy import LocalAccount
from mep.monitor.requests import (
    FILES,
    Read,
    Registered,
    Spawn,
    State,
    Status,
    Violation,
    next_state,
    parse_request,
)
from mep.monitor.server import manager_environment
from mep.monitor.settings import MonitorSettings, SettingsError

ID = str(uuid.uuid4())
SPAWN = {
    "op": "spawn",
    "name": "uep.abc.123",
    "user": "alice",
    "endpoint_id": ID,
    "identity": "alice@uni.edu",
    "env": {"HOME": "/home/alice", "PATH": "/usr/bin"},
}


def test_each_row_builds_its_request_in_the_states_it_allows():
    assert parse_request({"op": "read", "file": "template"}, 0, State.STARTING) == Read("template")
    registered = {"op": "registered", "endpoint_id": ID, "heartbeat_period": 30}
    assert parse_request(registered, 0, State.STARTING) == Registered(ID, 30)
    assert parse_request(SPAWN, 3, State.SERVING) == Spawn(
        "uep.abc.123", "alice", ID, "alice@uni.edu", SPAWN["env"]
    )
    assert parse_request({"op": "status", "connected": False}, 0, State.SERVING) == Status(False)


def test_registering_is_what_moves_the_session_to_serving():
    assert next_state(State.STARTING, Registered(ID, 30)) is State.SERVING
    assert next_state(State.STARTING, Read("config")) is State.STARTING
    assert next_state(State.SERVING, Status(True)) is State.SERVING


@pytest.mark.parametrize(
    ("message", "fds", "state", "words"),
    [
        ({"op": "exec", "argv": ["/bin/sh"]}, 0, State.SERVING, "unknown request"),
        ({"file": "config"}, 0, State.SERVING, "unknown request"),
        ({"op": ["read"], "file": "config"}, 0, State.SERVING, "unknown request"),
        ({"op": "read"}, 0, State.SERVING, "fields"),
        ({"op": "read", "file": "config", "mode": "w"}, 0, State.SERVING, "fields"),
        ({"op": "read", "file": "../../etc/shadow"}, 0, State.SERVING, "invalid file"),
        ({"op": "read", "file": "config"}, 1, State.SERVING, "descriptors"),
        (SPAWN, 3, State.STARTING, "not allowed while starting"),
        (SPAWN, 2, State.SERVING, "descriptors"),
        (SPAWN, 4, State.SERVING, "descriptors"),
        ({**SPAWN, "name": ".hidden"}, 3, State.SERVING, "invalid name"),
        ({**SPAWN, "name": "a/b"}, 3, State.SERVING, "invalid name"),
        ({**SPAWN, "name": "x" * 129}, 3, State.SERVING, "invalid name"),
        ({**SPAWN, "user": "alice\nroot"}, 3, State.SERVING, "invalid user"),
        ({**SPAWN, "user": ""}, 3, State.SERVING, "invalid user"),
        ({**SPAWN, "endpoint_id": "not-a-uuid"}, 3, State.SERVING, "invalid endpoint_id"),
        ({**SPAWN, "endpoint_id": ID.upper()}, 3, State.SERVING, "invalid endpoint_id"),
        ({**SPAWN, "identity": "x\0y"}, 3, State.SERVING, "invalid identity"),
        ({**SPAWN, "env": {"A=B": "x"}}, 3, State.SERVING, "invalid env"),
        ({**SPAWN, "env": {"A": 1}}, 3, State.SERVING, "invalid env"),
        ({**SPAWN, "env": {"A": "x" * 70000}}, 3, State.SERVING, "invalid env"),
        ({**SPAWN, "env": {f"V{i}": "" for i in range(300)}}, 3, State.SERVING, "invalid env"),
        (
            {"op": "registered", "endpoint_id": ID, "heartbeat_period": 30},
            0,
            State.SERVING,
            "not allowed",
        ),
        (
            {"op": "registered", "endpoint_id": ID, "heartbeat_period": True},
            0,
            State.STARTING,
            "heartbeat",
        ),
        (
            {"op": "registered", "endpoint_id": ID, "heartbeat_period": float("nan")},
            0,
            State.STARTING,
            "heartbeat",
        ),
        ({"op": "status", "connected": 1}, 0, State.SERVING, "invalid connected"),
        ({"op": "status", "connected": True}, 0, State.STARTING, "not allowed"),
    ],
)
def test_everything_else_is_a_violation_that_says_what(message, fds, state, words):
    with pytest.raises(Violation, match=words):
        parse_request(message, fds, state)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)
NEAR = st.fixed_dictionaries(
    {"op": st.sampled_from(["read", "registered", "spawn", "status", "x"])},
    optional={
        "file": st.sampled_from([*FILES, "/etc/shadow", ""]) | JSON,
        "endpoint_id": st.just(ID) | JSON,
        "heartbeat_period": st.floats() | JSON,
        "name": st.sampled_from(["uep.a", "..", "a/b"]) | JSON,
        "user": st.sampled_from(["alice", "root", "a\nb"]) | JSON,
        "identity": JSON,
        "env": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4) | JSON,
        "connected": JSON,
        "extra": JSON,
    },
)


@settings(max_examples=2000, deadline=None)
@given(
    message=st.dictionaries(st.text(max_size=12), JSON, max_size=6) | NEAR,
    fds=st.integers(0, 8),
    state=st.sampled_from(State),
)
def test_no_message_crashes_the_table_and_what_passes_is_well_formed(message, fds, state):
    try:
        request = parse_request(message, fds, state)
    except Violation:
        return
    if isinstance(request, Spawn):
        assert state is State.SERVING and fds == 3
        assert "/" not in request.name and not request.name.startswith(".")
        assert all("=" not in k and "\0" not in v for k, v in request.env.items())
    elif isinstance(request, Read):
        assert request.file in FILES and fds == 0


def test_the_manager_inherits_an_allow_list_and_its_own_account():
    account = LocalAccount("compute-agent", 999, 995, (995,), "/", "/usr/sbin/nologin")
    environ = {
        "GLOBUS_COMPUTE_CLIENT_ID": "id",
        "GLOBUS_COMPUTE_CLIENT_SECRET": "secret",
        "COMPUTE_AGENT_DIR": "/etc/x",
        "https_proxy": "http://proxy:3128",
        "LC_ALL": "C.UTF-8",
        "HOME": "/root",
        "USER": "root",
        "PATH": "/root/bin:/usr/bin",
        "LD_PRELOAD": "/tmp/evil.so",
        "PYTHONPATH": "/root/src",
        "SSH_AUTH_SOCK": "/tmp/ssh-agent",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    env = manager_environment(environ, account)
    assert env == {
        "GLOBUS_COMPUTE_CLIENT_ID": "id",
        "GLOBUS_COMPUTE_CLIENT_SECRET": "secret",
        "COMPUTE_AGENT_DIR": "/etc/x",
        "https_proxy": "http://proxy:3128",
        "LC_ALL": "C.UTF-8",
        "HOME": "/",
        "USER": "compute-agent",
        "LOGNAME": "compute-agent",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }


def test_settings_round_trip_and_refuse_what_they_do_not_know():
    made = MonitorSettings("ep", "/etc/compute-agent/ep", "compute-agent", files={"config": "/c"})
    assert MonitorSettings.from_json(made.to_json()) == made
    good = json.loads(made.to_json())
    for change, words in (
        ({"shell": "/bin/sh"}, "unknown fields"),
        ({"files": {"config": "relative"}}, "absolute"),
        ({"files": {"secrets": "/etc/shadow"}}, "absolute paths"),
        ({"manager_program": "relative.py"}, "manager_program"),
        ({"console": "yes"}, "console"),
        ({"policy": {"min_uid": "0"}}, "min_uid"),
        ({"policy": {"root_ok": True}}, "policy"),
    ):
        with pytest.raises(SettingsError, match=words):
            MonitorSettings.from_json(json.dumps({**good, **change}))
    with pytest.raises(SettingsError, match="not JSON"):
        MonitorSettings.from_json(b"\xff")
