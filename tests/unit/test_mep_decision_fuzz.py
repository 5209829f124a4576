"""The decision core under fire: tens of thousands of hostile commands, no crash, no bad launch.

Bytes of any kind, and commands that are almost right (every field swapped for
random JSON, properties of every shape), go through the same ``decide`` the
manager calls. It must never raise, and anything it decides to launch must
satisfy every rule: the service sent it, it is fresh, the name is safe, the
credentials lead to our broker, and the account is the mapped, allowed one.
"""

from __future__ import annotations

import json
import re
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity.mapping import load_mapping_documents
from identity.policy import AccountPolicy, PasswdEntry, check_account
from mep.command import ENDPOINT_NAME, MAX_SKEW_S, Properties, Rejection
from mep.decision import DecisionContext, LaunchPlan, Refresh, Running, decide
from templates.render_request import RenderRequest
from wire.queue_info import BrokerAddress

NOW = 1_800_000_000
SENDER = "compute-service"
URL = "amqp://uep.x:pw@127.0.0.1:5672/compute"
BROKER = BrokerAddress.of(URL)
USERS = {
    "alice": PasswdEntry("alice", 2001, 2001, "/home/alice", "/bin/bash"),
    "root": PasswdEntry("root", 0, 0, "/root", "/bin/bash"),
    "daemon": PasswdEntry("daemon", 1, 1, "/usr/sbin", "/usr/sbin/nologin"),
}
MAPPING = load_mapping_documents(
    [
        {
            "DATA_TYPE": "expression_identity_mapping#1.0.0",
            "mappings": [{"source": "{username}", "match": "(.*)@uni\\.edu", "output": "{0}"}],
        }
    ]
)
SETTINGS = settings(
    max_examples=10_000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def context(running: dict | None = None) -> DecisionContext:
    return DecisionContext(
        check_account=lambda name: check_account(
            name, AccountPolicy(), 0, lookup_user=USERS.get, lookup_groups=lambda n, g: ((g, n),)
        ),
        prepare=lambda cmd, account, mapped: RenderRequest(
            "engine: {type: ThreadPoolEngine}", cmd.user_opts, cmd.user_runtime, mapped, {}
        ),
        manager_pid=1,
        running=running or {},
        map_identity=MAPPING.map,
        broker=BROKER,
        command_sender=SENDER,
    )


def good_command() -> dict:
    info = {"connection_url": URL, "exchange": "x", "queue": "q"}
    identity = {"id": "a1", "sub": "a1", "username": "alice@uni.edu", "status": "used"}
    return {
        "command": "cmd_start_endpoint",
        "globus_username": "alice@uni.edu",
        "globus_effective_identity": "a1",
        "globus_identity_set": [identity],
        "args": [],
        "kwargs": {
            "name": "uep.fuzz",
            "amqp_creds": {
                "endpoint_id": str(uuid.uuid4()),
                "task_queue_info": info,
                "result_queue_info": dict(info, queue_publish_kwargs={}),
                "heartbeat_queue_info": dict(info, queue_publish_kwargs={}),
            },
            "user_opts": {},
            "user_runtime": {},
        },
    }


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)
PATHS = [
    ("command",),
    ("globus_username",),
    ("globus_effective_identity",),
    ("globus_identity_set",),
    ("globus_identity_set", 0),
    ("globus_identity_set", 0, "username"),
    ("globus_identity_set", 0, "status"),
    ("kwargs",),
    ("kwargs", "name"),
    ("kwargs", "amqp_creds"),
    ("kwargs", "amqp_creds", "endpoint_id"),
    ("kwargs", "amqp_creds", "task_queue_info"),
    ("kwargs", "amqp_creds", "task_queue_info", "connection_url"),
    ("kwargs", "amqp_creds", "result_queue_info", "queue_publish_kwargs"),
    ("kwargs", "amqp_creds", "heartbeat_queue_info", "connection_url"),
    ("kwargs", "user_opts"),
    ("kwargs", "user_runtime"),
]
PROPERTIES = st.builds(
    Properties,
    content_type=st.sampled_from(["application/json", "text/plain", None, ""]),
    timestamp=st.one_of(
        st.integers(NOW - 400, NOW + 400), st.none(), st.text(max_size=5), st.floats()
    ),
    headers=st.sampled_from([{}, {"debug": True}, {"debug": "yes"}, {"x": None}]),
    user_id=st.sampled_from([SENDER, None, "guest", "uep.someone", SENDER + " "]),
)


def _has(target, key) -> bool:
    if isinstance(target, dict):
        return key in target
    return isinstance(target, list) and isinstance(key, int) and key < len(target)


def _set(doc: dict, path: tuple, value) -> dict:
    """Replace the value at ``path`` if the document (as mutated so far) has it."""
    target = doc
    for key in path[:-1]:
        if not _has(target, key):
            return doc
        target = target[key]
    if isinstance(target, dict) or _has(target, path[-1]):
        target[path[-1]] = value
    return doc


def assert_sound(decision, props: Properties, raw: bytes) -> None:
    """A launch or refresh is only ever for a command every rule allows."""
    if isinstance(decision, Rejection):
        assert isinstance(decision.user_message, str) and isinstance(decision.admin_message, str)
        return
    assert isinstance(decision, LaunchPlan | Refresh), decision
    assert props.user_id == SENDER and props.content_type == "application/json"
    assert isinstance(props.timestamp, int) and abs(NOW - props.timestamp) <= MAX_SKEW_S
    cmd = decision.command
    assert ENDPOINT_NAME.fullmatch(cmd.name) and not cmd.name.startswith(".")
    creds = cmd.amqp_creds
    for info in (creds.task_queue_info, creds.result_queue_info, creds.heartbeat_queue_info):
        assert BrokerAddress.of(info.connection_url) == BROKER
    if isinstance(decision, LaunchPlan):
        assert decision.account.name == "alice" and decision.account.uid == 2001
    body = json.loads(raw)
    assert re.fullmatch(r"cmd_start_endpoint", body["command"])


@SETTINGS
@given(st.binary(max_size=400), PROPERTIES)
def test_any_bytes_decide_without_a_crash_and_launch_nothing(raw, props):
    decision = decide(props, raw, NOW, context())
    assert isinstance(decision, Rejection)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(PATHS), JSON), max_size=4), PROPERTIES, st.booleans())
def test_almost_right_commands_never_crash_and_launch_only_what_is_allowed(changes, props, running):
    doc = good_command()
    for path, value in changes:
        doc = _set(doc, path, value)
    raw = json.dumps(doc).encode()
    alice = {"uep.fuzz": Running("alice", str(uuid.uuid4()))} if running else None
    decision = decide(props, raw, NOW, context(alice))
    assert_sound(decision, props, raw)


def test_the_unmutated_command_launches_so_the_fuzzing_has_something_to_break():
    props = Properties("application/json", NOW, {}, SENDER)
    raw = json.dumps(good_command()).encode()
    decision = decide(props, raw, NOW, context())
    assert isinstance(decision, LaunchPlan)
    assert_sound(decision, props, raw)
