"""The REST API through the real service and RabbitMQ: shapes the official
clients read, validation messages, and what a submit puts on the broker."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid

import pika
import pytest

from service.broker import queue_frames
from wire import amqp, messages, serializer
from wire.queue_info import BrokerAddress, ReadQueueInfo, WriteQueueInfo


def add(a, b):
    return a + b


CODE = serializer.pack_buffers([serializer.serialize(add, "st\n")])
PAYLOAD = serializer.pack_buffers([serializer.serialize((1, 2)), serializer.serialize({})])


@pytest.fixture(scope="module")
def api(api_service):
    client = api_service.add_client("dana@uni.edu", "dana@lab.org")
    with api_service.api(api_service.token(client)) as api:
        api.identity_id = client["identity_id"]
        api.client_id = client["client_id"]
        yield api


def test_version_and_openapi_need_no_token(api_service):
    with api_service.api(None) as anon:
        version = anon.get("/v2/version", params={"service": "all"}).json()
        assert version["min_sdk_version"] and version["min_ep_version"]
        assert "/v3/endpoints/{endpoint_id}/submit" in anon.get("/openapi.json").json()["paths"]


def test_registration_is_the_core_endpoint_shape(api):
    reg = api.post(
        "/v3/endpoints",
        json={"endpoint_name": "cep", "multi_user": True, "metadata": {"hostname": "h"}},
    ).json()
    ReadQueueInfo.from_dict(reg["command_queue_info"])
    heartbeat = WriteQueueInfo.from_dict(reg["heartbeat_queue_info"])
    assert heartbeat.exchange and heartbeat.queue_publish_kwargs["mandatory"] is True
    WriteQueueInfo.from_dict(reg["result_queue_info"])
    again = api.put(f"/v3/endpoints/{reg['endpoint_id']}", json={"endpoint_name": "cep2"})
    assert again.json()["endpoint_id"] == reg["endpoint_id"]
    fixed = str(uuid.uuid4())
    assert (
        api.put(f"/v3/endpoints/{fixed}", json={"endpoint_name": "x"}).json()["endpoint_id"]
        == fixed
    )
    doc = api.get(f"/v2/endpoints/{reg['endpoint_id']}").json()
    assert doc["name"] == "cep2" and doc["owner"] == api.identity_id
    assert api.get(f"/v2/endpoints/{fixed}/status").json()["status"] == "offline"
    assert api.delete(f"/v2/endpoints/{fixed}").status_code == 200
    assert api.get(f"/v2/endpoints/{fixed}").status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v3/functions", {"function_code": CODE}, 422, "function_name: Field required"),
        ("/v3/functions", {"function_name": "f", "function_code": "zz"}, 400, "packed buffer"),
        (
            "/v3/functions",
            {"function_name": "f", "function_code": serializer.pack_buffers(["11\n[1]"])},
            400,
            "code serializer",
        ),
        (
            "/v3/functions",
            {"function_name": "no t", "function_code": "x", "serialized": False},
            400,
            "Python name",
        ),
        ("/v3/endpoints", {"endpoint_name": ""}, 422, "endpoint_name"),
        ("/v3/endpoints", {"endpoint_name": "x", "public": "maybe"}, 422, "public"),
        ("/v2/batch_status", {"task_ids": ["nope"]}, 422, "task_ids.0"),
        ("/v2/batch_status", [], 422, "request body"),
    ],
)
def test_bad_bodies_say_what_is_wrong(api, path, body, status, words):
    response = api.post(path, json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["reason"]


def test_bad_submissions_say_what_is_wrong(api):
    ep = api.post("/v3/endpoints", json={"endpoint_name": "val"}).json()["endpoint_id"]
    fid = api.post("/v3/functions", json={"function_name": "add", "function_code": CODE}).json()
    fid = fid["function_uuid"]
    cases = [
        ({"tasks": {}}, 422, "tasks"),
        ({"tasks": {"nope": [PAYLOAD]}}, 422, "tasks.nope"),
        ({"tasks": {fid: ["garbage"]}}, 400, f"tasks.{fid}[0]"),
        ({"tasks": {fid: [serializer.pack_buffers(["00\nx"])]}}, 400, "expected 2 buffers"),
        ({"tasks": {str(uuid.uuid4()): [PAYLOAD]}}, 404, "function"),
        ({"tasks": {fid: [PAYLOAD]}, "user_endpoint_config": [1]}, 422, "user_endpoint_config"),
    ]
    for body, status, words in cases:
        response = api.post(f"/v3/endpoints/{ep}/submit", json=body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["reason"]
    assert api.post(f"/v3/endpoints/{uuid.uuid4()}/submit", json=cases[-1][0]).status_code in (
        404,
        422,
    )
    assert api.get("/v2/tasks/not-a-uuid").status_code == 422
    assert api.post(f"/v3/endpoints/{ep}/submit", content=b"{not json").status_code == 422


def test_source_registration_is_stored_executable(api):
    source = "def triple(x):\n    return 3 * x\n"
    fid = api.post(
        "/v3/functions",
        json={"function_name": "triple", "function_code": source, "serialized": False},
    ).json()["function_uuid"]
    doc = api.get(f"/v2/functions/{fid}").json()
    [buffer] = serializer.unpack_buffers(doc["function_code"])
    assert serializer.deserialize(buffer)(5) == 15
    assert api.delete(f"/v2/functions/{fid}").status_code == 200
    assert api.get(f"/v2/functions/{fid}").status_code == 404


def test_allowed_functions_are_enforced(api):
    fid = api.post("/v3/functions", json={"function_name": "add", "function_code": CODE}).json()
    other = api.post("/v3/functions", json={"function_name": "add", "function_code": CODE}).json()
    reg = {"endpoint_name": "locked", "allowed_functions": [fid["function_uuid"]]}
    ep = api.post("/v3/endpoints", json=reg).json()["endpoint_id"]
    refused = api.post(
        f"/v3/endpoints/{ep}/submit", json={"tasks": {other["function_uuid"]: [PAYLOAD]}}
    )
    assert refused.status_code == 403 and "not allowed" in refused.json()["reason"]


def test_submit_puts_command_tasks_and_sdk_queue_on_the_broker(api, rabbit_vhost):
    ep = api.post("/v3/endpoints", json={"endpoint_name": "wire"}).json()
    fid = api.post("/v3/functions", json={"function_name": "add", "function_code": CODE}).json()
    fid = fid["function_uuid"]
    body = {
        "create_queue": True,
        "tasks": {fid: [PAYLOAD, PAYLOAD]},
        "user_endpoint_config": {"b": 1, "a": [1, 2]},
        "resource_specification": {"num_nodes": 2},
        "result_serializers": ["globus_compute_sdk.serialize.JSONData"],
        "user_runtime": {"python_version": "3.11.0"},
    }
    response = api.post(f"/v3/endpoints/{ep['endpoint_id']}/submit", json=body).json()
    assert uuid.UUID(response["request_id"]) and uuid.UUID(response["endpoint_id"])
    task_ids = response["tasks"][fid]
    result_conn = api.get("/v2/get_amqp_result_connection_url").json()
    # The client's own account on the service's broker, reading only its identity's groups.
    sdk_url = urllib.parse.urlsplit(result_conn["connection_url"])
    assert BrokerAddress.of(result_conn["connection_url"]) == BrokerAddress.of(rabbit_vhost)
    assert sdk_url.username == f"api.sdk.{api.client_id}" and len(sdk_url.password) >= 40
    assert result_conn["queue_prefix"] == f"api.tg.{api.identity_id}."

    connection = amqp.connect(rabbit_vhost)
    try:
        channel = connection.channel()
        sdk_queue = result_conn["queue_prefix"] + response["task_group_id"]
        channel.queue_declare(sdk_queue, passive=True)
        _method, props, raw = channel.basic_get(ep["command_queue_info"]["queue"], auto_ack=True)
        assert props.content_type == "application/json"
        assert abs(props.timestamp - time.time()) < 60
        assert props.user_id == urllib.parse.urlsplit(rabbit_vhost).username
        command = json.loads(raw)
        assert command["command"] == "cmd_start_endpoint"
        assert command["globus_effective_identity"] == api.identity_id
        assert command["globus_identity_set"][0]["sub"] == api.identity_id
        kwargs = command["kwargs"]
        assert kwargs["user_opts"] == body["user_endpoint_config"]
        assert kwargs["user_runtime"] == body["user_runtime"]
        assert kwargs["name"] == f"uep.{kwargs['amqp_creds']['endpoint_id']}"
        account = f"api.uep.{kwargs['amqp_creds']['endpoint_id']}"
        for key in ("task_queue_info", "result_queue_info", "heartbeat_queue_info"):
            info = kwargs["amqp_creds"][key]
            assert urllib.parse.urlsplit(info["connection_url"]).username == account
        published = kwargs["amqp_creds"]["result_queue_info"]["queue_publish_kwargs"]
        assert published["properties"]["user_id"] == account
        task_queue = kwargs["amqp_creds"]["task_queue_info"]["queue"]
        seen = []
        for _ in task_ids:
            _method, props, raw = channel.basic_get(task_queue, auto_ack=True)
            task = messages.unpack(raw)
            assert props.headers["task_uuid"] == str(task.task_id)
            assert props.headers["function_uuid"] == fid
            assert json.loads(props.headers["resource_specification"]) == {"num_nodes": 2}
            assert props.headers["result_serializers"] == body["result_serializers"]
            fn, args, _ = serializer.unpack_task_buffer(task.task_buffer)
            assert fn(*args) == 3
            seen.append(str(task.task_id))
        assert seen == task_ids
    finally:
        connection.close()
    group = api.get(f"/v2/taskgroup/{response['task_group_id']}").json()
    assert group["taskgroup_id"] == response["task_group_id"]
    assert [t["id"] for t in group["tasks"]] == task_ids


def test_a_large_submit_reaches_the_task_queue_whole_and_in_order(api, rabbit_vhost):
    ep = api.post("/v3/endpoints", json={"endpoint_name": "large"}).json()
    fid = api.post("/v3/functions", json={"function_name": "add", "function_code": CODE}).json()
    fid = fid["function_uuid"]
    response = api.post(
        f"/v3/endpoints/{ep['endpoint_id']}/submit", json={"tasks": {fid: [PAYLOAD] * 300}}
    )
    task_ids = response.json()["tasks"][fid]
    assert len(set(task_ids)) == 300
    connection = amqp.connect(rabbit_vhost)
    try:
        channel = connection.channel()
        _m, _p, raw = channel.basic_get(ep["command_queue_info"]["queue"], auto_ack=True)
        task_queue = json.loads(raw)["kwargs"]["amqp_creds"]["task_queue_info"]["queue"]
        seen = []
        while (got := channel.basic_get(task_queue, auto_ack=True))[0] is not None:
            assert got[1].headers["task_uuid"] == str(messages.unpack(got[2]).task_id)
            seen.append(got[1].headers["task_uuid"])
        assert seen == task_ids
    finally:
        connection.close()


def test_frames_queued_on_a_transaction_are_dropped_without_its_commit(rabbit_vhost):
    queue = f"uncommitted-{uuid.uuid4().hex[:8]}"
    connection = amqp.connect(rabbit_vhost)
    try:
        channel = connection.channel()
        channel.queue_declare(queue, auto_delete=False)
        channel.tx_select()
        for n in range(5):
            queue_frames(channel, "", queue, b"%d" % n, pika.BasicProperties())
        channel.close()
        check = connection.channel()
        assert check.queue_declare(queue, passive=True).method.message_count == 0
        check.tx_select()
        for n in range(5):
            queue_frames(check, "", queue, b"%d" % n, pika.BasicProperties())
        check.tx_commit()
        bodies = [check.basic_get(queue, auto_ack=True)[2] for _ in range(5)]
        assert bodies == [b"0", b"1", b"2", b"3", b"4"]
        check.queue_delete(queue)
    finally:
        connection.close()


def test_unknown_routes_and_methods_use_the_error_shape(api):
    missing = api.get("/v2/no-such-route")
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    wrong = api.patch("/v2/version")
    assert wrong.status_code == 405 and wrong.json()["http_status_code"] == 405
