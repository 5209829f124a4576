"""Work submitted while an endpoint is down is not stranded: when the endpoint
registers again, the service sends fresh start commands for the user
endpoints that still have pending tasks."""

from __future__ import annotations

import time

from tests.e2e.wire_endpoint import WireEndpoint
from wire import amqp, messages, serializer

CODE = serializer.pack_buffers([serializer.serialize(len)])
PAYLOAD = serializer.pack_buffers([serializer.serialize(("four",)), serializer.serialize({})])


def test_reregistering_endpoint_gets_start_commands_for_pending_work(api_service, rabbit_vhost):
    client = api_service.add_client("gail@uni.edu")
    token = api_service.token(client)
    endpoint = WireEndpoint(api_service.url, token)
    endpoint_id = endpoint.register()["endpoint_id"]
    with api_service.api(token) as api:
        fid = api.post("/v3/functions", json={"function_name": "len", "function_code": CODE})
        fid = fid.json()["function_uuid"]
        body = {"tasks": {fid: [PAYLOAD]}, "create_queue": True, "user_endpoint_config": {"q": 1}}
        sub = api.post(f"/v3/endpoints/{endpoint_id}/submit", json=body).json()
        prefix = api.get("/v2/get_amqp_result_connection_url").json()["queue_prefix"]
    connection = amqp.connect(rabbit_vhost)
    try:
        channel = connection.channel()
        purged = channel.queue_purge(endpoint.registration["command_queue_info"]["queue"])
        assert purged.method.message_count == 1  # the start command, as if it had expired

        endpoint.register(endpoint_id)
        endpoint.start()
        try:
            deadline = time.monotonic() + 30
            raw = None
            while raw is None and time.monotonic() < deadline:
                _method, _props, raw = channel.basic_get(
                    prefix + sub["task_group_id"], auto_ack=True
                )
                time.sleep(0.2)
        finally:
            endpoint.stop()
    finally:
        connection.close()
    assert raw is not None, f"no result arrived; endpoint errors: {endpoint.errors}"
    result = messages.unpack(raw)
    assert str(result.task_id) == sub["tasks"][fid][0]
    assert serializer.deserialize(result.data) == 4
    assert endpoint.commands[0]["kwargs"]["user_opts"] == {"q": 1}
    assert endpoint.commands[0]["globus_username"] == "gail@uni.edu"
