"""The forwarder through the real broker: junk does not stall good results,
and a result is stored before it is forwarded with a timestamp."""

from __future__ import annotations

import time
import uuid

import pika

from tests.fixtures_service import queued_command
from wire import amqp, messages, serializer

CODE = serializer.pack_buffers([serializer.serialize(len)])
PAYLOAD = serializer.pack_buffers([serializer.serialize(("ab",)), serializer.serialize({})])


def test_junk_is_dropped_and_good_results_still_flow(api_service, rabbit_vhost):
    client = api_service.add_client("ivan@uni.edu")
    with api_service.api(api_service.token(client)) as api:
        reg = api.post("/v3/endpoints", json={"endpoint_name": "f"}).json()
        fid = api.post("/v3/functions", json={"function_name": "len", "function_code": CODE})
        fid = fid.json()["function_uuid"]
        body = {"tasks": {fid: [PAYLOAD]}, "create_queue": True}
        sub = api.post(f"/v3/endpoints/{reg['endpoint_id']}/submit", json=body).json()
        task_id = sub["tasks"][fid][0]
        sdk_conn = api.get("/v2/get_amqp_result_connection_url").json()
        sdk_queue = sdk_conn["queue_prefix"] + sub["task_group_id"]
        info = queued_command(rabbit_vhost, reg)["kwargs"]["amqp_creds"]["result_queue_info"]
        connection = amqp.connect(info["connection_url"])
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            exchange, key = info["exchange"], info["queue_publish_kwargs"]["routing_key"]
            for junk in (
                b"",
                b"\x01{not json",
                b"\x09whatever",
                messages.pack(messages.TaskCancel(task_id=uuid.uuid4())),
                messages.pack(messages.Result(task_id=uuid.uuid4(), data="00\nx")),
            ):
                channel.basic_publish(exchange, key, junk)
            good = messages.pack(messages.Result(task_id=uuid.UUID(task_id), data="00\ngARLAi4=\n"))
            channel.basic_publish(exchange, key, good, pika.BasicProperties(delivery_mode=2))
        finally:
            connection.close()
        connection = amqp.connect(sdk_conn["connection_url"])
        try:
            channel = connection.channel()
            deadline = time.monotonic() + 20
            got = (None, None, None)
            while got[0] is None and time.monotonic() < deadline:
                got = channel.basic_get(sdk_queue, auto_ack=True)
                time.sleep(0.1)
        finally:
            connection.close()
        _method, props, raw = got
        assert raw == good, "the good result was not forwarded unchanged"
        assert abs(props.timestamp - time.time()) < 60
        task = api.get(f"/v2/tasks/{task_id}").json()
        assert task["status"] == "success" and serializer.deserialize(task["result"]) == 2
