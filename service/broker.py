"""Publishing to RabbitMQ from request handlers.

pika's BlockingConnection is not thread-safe and FastAPI runs handlers on a
thread pool, so one connection is shared behind a lock. A dropped connection is
reopened once per call; if that fails too the caller gets
:class:`BrokerUnavailable` (a 503 for the submitter, a log line for the admin).
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

import pika
import pika.exceptions

from service.routing import SDK_QUEUE_EXPIRES_MS, Topology
from wire import amqp

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """RabbitMQ could not be reached (message has no password)."""


def declare_topology(channel: t.Any, topo: Topology) -> None:
    """The shared exchanges and the service's two consumer queues."""
    channel.exchange_declare(topo.tasks_exchange, "direct", durable=True)
    channel.exchange_declare(topo.commands_exchange, "direct", durable=True)
    for exchange, queue, key in (
        (topo.results_exchange, topo.results_queue, "*.results"),
        (topo.heartbeats_exchange, topo.heartbeats_queue, "*.heartbeats"),
    ):
        channel.exchange_declare(exchange, "topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key=key)


def queue_frames(channel: t.Any, exchange: str, key: str, body: bytes, properties: t.Any) -> None:
    """Publish on a transactional channel without writing to the socket yet.

    pika's ``BlockingChannel.basic_publish`` flushes the socket after every
    message: a submit of 128 tasks made 128 rounds of poll and send, each letting
    go of the GIL and waiting to win it back from the forwarder's thread. On a
    transactional channel nothing counts before ``tx.commit``, whose flush sends
    the frames queued here; if the connection fails first, the commit raises and
    the outbox still holds every task. The frames go through the blocking
    channel's underlying channel (``_impl``), which every pika 1.x has; the
    pin in pyproject.toml keeps us on 1.x, and the broker tests fail if it goes.
    """
    channel._impl.basic_publish(exchange, key, body, properties)


class Publisher:
    """Declares queues and publishes messages for the request handlers."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: t.Any = None

    def _open(self) -> t.Any:
        if self._channel is None or not self._channel.is_open:
            self.close_quietly()
            self._connection = amqp.connect(self.topo.url, client_name="compute-service")
            self._channel = self._connection.channel()
            self._channel.tx_select()
            declare_topology(self._channel, self.topo)
        return self._channel

    def _run(self, action: t.Callable[[t.Any], None]) -> None:
        """Run ``action`` on the channel and commit what it published.

        The channel is transactional: ``tx.commit`` returns once the broker holds
        every message of the call, one round trip for a whole submission where
        publisher confirms would wait once per task.
        """
        with self._lock:
            for attempt in (1, 2):
                try:
                    channel = self._open()
                    action(channel)
                    channel.tx_commit()
                    return
                except (pika.exceptions.AMQPError, amqp.AmqpConnectionError) as e:
                    log.warning(
                        "broker call failed (attempt %d): %s", attempt, amqp.redact(repr(e))
                    )
                    self.close_quietly()
            raise BrokerUnavailable("the message broker is unavailable; try again later")

    def close_quietly(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception as e:
                log.debug("closing broker connection: %r", e)

    def ensure_topology(self) -> None:
        self._run(lambda ch: None)

    def declare_command_queue(self, endpoint_id: str) -> None:
        queue = self.topo.command_queue(endpoint_id)

        def declare(ch: t.Any) -> None:
            ch.queue_declare(queue, durable=True)
            ch.queue_bind(queue, self.topo.commands_exchange, routing_key=queue)

        self._run(declare)

    def send_commands(self, endpoint_id: str, commands: list[bytes], properties: dict) -> None:
        """Queue start commands for a (re)registering endpoint."""
        queue = self.topo.command_queue(endpoint_id)

        def send(ch: t.Any) -> None:
            for command in commands:
                ch.basic_publish(
                    self.topo.commands_exchange, queue, command, pika.BasicProperties(**properties)
                )

        self._run(send)

    def submit(
        self,
        *,
        endpoint_id: str,
        user_endpoint_id: str,
        command: bytes,
        command_properties: dict,
        sdk_queue: str | None,
        tasks: list[tuple[bytes, dict]],
    ) -> None:
        """Declare the queues a submission needs, then send the start command and tasks."""
        task_queue = self.topo.task_queue(user_endpoint_id)
        command_queue = self.topo.command_queue(endpoint_id)

        def send(ch: t.Any) -> None:
            ch.queue_declare(task_queue, durable=True)
            ch.queue_bind(task_queue, self.topo.tasks_exchange, routing_key=task_queue)
            if sdk_queue:
                ch.queue_declare(
                    sdk_queue, durable=True, arguments={"x-expires": SDK_QUEUE_EXPIRES_MS}
                )
            ch.queue_declare(command_queue, durable=True)
            ch.queue_bind(command_queue, self.topo.commands_exchange, routing_key=command_queue)
            ch.basic_publish(
                self.topo.commands_exchange,
                command_queue,
                command,
                pika.BasicProperties(**command_properties),
            )
            for body, properties in tasks:
                queue_frames(
                    ch,
                    self.topo.tasks_exchange,
                    task_queue,
                    body,
                    pika.BasicProperties(**properties),
                )

        self._run(send)

    def send_results(self, results: list[tuple[str, bytes]]) -> None:
        """Put error results the service made itself on SDK result queues."""

        def send(ch: t.Any) -> None:
            for queue, body in results:
                properties = pika.BasicProperties(timestamp=int(time.time()), delivery_mode=2)
                ch.basic_publish("", queue, body, properties)

        if results:
            self._run(send)

    def purge(self, queue: str) -> None:
        """Empty a queue; one that does not exist is already empty."""

        def purge(ch: t.Any) -> None:
            try:
                ch.queue_purge(queue)
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code != 404:
                    raise

        self._run(purge)

    def delete_queues(self, queues: list[str]) -> None:
        """Remove a deleted endpoint's command and task queues (and what they held)."""

        def delete(ch: t.Any) -> None:
            for queue in queues:
                ch.queue_delete(queue)

        self._run(delete)

    def close(self) -> None:
        with self._lock:
            self.close_quietly()
