"""Connecting to RabbitMQ the same way everywhere, without leaking passwords.

Broker URLs carry credentials (``amqp://user:secret@host``). Every message this
module produces shows them as ``amqp://user:***@host`` (:mod:`wire.redaction`).
"""

from __future__ import annotations

import typing as t

import pika
import pika.exceptions

from wire.errors import QueueInfoError, WireError
from wire.queue_info import WriteQueueInfo, check_connection_url, rewrite_port
from wire.redaction import redact

DEFAULT_HEARTBEAT_S = 60
DEFAULT_BLOCKED_TIMEOUT_S = 30


class AmqpConnectionError(WireError):
    """The broker could not be reached or refused us (password redacted)."""


def connection_parameters(
    url: str,
    *,
    port: int | None = None,
    heartbeat: int | None = DEFAULT_HEARTBEAT_S,
    blocked_connection_timeout: float | None = DEFAULT_BLOCKED_TIMEOUT_S,
    connection_attempts: int | None = None,
    client_name: str | None = None,
) -> pika.URLParameters:
    """pika parameters for ``url`` with the port rewritten and heartbeats set.

    Query parameters in the URL (``?heartbeat=30``) win over the defaults here,
    since they are the service's explicit choice.
    """
    check_connection_url(url, "connection_url")
    url = rewrite_port(url, port)
    try:
        params = pika.URLParameters(url)
    except Exception as e:
        raise QueueInfoError(f"invalid broker URL {redact(url)}: {redact(str(e))}") from None
    query = url.partition("?")[2]
    if heartbeat is not None and "heartbeat" not in query:
        params.heartbeat = heartbeat
    if blocked_connection_timeout is not None and "blocked_connection_timeout" not in query:
        params.blocked_connection_timeout = blocked_connection_timeout
    if connection_attempts is not None:
        params.connection_attempts = connection_attempts
    if client_name:
        params.client_properties = {"connection_name": client_name}
    return params


def connect(url: str, **kwargs: t.Any) -> pika.BlockingConnection:
    """A blocking connection; failures raise :class:`AmqpConnectionError`."""
    params = connection_parameters(url, **kwargs)
    try:
        return pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as e:
        detail = redact(repr(e)) if str(e) == "" else redact(str(e))
        raise AmqpConnectionError(
            f"cannot connect to the broker at {redact(url)}: {type(e).__name__} {detail}"
        ) from None


def publish_kwargs(info: WriteQueueInfo, **overrides: t.Any) -> dict:
    """The ``basic_publish`` keyword arguments of ``info``, properties made real."""
    kwargs = dict(info.queue_publish_kwargs)
    kwargs.setdefault("exchange", info.exchange)
    kwargs.setdefault("routing_key", info.queue)
    properties = dict(kwargs.pop("properties", {}) or {})
    properties.update(overrides.pop("properties", {}))
    kwargs.update(overrides)
    kwargs["properties"] = pika.BasicProperties(**properties)
    return kwargs
