"""The one consumer thread: results and heartbeats from every endpoint.

A result is written to the database *before* it is forwarded to the SDK's
queue and only then acknowledged, so a crash at any point loses nothing (the
broker redelivers; a redelivered result is recognised and not sent twice).
Heartbeats update endpoint status; a status report carrying ``error`` (a user
endpoint that could not start) fails that user endpoint's pending tasks with
the error text, which reaches the submitter's ``future.result()``.

Malformed messages are logged with details for the admin and dropped: a
broken endpoint must not stall everybody else's results.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing as t

import pika
import pika.exceptions
from sqlalchemy.orm import Session, sessionmaker

from service import schema, store
from service.broker import declare_topology
from service.routing import Topology, error_result
from wire import amqp, messages
from wire.errors import WireError

log = logging.getLogger(__name__)
RECONNECT_DELAY_S = 2.0


@dataclasses.dataclass(frozen=True)
class Forward:
    """A message to put on an SDK result queue."""

    task_group_id: str
    body: bytes
    high_assurance: bool = False


def _read(raw: bytes, kind: type, queue: str) -> t.Any:
    """The message, or None (logged) if it is malformed or not what ``queue`` carries."""
    try:
        return messages.unpack_as(raw, kind)
    except WireError as e:
        log.warning("dropping a message from the %s queue: %s", queue, e)
        return None


def record_result(s: Session, raw: bytes) -> list[Forward]:
    """Store a result message; returns what to forward (nothing if unknown or repeated)."""
    result = _read(raw, messages.Result, "results")
    if result is None:
        return []
    task_id = str(result.task_id)
    task = s.get(schema.Task, task_id)
    if task is None:
        log.warning("dropping result for unknown task %s", task_id)
        return []
    if result.is_error:
        done = store.finish_task(
            s, task_id, status="failed", exception=result.data, details=result.details
        )
    else:
        done = store.finish_task(
            s, task_id, status="success", result=result.data, details=result.details
        )
    if not done:
        log.info("result for task %s was already recorded; not forwarding it again", task_id)
        return []
    endpoint = s.get(schema.Endpoint, task.endpoint_id)
    return [Forward(task.task_group_id, raw, bool(endpoint and endpoint.high_assurance))]


def record_heartbeat(s: Session, raw: bytes, now: float) -> list[Forward]:
    """Update endpoint status; an error report fails the user endpoint's pending tasks."""
    report = _read(raw, messages.EPStatusReport, "heartbeats")
    if report is None:
        return []
    endpoint_id = str(report.endpoint_id)
    state = report.global_state
    row: schema.Endpoint | schema.UserEndpoint | None = s.get(schema.Endpoint, endpoint_id)
    if row is None:
        row = s.get(schema.UserEndpoint, endpoint_id)
    if row is None:
        log.debug("heartbeat from unknown endpoint %s ignored", endpoint_id)
        return []
    row.last_heartbeat = now
    period = state.get("heartbeat_period")
    row.heartbeat_period = float(period) if isinstance(period, int | float) else None
    row.last_state = state
    error = state.get("error")
    if not isinstance(row, schema.UserEndpoint) or not error:
        return []
    text = str(error)
    row.last_error = text
    log.warning("user endpoint %s (%s) reported an error: %s", row.id, row.name, text)
    return _fail_pending(s, row.id, text)


def _fail_pending(s: Session, user_endpoint_id: str, text: str) -> list[Forward]:
    forwards = []
    for task in store.pending_tasks_of_user_endpoint(s, user_endpoint_id):
        if store.finish_task(s, task.id, status="failed", exception=text):
            forwards.append(Forward(task.task_group_id, error_result(task.id, text)))
    return forwards


class Forwarder:
    """Consumes ``results`` and ``heartbeats`` on its own thread and connection."""

    def __init__(self, topo: Topology, sessions: sessionmaker[Session]):
        self.topo = topo
        self.sessions = sessions
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consume()
            except (pika.exceptions.AMQPError, amqp.AmqpConnectionError) as e:
                log.warning("result/heartbeat consumer lost the broker: %s", amqp.redact(repr(e)))
            except Exception:
                log.exception("result/heartbeat consumer failed; restarting it")
            self.connected.clear()
            self._stop.wait(RECONNECT_DELAY_S)

    def _consume(self) -> None:
        connection = amqp.connect(self.topo.url, client_name="compute-service-forwarder")
        try:
            channel = connection.channel()
            declare_topology(channel, self.topo)
            channel.basic_qos(prefetch_count=100)
            channel.basic_consume(self.topo.results_queue, self._on_message(record_result))
            channel.basic_consume(self.topo.heartbeats_queue, self._on_message(_heartbeat_now))
            self.connected.set()
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
        finally:
            if connection.is_open:
                connection.close()

    def _on_message(self, record: t.Callable[[Session, bytes], list[Forward]]) -> t.Callable:
        def handle(channel: t.Any, method: t.Any, _props: t.Any, body: bytes) -> None:
            with self.sessions.begin() as s:
                forwards = record(s, body)
            for forward in forwards:
                headers = {"high_assurance": True} if forward.high_assurance else None
                channel.basic_publish(
                    "",
                    self.topo.sdk_queue(forward.task_group_id),
                    forward.body,
                    pika.BasicProperties(
                        timestamp=int(time.time()), delivery_mode=2, headers=headers
                    ),
                )
            channel.basic_ack(method.delivery_tag)

        return handle


def _heartbeat_now(s: Session, raw: bytes) -> list[Forward]:
    return record_heartbeat(s, raw, time.time())
