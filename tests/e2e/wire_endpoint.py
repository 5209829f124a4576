"""A small endpoint built only on wire/, standing in for a real one in tests.

It registers through the REST API as a 4.19 core endpoint would, consumes its
command queue, and for every ``cmd_start_endpoint`` opens a connection with that
user endpoint's own credentials and consumes its task queue; tasks run in this
process with wire.serializer and their Results go to the result queue info of
the start command. A start command whose ``user_opts`` holds ``fail_start`` is
answered, like the official endpoint does when a start fails, with an ``error``
status report on the user endpoint's heartbeat queue, with its credentials.

Everything runs on one thread (one connection per party), so pika is used as
intended.
"""

from __future__ import annotations

import json
import threading
import traceback
import uuid

import httpx

from wire import amqp, messages, serializer
from wire.queue_info import AmqpCreds, ReadQueueInfo, WriteQueueInfo


class WireEndpoint:
    def __init__(self, service_url: str, token: str, name: str = "wire-endpoint"):
        self.service_url = service_url
        self.token = token
        self.name = name
        self.commands: list[dict] = []
        self.started: dict[str, AmqpCreds] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, endpoint_id: str | None = None, **fields) -> dict:
        body = {"endpoint_name": self.name, "public": False, "high_assurance": False, **fields}
        headers = {"Authorization": f"Bearer {self.token}"}
        if endpoint_id:
            url = f"{self.service_url}/v3/endpoints/{endpoint_id}"
            response = httpx.put(url, json=body, headers=headers)
        else:
            response = httpx.post(f"{self.service_url}/v3/endpoints", json=body, headers=headers)
        response.raise_for_status()
        self.registration = response.json()
        self.endpoint_id = self.registration["endpoint_id"]
        return self.registration

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError(f"wire endpoint did not connect: {self.errors}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run(self, ready: threading.Event) -> None:
        try:
            command_info = ReadQueueInfo.from_dict(self.registration["command_queue_info"])
            heartbeat_info = WriteQueueInfo.from_dict(self.registration["heartbeat_queue_info"])
            connection = amqp.connect(command_info.connection_url, client_name="wire-endpoint")
            self.connections = [connection]
            self.channel = connection.channel()
            self._heartbeat(self.channel, heartbeat_info, self.endpoint_id, {"heartbeat_period": 5})
            self.channel.basic_consume(command_info.queue, self._on_command)
            ready.set()
            while not self._stop.is_set():
                for each in list(self.connections):
                    each.process_data_events(time_limit=0.05)
            self._heartbeat(self.channel, heartbeat_info, self.endpoint_id, {"heartbeat_period": 0})
            for each in self.connections:
                each.close()
        except Exception:
            self.errors.append(traceback.format_exc())
            ready.set()

    @staticmethod
    def _heartbeat(channel, info: WriteQueueInfo, endpoint_id: str, state: dict) -> None:
        report = messages.EPStatusReport(
            endpoint_id=uuid.UUID(endpoint_id), global_state=state, task_statuses={}
        )
        channel.basic_publish(body=messages.pack(report), **amqp.publish_kwargs(info))

    def _user_endpoint_channel(self, creds: AmqpCreds):
        """A channel on a new connection with the user endpoint's own account."""
        connection = amqp.connect(creds.task_queue_info.connection_url, client_name="wire-uep")
        self.connections.append(connection)
        return connection.channel()

    def _on_command(self, channel, method, props, body: bytes) -> None:
        channel.basic_ack(method.delivery_tag)
        if props.content_type != "application/json" or not isinstance(props.timestamp, int):
            self.errors.append(f"bad command properties: {props}")
            return
        command = json.loads(body)
        self.commands.append(command)
        kwargs = command["kwargs"]
        creds = AmqpCreds.from_dict(kwargs["amqp_creds"])
        uep_id = str(creds.endpoint_id)
        failure = kwargs.get("user_opts", {}).get("fail_start")
        if failure:
            state = {"error": failure, "heartbeat_period": 3}
            self._heartbeat(
                self._user_endpoint_channel(creds), creds.heartbeat_queue_info, uep_id, state
            )
            return
        if uep_id not in self.started:
            self.started[uep_id] = creds
            self._user_endpoint_channel(creds).basic_consume(
                creds.task_queue_info.queue,
                lambda *a: self._on_task(creds, *a),
                exclusive=True,
            )

    def _on_task(self, creds: AmqpCreds, channel, method, props, body: bytes) -> None:
        task = messages.unpack(body)
        headers = props.headers or {}
        assert headers["task_uuid"] == str(task.task_id)
        assert "function_uuid" in headers
        json.loads(headers["resource_specification"])
        try:
            fn, args, kwargs = serializer.unpack_task_buffer(task.task_buffer)
            data = serializer.serialize_result(
                fn(*args, **kwargs), headers.get("result_serializers")
            )
            error = None
        except Exception as e:
            data = "".join(traceback.format_exception(e))
            error = messages.ResultErrorDetails(
                code="RemoteExecutionError",
                user_message="An error occurred during the execution of this task",
            )
        result = messages.Result(task_id=task.task_id, data=data, error_details=error)
        channel.basic_publish(
            body=messages.pack(result), **amqp.publish_kwargs(creds.result_queue_info)
        )
        channel.basic_ack(method.delivery_tag)
