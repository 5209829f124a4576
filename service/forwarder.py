"""The one consumer thread: results and heartbeats from every endpoint.

A result is written to the database *before* it is forwarded to the SDK's
queue and only then acknowledged, so a crash at any point loses nothing (the
broker redelivers; a redelivered result is recognised and not sent twice).
Heartbeats update endpoint status; a status report carrying ``error`` (a user
endpoint that could not start) fails that user endpoint's pending tasks with
the error text, which reaches the submitter's ``future.result()``.

Nothing is believed because of what a body says. The routing key names the
sender (``<id>.results`` / ``<id>.heartbeats``), which the broker's topic
permissions guarantee: an account may publish only with its own id. So:

- a result counts only if it comes from the user endpoint its task was sent to;
- a heartbeat counts for the endpoint that sent it, or for a user endpoint of
  the manager that sent it (a manager reports a user endpoint that could not
  start);
- a ``user_id`` property, where present (RabbitMQ has validated it), must be
  the sender's own account.

Everything else, and anything malformed, is dropped with a log line for the
admin and counted by reason (``compute-service status``): a broken or hostile
endpoint must not stall, or write into, anybody else's results.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing as t
import uuid

import pika
import pika.exceptions
from sqlalchemy.orm import Session, sessionmaker

from service import broker_accounts, schema, store
from service.broker import declare_topology
from service.routing import Topology, error_result
from wire import amqp, messages
from wire.errors import WireError

log = logging.getLogger(__name__)
RECONNECT_DELAY_S = 2.0


@dataclasses.dataclass(frozen=True)
class Forward:
    """A message to put on an SDK result queue."""

    queue: str
    body: bytes
    high_assurance: bool = False


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One message as the broker delivered it: who it vouches sent it, and the body."""

    routing_key: str
    user_id: str | None
    body: bytes


class Refused(Exception):
    """A message the forwarder will not act on; ``reason`` is the counter's name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def sender_id(routing_key: str, kind: str) -> str:
    """The id in ``<id>.<kind>``, a canonical UUID, or :class:`Refused`."""
    party, _, suffix = routing_key.rpartition(".")
    try:
        if suffix == kind and str(uuid.UUID(party)) == party:
            return party
    except ValueError:
        pass
    raise Refused("routing_key", f"routing key {routing_key!r} does not name a sender")


def _check_user_id(topo: Topology, delivery: Delivery, kind: str, party: str) -> None:
    expected = broker_accounts.username(topo, kind, party)
    if delivery.user_id is not None and delivery.user_id != expected:
        raise Refused(
            "user_id",
            f"user_id {delivery.user_id!r} is not the sender's account {expected!r}",
        )


def _read(raw: bytes, kind: type, queue: str) -> t.Any:
    try:
        return messages.unpack_as(raw, kind)
    except WireError as e:
        raise Refused("malformed", f"unreadable message on the {queue} queue: {e}") from None


def record_result(s: Session, topo: Topology, delivery: Delivery) -> list[Forward]:
    """Store a result from the user endpoint that ran it; what to forward (nothing if repeated)."""
    sender = sender_id(delivery.routing_key, "results")
    _check_user_id(topo, delivery, broker_accounts.USER_ENDPOINT, sender)
    result = _read(delivery.body, messages.Result, "results")
    task_id = str(result.task_id)
    task = s.get(schema.Task, task_id)
    if task is None:
        raise Refused("unknown_task", f"result for unknown task {task_id} from {sender}")
    if task.user_endpoint_id != sender:
        raise Refused(
            "not_the_tasks_endpoint",
            f"user endpoint {sender} sent a result for task {task_id},"
            f" which was sent to {task.user_endpoint_id}",
        )
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
    queue = topo.sdk_queue(task.owner_id, task.task_group_id)
    return [Forward(queue, delivery.body, bool(endpoint and endpoint.high_assurance))]


def _heartbeat_subject(
    s: Session, topo: Topology, delivery: Delivery, report: t.Any
) -> schema.Endpoint | schema.UserEndpoint:
    """The endpoint a report is about, if its sender may speak for it."""
    sender = sender_id(delivery.routing_key, "heartbeats")
    subject = str(report.endpoint_id)
    manager = s.get(schema.Endpoint, sender)
    if manager is not None:
        _check_user_id(topo, delivery, broker_accounts.MANAGER, sender)
        if subject == sender:
            return manager
        uep = s.get(schema.UserEndpoint, subject)
        if uep is not None and uep.endpoint_id == sender:
            return uep
        raise Refused(
            "not_the_senders_endpoint",
            f"manager {sender} reported on {subject}, which is not one of its user endpoints",
        )
    uep = s.get(schema.UserEndpoint, sender)
    if uep is None:
        raise Refused("unknown_endpoint", f"heartbeat from unknown endpoint {sender}")
    _check_user_id(topo, delivery, broker_accounts.USER_ENDPOINT, sender)
    if subject != sender:
        raise Refused(
            "not_the_senders_endpoint",
            f"user endpoint {sender} sent a report about {subject}",
        )
    return uep


def record_heartbeat(s: Session, topo: Topology, delivery: Delivery, now: float) -> list[Forward]:
    """Update endpoint status; an error report fails the user endpoint's pending tasks."""
    report = _read(delivery.body, messages.EPStatusReport, "heartbeats")
    row = _heartbeat_subject(s, topo, delivery, report)
    state = report.global_state
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
    return _fail_pending(s, topo, row.id, text)


def _fail_pending(s: Session, topo: Topology, user_endpoint_id: str, text: str) -> list[Forward]:
    forwards = []
    for task in store.pending_tasks_of_user_endpoint(s, user_endpoint_id):
        if store.finish_task(s, task.id, status="failed", exception=text):
            queue = topo.sdk_queue(task.owner_id, task.task_group_id)
            forwards.append(Forward(queue, error_result(task.id, text)))
    return forwards


Recorder = t.Callable[[Session, Topology, Delivery], list[Forward]]


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
            channel.basic_consume(
                self.topo.results_queue, self._on_message("result", record_result)
            )
            channel.basic_consume(
                self.topo.heartbeats_queue, self._on_message("heartbeat", _heartbeat_now)
            )
            self.connected.set()
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
        finally:
            if connection.is_open:
                connection.close()

    def _on_message(self, kind: str, record: Recorder) -> t.Callable:
        def handle(channel: t.Any, method: t.Any, props: t.Any, body: bytes) -> None:
            delivery = Delivery(method.routing_key, props.user_id, body)
            try:
                with self.sessions.begin() as s:
                    forwards = record(s, self.topo, delivery)
            except Refused as e:
                forwards = []
                self._count_refusal(kind, e)
            for forward in forwards:
                headers = {"high_assurance": True} if forward.high_assurance else None
                channel.basic_publish(
                    "",
                    forward.queue,
                    forward.body,
                    pika.BasicProperties(
                        timestamp=int(time.time()), delivery_mode=2, headers=headers
                    ),
                )
            channel.basic_ack(method.delivery_tag)

        return handle

    def _count_refusal(self, kind: str, refusal: Refused) -> None:
        log.warning("dropped a %s message (%s): %s", kind, refusal.reason, refusal.detail)
        with self.sessions.begin() as s:
            store.count_dropped(s, kind, refusal.reason, refusal.detail, time.time())


def _heartbeat_now(s: Session, topo: Topology, delivery: Delivery) -> list[Forward]:
    return record_heartbeat(s, topo, delivery, time.time())
