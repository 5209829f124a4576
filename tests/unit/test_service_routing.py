"""Pure decisions of the service: names, ids, messages, and request checks."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import auth, errors, routing, store
from service.bodies import FunctionRegistration
from service.routes_endpoints import is_online
from service.routes_functions import executable_code
from service.routes_tasks import check_payload, new_task_ids
from wire import messages, serializer
from wire.queue_info import AmqpCreds, BrokerAddress, WriteQueueInfo

URL = "amqp://guest:guest@127.0.0.1:5672/v"
EP = str(uuid.uuid4())
ME = str(uuid.uuid4())


def test_user_endpoint_is_stable_and_ignores_key_order():
    a = routing.user_endpoint_id(EP, ME, {"a": 1, "b": [1, 2]})
    assert a == routing.user_endpoint_id(EP, ME, {"b": [1, 2], "a": 1})
    assert a != routing.user_endpoint_id(EP, ME, {"a": 2, "b": [1, 2]})
    assert a != routing.user_endpoint_id(EP, str(uuid.uuid4()), {"a": 1, "b": [1, 2]})
    assert routing.user_endpoint_id(EP, ME, None) == routing.user_endpoint_id(EP, ME, {})


@given(st.dictionaries(st.text(), st.integers() | st.text()))
def test_user_endpoint_names_are_directory_safe(config):
    name = routing.user_endpoint_name(routing.user_endpoint_id(EP, ME, config))
    assert len(name) <= 128 and not name.startswith(".")
    assert not any(c.isspace() or c in "/'\"" for c in name)


def test_prefix_applies_to_every_name():
    topo = routing.Topology(URL, "x-")
    creds = topo.amqp_creds(EP, URL, "x-uep.me")
    assert creds.task_queue_info.queue == f"x-{EP}.tasks"
    assert creds.result_queue_info.exchange == "x-results"
    assert creds.result_queue_info.queue == "x-service.results"
    assert creds.heartbeat_queue_info.queue_publish_kwargs["routing_key"] == f"{EP}.heartbeats"
    assert creds.heartbeat_queue_info.queue_publish_kwargs["properties"]["user_id"] == "x-uep.me"
    assert topo.command_queue(EP) == f"x-{EP}.commands"
    assert topo.sdk_queue(ME, "tg") == f"x-tg.{ME}.tg"


def test_no_queue_is_named_like_an_exchange():
    topo = routing.Topology(URL, "p.")
    exchanges = {topo.tasks_exchange, topo.results_exchange, topo.heartbeats_exchange}
    exchanges.add(topo.commands_exchange)
    queues = {topo.results_queue, topo.heartbeats_queue, topo.task_queue(EP)}
    queues |= {topo.command_queue(EP), topo.sdk_queue(ME, EP)}
    assert not exchanges & queues


def test_party_urls_keep_the_broker_and_swap_the_account():
    topo = routing.Topology("amqps://svc:pw@broker.site.org:5671/compute%2Fprod?heartbeat=30")
    url = topo.party_url("uep.x", "s3cr/t")
    assert url == "amqps://uep.x:s3cr%2Ft@broker.site.org:5671/compute%2Fprod"
    assert BrokerAddress.of(url) == BrokerAddress.of(topo.url)
    assert topo.service_user == "svc"
    assert routing.Topology("amqp://[::1]/").party_url("a", "b") == "amqp://a:b@[::1]/"


def test_registration_and_start_command_round_trip_through_wire():
    topo = routing.Topology(URL)
    mine = topo.party_url("ep.me", "pw")
    reg = topo.registration(EP, mine, "ep.me")
    assert reg["endpoint_id"] == EP and reg["command_sender"] == "guest"
    assert reg["command_queue_info"]["connection_url"] == mine
    hb = WriteQueueInfo.from_dict(reg["heartbeat_queue_info"])
    assert hb.queue_publish_kwargs["exchange"] == hb.exchange == "heartbeats"
    assert hb.queue_publish_kwargs["properties"]["user_id"] == "ep.me"
    identities = [{"id": ME, "sub": ME, "username": "a@b"}]
    uep = routing.user_endpoint_id(EP, ME, {"k": 1})
    body = routing.start_command(
        identities=identities,
        name=routing.user_endpoint_name(uep),
        creds=topo.amqp_creds(uep, mine, "uep.x"),
        user_opts={"k": 1},
        user_runtime=None,
    )
    decoded = json.loads(json.dumps(body))
    assert decoded["globus_effective_identity"] == ME
    assert decoded["globus_username"] == "a@b"
    assert AmqpCreds.from_dict(decoded["kwargs"]["amqp_creds"]).endpoint_id == uuid.UUID(uep)
    assert decoded["kwargs"]["user_runtime"] == {}
    props = routing.command_properties("svc", now=1000.7)
    assert props["timestamp"] == 1000 and props["content_type"] == "application/json"
    assert props["user_id"] == "svc"


def test_task_message_concatenates_code_and_payload():
    tid = str(uuid.uuid4())
    code = serializer.pack_buffers([serializer.serialize(len)])
    payload = serializer.pack_buffers([serializer.serialize(("ab",)), serializer.serialize({})])
    body, props = routing.task_message(
        task_id=tid,
        function_id=EP,
        function_code=code,
        payload=payload,
        resource_specification=None,
        result_serializers=None,
    )
    task = messages.unpack(body)
    fn, args, kwargs = serializer.unpack_task_buffer(task.task_buffer)
    assert fn(*args, **kwargs) == 2
    assert props["headers"] == {
        "function_uuid": EP,
        "task_uuid": tid,
        "resource_specification": "null",
        "result_serializers": [],
    }


def test_error_result_is_an_error():
    result = messages.unpack(routing.error_result(EP, "no account"))
    assert result.is_error and result.data == "no account"
    assert result.error_details.user_message == "no account"


def test_engine_url_rewrites_postgres_only():
    assert store.engine_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert store.engine_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert store.engine_url("sqlite:///x.db") == "sqlite:///x.db"


def test_secret_hash_round_trip_and_rejections():
    stored = auth.hash_secret("s3cret")
    assert "s3cret" not in stored
    assert auth.check_secret("s3cret", stored)
    assert not auth.check_secret("s3cret!", stored)
    assert not auth.check_secret("s3cret", "garbage")
    assert auth.hash_secret("s3cret") != stored


def test_scopes_group_by_resource_server():
    both = auth.resource_servers_for(
        f"{auth.COMPUTE_SCOPE} openid urn:globus:auth:scope:auth.globus.org:manage_projects"
    )
    assert list(both) == ["funcx_service", "auth.globus.org"]
    assert len(both["auth.globus.org"]) == 2
    with pytest.raises(auth.AuthError, match="unknown scope"):
        auth.resource_servers_for("https://example.org/other")
    with pytest.raises(auth.AuthError, match="no scope"):
        auth.resource_servers_for("  ")


def test_online_needs_a_recent_heartbeat_that_was_not_a_goodbye():
    assert is_online(100.0, 5.0, 110.0)
    assert not is_online(100.0, 5.0, 116.0)
    assert not is_online(100.0, 0, 100.5)
    assert not is_online(None, 5.0, 100.0)
    assert is_online(100.0, None, 180.0)


def test_executable_code_checks_and_converts():
    code = serializer.pack_buffers([serializer.serialize(len)])
    assert executable_code(FunctionRegistration(function_name="len", function_code=code)) == (
        code,
        "01",
    )
    packed, serde = executable_code(
        FunctionRegistration(
            function_name="f", function_code="def f():\n  return 1\n", serialized=False
        )
    )
    assert serde == "st" and serializer.deserialize(serializer.unpack_buffers(packed)[0])() == 1
    two = serializer.pack_buffers([serializer.serialize(len), serializer.serialize(len)])
    with pytest.raises(errors.ApiError, match="exactly 1 buffer"):
        executable_code(FunctionRegistration(function_name="f", function_code=two))


def test_check_payload_names_the_task():
    check_payload("f", 0, serializer.pack_buffers(["11\n[]", "11\n{}"]))
    with pytest.raises(errors.ApiError, match=r"tasks\.f\[3\]: expected 2 buffers"):
        check_payload("f", 3, serializer.pack_buffers(["11\n[]"]))


def test_error_body_shape():
    body = errors.body(404, "task x not found")
    assert body["code"] == "NOT_FOUND" and body["http_status_code"] == 404
    assert "authorization_parameters" not in errors.body(401, "no")


def test_task_ids_for_a_submit_are_distinct_random_version_4_uuids():
    ids = new_task_ids(1000)
    assert len(ids) == len(set(ids)) == 1000
    parsed = [uuid.UUID(i) for i in ids]
    assert all(p.version == 4 and p.variant == uuid.RFC_4122 for p in parsed)
    assert [str(p) for p in parsed] == ids
    assert new_task_ids(0) == [] and ids[:3] != new_task_ids(3)
