"""Restarting the service loses nothing: clients and tokens, endpoints,
functions, task groups and stored results survive, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid

from tests.fixtures_service import private_vhost, queued_command
from wire import amqp, messages, serializer
from wire.queue_info import WriteQueueInfo

CODE = serializer.pack_buffers([serializer.serialize(len)])
PAYLOAD = serializer.pack_buffers([serializer.serialize(("abc",)), serializer.serialize({})])


def wait_for(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def publish(info: dict, message: messages.Message) -> None:
    queue_info = WriteQueueInfo.from_dict(info)
    connection = amqp.connect(queue_info.connection_url)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(body=messages.pack(message), **amqp.publish_kwargs(queue_info))
    finally:
        connection.close()


def test_restart_keeps_everything(start_service, db_url):
    with private_vhost("persist") as amqp_url:
        svc = start_service(db_url, amqp_url)
        client = svc.add_client("erin@uni.edu")
        token = svc.token(client)
        with svc.api(token) as api:
            reg = api.post("/v3/endpoints", json={"endpoint_name": "kept", "public": True}).json()
            ep = reg["endpoint_id"]
            fid = api.post("/v3/functions", json={"function_name": "len", "function_code": CODE})
            fid = fid.json()["function_uuid"]
            sub = api.post(f"/v3/endpoints/{ep}/submit", json={"tasks": {fid: [PAYLOAD]}}).json()
            task_id = sub["tasks"][fid][0]
            creds = queued_command(amqp_url, reg)["kwargs"]["amqp_creds"]
            publish(
                reg["heartbeat_queue_info"],
                messages.EPStatusReport(
                    endpoint_id=uuid.UUID(ep),
                    global_state={"heartbeat_period": 30},
                    task_statuses={},
                ),
            )
            publish(
                creds["result_queue_info"],
                messages.Result(task_id=uuid.UUID(task_id), data=serializer.serialize(3)),
            )
            wait_for(lambda: api.get(f"/v2/tasks/{task_id}").json()["status"] == "success")
            wait_for(lambda: api.get(f"/v2/endpoints/{ep}/status").json()["status"] == "online")

        svc.restart()

        with svc.api(token) as api:
            task = api.get(f"/v2/tasks/{task_id}").json()
            assert task["status"] == "success"
            assert serializer.deserialize(task["result"]) == 3
            assert api.get(f"/v2/endpoints/{ep}").json()["name"] == "kept"
            assert api.get(f"/v2/endpoints/{ep}/status").json()["status"] == "online"
            assert api.get(f"/v2/functions/{fid}").json()["function_code"] == CODE
            group = api.get(f"/v2/taskgroup/{sub['task_group_id']}").json()
            assert [t["id"] for t in group["tasks"]] == [task_id]
            again = api.put(f"/v3/endpoints/{ep}", json={"endpoint_name": "kept"})
            assert again.json()["endpoint_id"] == ep
        assert svc.token(client)
