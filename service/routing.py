"""AMQP topology and the messages the service sends, decided in pure code.

Topology (the one the official integration tests use; endpoints never declare
anything, the service does):

- direct exchange ``tasks``; per-user-endpoint durable queue ``<uep_id>.tasks``
  bound with routing key = queue name;
- topic exchange ``results`` -> durable queue ``results`` bound ``*.results``;
  endpoints publish with routing key ``<endpoint_id>.results``;
- topic exchange ``heartbeats`` -> durable queue ``heartbeats`` bound
  ``*.heartbeats``; routing key ``<endpoint_id>.heartbeats``;
- direct exchange ``commands``; per-endpoint durable queue
  ``<endpoint_id>.commands`` bound with routing key = queue name;
- the SDK's result queue ``queue_prefix + task_group_id``, declared on submit
  with ``x-expires`` so abandoned groups clean themselves up.

Every name carries an optional ``prefix`` and the vhost comes from the broker
URL, so several services (or test runs) can share one RabbitMQ.

A user endpoint is chosen for (endpoint, submitting identity, canonical JSON of
``user_endpoint_config``): its id is a uuid5 of that triple and its name
``uep.<id>``, so the same person with the same config always reaches the same
user endpoint, across service restarts.
"""

from __future__ import annotations

import dataclasses
import json
import time
import typing as t
import uuid

from wire import messages
from wire.queue_info import AmqpCreds, ReadQueueInfo, WriteQueueInfo

USER_ENDPOINT_NAMESPACE = uuid.UUID("5b0ad5f4-0e9c-4b8a-9a57-6f2b4f3c2a11")
SDK_QUEUE_EXPIRES_MS = 30 * 60 * 1000
COMMAND_TTL_MS = 170 * 1000  # endpoints refuse commands older than 180 s anyway
PERSISTENT = 2


@dataclasses.dataclass(frozen=True)
class Topology:
    """The names of every exchange and queue, for one broker URL and prefix."""

    url: str
    prefix: str = ""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def tasks_exchange(self) -> str:
        return self.name("tasks")

    @property
    def results_exchange(self) -> str:
        return self.name("results")

    @property
    def heartbeats_exchange(self) -> str:
        return self.name("heartbeats")

    @property
    def commands_exchange(self) -> str:
        return self.name("commands")

    @property
    def results_queue(self) -> str:
        return self.name("results")

    @property
    def heartbeats_queue(self) -> str:
        return self.name("heartbeats")

    @property
    def sdk_queue_prefix(self) -> str:
        return self.name("tg.")

    def sdk_queue(self, task_group_id: str) -> str:
        return self.sdk_queue_prefix + task_group_id

    def task_queue(self, user_endpoint_id: str) -> str:
        return self.name(f"{user_endpoint_id}.tasks")

    def command_queue(self, endpoint_id: str) -> str:
        return self.name(f"{endpoint_id}.commands")

    def _write_info(self, exchange: str, routing_key: str, queue: str) -> WriteQueueInfo:
        kwargs = {
            "exchange": exchange,
            "routing_key": routing_key,
            "mandatory": True,
            "properties": {"delivery_mode": PERSISTENT},
        }
        return WriteQueueInfo(self.url, queue, exchange, kwargs)

    def result_info(self, endpoint_id: str) -> WriteQueueInfo:
        return self._write_info(self.results_exchange, f"{endpoint_id}.results", self.results_queue)

    def heartbeat_info(self, endpoint_id: str) -> WriteQueueInfo:
        return self._write_info(
            self.heartbeats_exchange, f"{endpoint_id}.heartbeats", self.heartbeats_queue
        )

    def command_info(self, endpoint_id: str) -> ReadQueueInfo:
        return ReadQueueInfo(self.url, self.command_queue(endpoint_id), self.commands_exchange)

    def amqp_creds(self, user_endpoint_id: str) -> AmqpCreds:
        task_info = ReadQueueInfo(self.url, self.task_queue(user_endpoint_id), self.tasks_exchange)
        return AmqpCreds(
            endpoint_id=uuid.UUID(user_endpoint_id),
            task_queue_info=task_info,
            result_queue_info=self.result_info(user_endpoint_id),
            heartbeat_queue_info=self.heartbeat_info(user_endpoint_id),
        )

    def registration(self, endpoint_id: str) -> dict:
        """The 4.19 core endpoint's registration response."""
        return {
            "endpoint_id": endpoint_id,
            "command_queue_info": self.command_info(endpoint_id).to_dict(),
            "heartbeat_queue_info": self.heartbeat_info(endpoint_id).to_dict(),
            "result_queue_info": self.result_info(endpoint_id).to_dict(),
            "warnings": [],
        }


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def user_endpoint_id(endpoint_id: str, identity_id: str, user_opts: dict | None) -> str:
    key = f"{endpoint_id}|{identity_id}|{canonical_json(user_opts or {})}"
    return str(uuid.uuid5(USER_ENDPOINT_NAMESPACE, key))


def user_endpoint_name(uep_id: str) -> str:
    """A directory-safe name: no slash, whitespace, quote or leading dot."""
    return f"uep.{uep_id}"


def start_command(
    *,
    identities: list[dict],
    name: str,
    creds: AmqpCreds,
    user_opts: dict | None,
    user_runtime: dict | None,
) -> dict:
    """The ``cmd_start_endpoint`` body for a core endpoint (PROTOCOL §5.1)."""
    return {
        "command": "cmd_start_endpoint",
        "globus_username": identities[0]["username"],
        "globus_effective_identity": identities[0]["id"],
        "globus_identity_set": identities,
        "args": [],
        "kwargs": {
            "name": name,
            "amqp_creds": creds.to_dict(),
            "user_opts": user_opts or {},
            "user_runtime": user_runtime or {},
        },
    }


def start_command_for(topo: Topology, uep: t.Any) -> bytes:
    """The encoded start command for a stored user endpoint (fresh credentials)."""
    body = start_command(
        identities=uep.identity_set,
        name=uep.name,
        creds=topo.amqp_creds(uep.id),
        user_opts=uep.user_opts,
        user_runtime=uep.user_runtime,
    )
    return json.dumps(body).encode()


def command_properties(now: float | None = None) -> dict:
    return {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "timestamp": int(now if now is not None else time.time()),
        "delivery_mode": PERSISTENT,
        "expiration": str(COMMAND_TTL_MS),
    }


def task_message(
    *,
    task_id: str,
    function_id: str,
    function_code: str,
    payload: str,
    resource_specification: dict | None,
    result_serializers: list[str] | None,
) -> tuple[bytes, dict]:
    """A Task body and its AMQP properties (PROTOCOL §4.3)."""
    body = messages.pack(
        messages.Task(task_id=uuid.UUID(task_id), task_buffer=function_code + payload)
    )
    headers = {
        "function_uuid": function_id,
        "task_uuid": task_id,
        "resource_specification": json.dumps(resource_specification),
        "result_serializers": list(result_serializers or []),
    }
    return body, {"headers": headers, "delivery_mode": PERSISTENT}


def error_result(task_id: str, text: str, code: str = "EndpointStartFailed") -> bytes:
    """A Result that reaches the SDK's future as the exception ``text``."""
    return messages.pack(
        messages.Result(
            task_id=uuid.UUID(task_id),
            data=text,
            error_details=messages.ResultErrorDetails(code=code, user_message=text),
        )
    )
