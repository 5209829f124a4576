"""AMQP topology and the messages the service sends, decided in pure code.

Topology (the one the official integration tests use; endpoints never declare
anything, the service does):

- direct exchange ``tasks``; per-user-endpoint durable queue ``<uep_id>.tasks``
  bound with routing key = queue name;
- topic exchange ``results`` -> durable queue ``service.results`` bound
  ``*.results``; endpoints publish with routing key ``<endpoint_id>.results``;
- topic exchange ``heartbeats`` -> durable queue ``service.heartbeats`` bound
  ``*.heartbeats``; routing key ``<endpoint_id>.heartbeats``;
- direct exchange ``commands``; per-endpoint durable queue
  ``<endpoint_id>.commands`` bound with routing key = queue name;
- the SDK's result queue ``queue_prefix + task_group_id``, where the prefix
  names the submitting identity (``tg.<identity_id>.``), declared on submit
  with ``x-expires`` so abandoned groups clean themselves up.

No queue shares a name with an exchange, so a permission granted on one never
reaches the other. Every name carries an optional ``prefix`` and the vhost
comes from the broker URL, so several services (or test runs) can share one
RabbitMQ. ``url`` is the service's own (administrative) broker URL; every
queue description handed to a party carries that party's own account instead
(:mod:`service.broker_accounts`), and asks it to stamp that account as the
``user_id`` of what it publishes.

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
import urllib.parse
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
    def service_user(self) -> str:
        """The service's own broker account: the only one that may send commands."""
        return urllib.parse.unquote(urllib.parse.urlsplit(self.url).username or "")

    def party_url(self, username: str, secret: str) -> str:
        """The service's broker address with a party's own credentials (and no query)."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        user = urllib.parse.quote(username, safe="")
        netloc = f"{user}:{urllib.parse.quote(secret, safe='')}@{host}{port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

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
        return self.name("service.results")

    @property
    def heartbeats_queue(self) -> str:
        return self.name("service.heartbeats")

    def sdk_queue_prefix(self, identity_id: str) -> str:
        return self.name(f"tg.{identity_id}.")

    def sdk_queue(self, identity_id: str, task_group_id: str) -> str:
        return self.sdk_queue_prefix(identity_id) + task_group_id

    def task_queue(self, user_endpoint_id: str) -> str:
        return self.name(f"{user_endpoint_id}.tasks")

    def command_queue(self, endpoint_id: str) -> str:
        return self.name(f"{endpoint_id}.commands")

    def _write_info(
        self, url: str, user_id: str, exchange: str, routing_key: str, queue: str
    ) -> WriteQueueInfo:
        kwargs = {
            "exchange": exchange,
            "routing_key": routing_key,
            "mandatory": True,
            "properties": {"delivery_mode": PERSISTENT, "user_id": user_id},
        }
        return WriteQueueInfo(url, queue, exchange, kwargs)

    def result_info(self, endpoint_id: str, url: str, user_id: str) -> WriteQueueInfo:
        return self._write_info(
            url, user_id, self.results_exchange, f"{endpoint_id}.results", self.results_queue
        )

    def heartbeat_info(self, endpoint_id: str, url: str, user_id: str) -> WriteQueueInfo:
        return self._write_info(
            url,
            user_id,
            self.heartbeats_exchange,
            f"{endpoint_id}.heartbeats",
            self.heartbeats_queue,
        )

    def command_info(self, endpoint_id: str, url: str) -> ReadQueueInfo:
        return ReadQueueInfo(url, self.command_queue(endpoint_id), self.commands_exchange)

    def amqp_creds(self, user_endpoint_id: str, url: str, user_id: str) -> AmqpCreds:
        """A user endpoint's three queues, reached with its own account."""
        task_info = ReadQueueInfo(url, self.task_queue(user_endpoint_id), self.tasks_exchange)
        return AmqpCreds(
            endpoint_id=uuid.UUID(user_endpoint_id),
            task_queue_info=task_info,
            result_queue_info=self.result_info(user_endpoint_id, url, user_id),
            heartbeat_queue_info=self.heartbeat_info(user_endpoint_id, url, user_id),
        )

    def registration(self, endpoint_id: str, url: str, user_id: str) -> dict:
        """The 4.19 core endpoint's registration response, with the manager's own account.

        ``command_sender`` is ours: the broker account whose validated
        ``user_id`` every genuine command carries (official endpoints ignore it).
        """
        return {
            "endpoint_id": endpoint_id,
            "command_queue_info": self.command_info(endpoint_id, url).to_dict(),
            "heartbeat_queue_info": self.heartbeat_info(endpoint_id, url, user_id).to_dict(),
            "result_queue_info": self.result_info(endpoint_id, url, user_id).to_dict(),
            "command_sender": self.service_user,
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


def start_command_for(uep: t.Any, creds: AmqpCreds) -> bytes:
    """The encoded start command for a stored user endpoint and its current credentials."""
    body = start_command(
        identities=uep.identity_set,
        name=uep.name,
        creds=creds,
        user_opts=uep.user_opts,
        user_runtime=uep.user_runtime,
    )
    return json.dumps(body).encode()


def command_properties(sender: str, now: float | None = None) -> dict:
    """A command's AMQP properties; ``user_id`` is validated by RabbitMQ against ``sender``."""
    return {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "timestamp": int(now if now is not None else time.time()),
        "delivery_mode": PERSISTENT,
        "expiration": str(COMMAND_TTL_MS),
        "user_id": sender,
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
