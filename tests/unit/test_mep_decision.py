"""The manager's decision core, path by path (MEP.md §3 items 17-31 as a checklist).

Pure: fakes stand in for the mapper, the password database and the renderer.
"""

import json
import uuid

import pytest

from identity.mapping import load_mapping_documents
from identity.policy import AccountPolicy, LocalAccount, PasswdEntry, check_account
from mep.command import Properties, Rejection, parse_command
from mep.decision import (
    DecisionContext,
    LaunchPlan,
    Refresh,
    Running,
    decide,
)
from templates.manager_config import Limits
from templates.render_request import RenderRequest
from wire.queue_info import BrokerAddress

NOW = 1_800_000_000
UEP_ID = uuid.uuid4()
URL = "amqp://u:secretpw@127.0.0.1:5672/%2F"
ALICE = {"id": "a1", "sub": "a1", "username": "alice@uni.edu", "status": "used", "email": None}
BOB = {"id": "b2", "sub": "b2", "username": "bob@lab.org", "status": "used"}
USERS = {
    "alice": PasswdEntry("alice", 2001, 2001, "/home/alice", "/bin/bash"),
    "bob": PasswdEntry("bob", 2002, 2002, "/home/bob", "/bin/sh"),
    "root": PasswdEntry("root", 0, 0, "/root", "/bin/bash"),
    "daemon": PasswdEntry("daemon", 1, 1, "/usr/sbin", "/usr/sbin/nologin"),
    "svc": PasswdEntry("svc", 999, 999, "/srv", "/bin/sh"),
}
MAPPING = [
    {
        "DATA_TYPE": "expression_identity_mapping#1.0.0",
        "mappings": [
            {
                "source": "{username}",
                "match": "(.*)@(uni\\.edu|lab\\.org|root\\.x|sys\\.x|ghost\\.x)",
                "output": "{0}",
            }
        ],
    }
]


def creds():
    write = {"connection_url": URL, "exchange": "heartbeats", "queue": "heartbeats"}
    return {
        "endpoint_id": str(UEP_ID),
        "task_queue_info": {"connection_url": URL, "exchange": "tasks", "queue": "x.tasks"},
        "result_queue_info": dict(write, exchange="results", queue="results"),
        "heartbeat_queue_info": write,
    }


def body(**overrides):
    data = {
        "command": "cmd_start_endpoint",
        "globus_username": "alice@uni.edu",
        "globus_effective_identity": "a1",
        "globus_identity_set": [ALICE],
        "args": [],
        "kwargs": {
            "name": "uep.x.1",
            "amqp_creds": creds(),
            "user_opts": {"account": "abc"},
            "user_runtime": {},
        },
    }
    data.update(overrides)
    return json.dumps(data).encode()


def props(**overrides):
    values = {"content_type": "application/json", "timestamp": NOW}
    values.update(overrides)
    return Properties(**values)


def prepare_ok(cmd, account, mapped):
    return RenderRequest(
        "engine: {type: ThreadPoolEngine}\n# {{ _GC.mapped_identity.local.uname }}\n",
        cmd.user_opts,
        cmd.user_runtime,
        mapped,
        {},
    )


def context(**overrides):
    mapper = load_mapping_documents(MAPPING)
    values = dict(
        check_account=lambda name: check_account(
            name, AccountPolicy(), 0, lookup_user=USERS.get, lookup_groups=lambda n, g: ((g, n),)
        ),
        prepare=prepare_ok,
        manager_pid=4242,
        map_identity=mapper.map,
    )
    values.update(overrides)
    return DecisionContext(**values)


def test_happy_path_plans_a_launch_as_the_mapped_account():
    plan = decide(props(), body(), NOW, context())
    assert isinstance(plan, LaunchPlan)
    assert plan.account.name == "alice" and plan.account.uid == 2001
    assert plan.command.name == "uep.x.1" and plan.command.user_opts == {"account": "abc"}
    assert plan.ep_info["posix_ppid"] == 4242
    assert plan.ep_info["globus_matched_identity"] == "a1"
    assert plan.ep_info["globus_candidate_identities"] == [{"a1": ["alice"]}]
    assert plan.render.mapped_identity["local"]["uname"] == "alice"
    assert plan.render.options == {"account": "abc"}


def test_a_linked_identity_can_match_when_the_first_cannot():
    stranger = {"id": "s0", "sub": "s0", "username": "s@elsewhere.com", "status": "used"}
    plan = decide(props(), body(globus_identity_set=[stranger, BOB]), NOW, context())
    assert isinstance(plan, LaunchPlan) and plan.account.name == "bob"


def test_running_name_refreshes_instead_of_launching():
    running = {"uep.x.1": Running("alice", str(UEP_ID))}
    decision = decide(props(), body(), NOW, context(running=running))
    assert isinstance(decision, Refresh)
    assert decision.command.amqp_creds.endpoint_id == UEP_ID


def test_a_refresh_is_mapped_and_checked_like_a_start():
    """A command naming alice's running endpoint changes nothing unless it maps to alice."""
    running = {"uep.x.1": Running("alice", str(UEP_ID))}
    as_bob = decide(props(), body(globus_identity_set=[BOB]), NOW, context(running=running))
    decision = rejected(as_bob, "refresh_mismatch")
    assert "alice" not in decision.user_message and "'alice'" in decision.admin_message
    assert decision.endpoint_id is None  # telling "the submitter" would fail alice's tasks
    other_id = {"uep.x.1": Running("alice", str(uuid.uuid4()))}
    rejected(decide(props(), body(), NOW, context(running=other_id)), "refresh_mismatch")
    stranger = {"id": "s0", "sub": "s0", "username": "s@elsewhere.com", "status": "used"}
    unmapped = decide(props(), body(globus_identity_set=[stranger]), NOW, context(running=running))
    rejected(unmapped, "identity_mapping")
    root = {"id": "r0", "sub": "r0", "username": "root@root.x", "status": "used"}
    rejected(
        decide(props(), body(globus_identity_set=[root]), NOW, context(running=running)),
        "policy:superuser",
    )


OUR_BROKER = BrokerAddress.of(URL)


@pytest.mark.parametrize(
    "url",
    [
        "amqp://u:secretpw@evil.example.org:5672/%2F",
        "amqp://u:secretpw@127.0.0.1:5673/%2F",
        "amqp://u:secretpw@127.0.0.1:5672/other",
        "amqps://u:secretpw@127.0.0.1:5672/%2F",
    ],
)
@pytest.mark.parametrize("key", ["task_queue_info", "result_queue_info", "heartbeat_queue_info"])
def test_credentials_for_another_broker_are_refused(url, key):
    elsewhere = creds()
    elsewhere[key] = dict(elsewhere[key], connection_url=url)
    kwargs = {"name": "uep.x.1", "amqp_creds": elsewhere}
    decision = decide(props(), body(kwargs=kwargs), NOW, context(broker=OUR_BROKER))
    assert "evil" not in rejected(decision, "broker").user_message
    assert decision.endpoint_id == UEP_ID


def test_our_broker_under_the_configured_port_is_ours():
    ctx = context(broker=BrokerAddress.of("amqp://x@127.0.0.1:5999/%2F"), amqp_port=5999)
    assert isinstance(decide(props(), body(), NOW, ctx), LaunchPlan)


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("ssl_options=%7B%27certfile%27%3A%27%2Froot%2Fk%27%7D", "'ssl_options' is not allowed"),
        ("socket_timeout=99999", "'socket_timeout' is not allowed"),
        ("heartbeat=99999", "whole number up to 3600"),
        ("heartbeat=x", "whole number"),
    ],
)
def test_urls_that_change_connection_settings_are_refused(query, why):
    bad = creds()
    bad["task_queue_info"]["connection_url"] = URL + "?" + query
    decision = decide(props(), body(kwargs={"name": "uep.x.1", "amqp_creds": bad}), NOW, context())
    assert why in rejected(decision, "kwargs").user_message


@pytest.mark.parametrize("user_id", [None, "guest", "uep.someone", "svc "])
def test_commands_not_from_the_service_are_dropped_unanswered(user_id):
    decision = decide(props(user_id=user_id), body(), NOW, context(command_sender="svc"))
    assert rejected(decision, "sender").endpoint_id is None
    assert isinstance(
        decide(props(user_id="svc"), body(), NOW, context(command_sender="svc")), LaunchPlan
    )


def rejected(decision, check):
    assert isinstance(decision, Rejection), decision
    assert decision.check == check
    assert "secretpw" not in decision.user_message + decision.admin_message
    return decision


@pytest.mark.parametrize(
    ("p", "b", "check"),
    [
        (props(content_type="text/plain"), body(), "content_type"),
        (props(), b"{not json", "json"),
        (props(), b"[1]", "json"),
        (props(timestamp=None), body(), "timestamp"),
        (props(timestamp="1800000000"), body(), "timestamp"),
        (props(timestamp=NOW - 181), body(), "timestamp"),
        (props(timestamp=NOW + 181), body(), "timestamp"),
        (
            props(),
            body(globus_identity_set=None).replace(b'"globus_identity_set": null, ', b""),
            "identity_fields",
        ),
        (props(), body(globus_identity_set=[]), "identity_fields"),
        (props(), body(globus_identity_set=["a1"]), "identity_fields"),
        (props(), body(command="cmd_stop_endpoint"), "command"),
        (props(), body(command="_private"), "command"),
        (props(), body(command="cmd_" + "a" * 101), "command"),
        (props(), body(command=None), "command"),
        (props(), body(kwargs={"name": "../etc", "amqp_creds": creds()}), "kwargs"),
        (props(), body(kwargs={"name": ".hidden", "amqp_creds": creds()}), "kwargs"),
        (props(), body(kwargs={"name": "uep.1\n", "amqp_creds": creds()}), "kwargs"),
        (props(), body(command="cmd_start_endpoint\n"), "command"),
        (props(), body(kwargs={"name": "ok"}), "kwargs"),
        (props(), body(kwargs={"name": "ok", "amqp_creds": creds(), "user_opts": [1]}), "kwargs"),
        (props(), body(kwargs=[]), "kwargs"),
    ],
)
def test_malformed_commands_are_rejected_at_the_right_check(p, b, check):
    rejected(decide(p, b, NOW, context()), check)


def test_missing_identity_field_is_named():
    data = json.loads(body())
    del data["globus_username"]
    decision = rejected(
        decide(props(), json.dumps(data).encode(), NOW, context()), "identity_fields"
    )
    assert "globus_username" in decision.user_message


def test_rejections_after_parsing_name_the_user_endpoint_to_tell():
    decision = rejected(decide(props(timestamp=NOW - 999), body(), NOW, context()), "timestamp")
    assert decision.endpoint_id == UEP_ID
    early = rejected(decide(props(content_type=None), body(), NOW, context()), "content_type")
    assert early.endpoint_id is None


@pytest.mark.parametrize(
    ("username", "check", "leak"),
    [
        ("carol@nowhere.org", "identity_mapping", None),
        ("root@root.x", "policy:superuser", "root"),
        ("daemon@sys.x", "policy:min_uid", "daemon"),
        ("svc@sys.x", "policy:min_uid", "svc"),
        ("ghost@ghost.x", "policy:unknown-user", "ghost"),
    ],
)
def test_identity_and_policy_refusals_never_name_the_local_account(username, check, leak):
    identity = {"id": "c3", "sub": "c3", "username": username, "status": "used"}
    decision = rejected(
        decide(props(), body(globus_identity_set=[identity]), NOW, context()), check
    )
    if leak:
        assert leak not in decision.user_message
        assert leak in decision.admin_message
    assert "c3" in decision.admin_message


def test_manager_own_uid_is_refused():
    ctx = context(
        check_account=lambda name: check_account(
            name, AccountPolicy(), 2001, lookup_user=USERS.get, lookup_groups=lambda n, g: ((g, n),)
        )
    )
    rejected(decide(props(), body(), NOW, ctx), "policy:manager-account")


def test_per_user_and_total_limits():
    one_running = {"uep.other": Running("alice", "e1")}
    rejected(
        decide(
            props(),
            body(),
            NOW,
            context(running=one_running, limits=Limits(max_user_endpoints_per_user=1)),
        ),
        "limit_per_user",
    )
    assert isinstance(
        decide(
            props(),
            body(),
            NOW,
            context(
                running={"uep.b": Running("bob", "e2")},
                limits=Limits(max_user_endpoints_per_user=1),
            ),
        ),
        LaunchPlan,
    )
    rejected(
        decide(
            props(),
            body(),
            NOW,
            context(running={"uep.b": Running("bob", "e2")}, limits=Limits(max_user_endpoints=1)),
        ),
        "limit_total",
    )


def test_an_unusable_template_is_passed_through():
    def prepare_fails(cmd, account, mapped):
        return Rejection("template", "the template is unusable; contact the admin", "detail")

    decision = rejected(decide(props(), body(), NOW, context(prepare=prepare_fails)), "template")
    assert "template" in decision.user_message


def test_the_template_sees_the_mapped_identity():
    seen = {}

    def spy(cmd, account, mapped):
        seen.update(mapped)
        return prepare_ok(cmd, account, mapped)

    decide(props(), body(), NOW, context(prepare=spy))
    assert seen["local"] == {
        "uname": "alice",
        "uid": 2001,
        "gid": 2001,
        "groups": [2001],
        "gecos": "",
        "dir": "/home/alice",
        "shell": "/bin/bash",
    }
    assert seen["globus"] == {"id": "a1"}


def owner_context(**overrides):
    owner = LocalAccount("ops", 3000, 3000, (3000,), "/home/ops", "/bin/sh", ("ops",))
    return context(map_identity=None, owner=owner, owner_identities=frozenset({"b2"}), **overrides)


def test_unprivileged_manager_runs_only_its_owners_identities():
    rejected(decide(props(), body(), NOW, owner_context()), "untrusted_identity")
    plan = decide(props(), body(globus_identity_set=[ALICE, BOB]), NOW, owner_context())
    assert isinstance(plan, LaunchPlan) and plan.account.name == "ops"
    assert plan.ep_info == {"posix_ppid": 4242}


def test_parse_command_alone_keeps_identity_set_order():
    cmd = parse_command(props(), body(globus_identity_set=[BOB, ALICE]), NOW)
    assert [i["id"] for i in cmd.identity_set] == ["b2", "a1"]


def test_a_stale_command_for_a_running_endpoint_fails_nobody():
    running = {"uep.x.1": Running("alice", str(UEP_ID))}
    late = decide(props(timestamp=NOW - 999), body(), NOW, context(running=running))
    assert rejected(late, "timestamp").endpoint_id is None
    stopped = decide(props(timestamp=NOW - 999), body(), NOW, context())
    assert rejected(stopped, "timestamp").endpoint_id == UEP_ID
