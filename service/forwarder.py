"""The one consumer thread: results and heartbeats from every endpoint.

Messages are settled in batches: whatever one pass of the connection's event
loop delivered (at most ``PREFETCH``) is recorded (:mod:`service.recording`)
in one database transaction, committed before anything is forwarded; then the
batch's results are forwarded to the SDK's queues in one broker transaction
(``tx.commit`` returns once the broker holds them all), and only then is the
batch acknowledged, with one ``multiple`` ack. One commit and two round trips
per batch instead of per message is what lets the service keep up with
thousands of results a second. A batch that cannot be recorded whole (one
refused or poisonous message in it) is recorded again one message per
transaction, so one bad message costs only its own place.

A crash or a dropped connection at any point leaves the batch unacknowledged,
the broker redelivers it, and the redelivery forwards again what its first
delivery recorded. Nothing is lost; a result reaches the SDK twice only if the
forwarder dies between a batch's committed forwards and its ack, so up to one
batch of results (the SDK completes each future once).

What the forwarder does with a message it cannot use:

- refused by the rules of :mod:`service.recording` (wrong sender, malformed):
  dropped, with a log line for the admin, counted by reason
  (``compute-service status``);
- the database is unreachable or busy: nothing is acknowledged, the forwarder
  reconnects and the broker redelivers, until the database is back;
- anything else (a *poison* message): logged with its traceback, counted, its
  task failed with an explicit error to its submitter, and acknowledged: one
  bad message must never stop everyone's results and heartbeats.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing as t

import pika
import pika.exceptions
from sqlalchemy import exc as db_errors
from sqlalchemy.orm import Session, sessionmaker

from service import store
from service.broker import declare_topology, queue_frames
from service.recording import (
    Delivery,
    Forward,
    Recorded,
    Refused,
    fail_pending,
    fail_unstorable,
    record_heartbeat,
    record_result,
    record_results,
)
from service.routing import Topology
from wire import amqp

log = logging.getLogger(__name__)
RECONNECT_DELAY_S = 2.0
PREFETCH = 500
# The database could not be asked: try the message again later.
TRANSIENT = (db_errors.OperationalError, db_errors.InterfaceError, db_errors.TimeoutError)

Recorder = t.Callable[[Session, Topology, Delivery], Recorded]


@dataclasses.dataclass(frozen=True)
class Pending:
    """A delivery waiting for its batch to be settled."""

    kind: str
    record: Recorder
    tag: int
    delivery: Delivery


def _heartbeat_now(s: Session, topo: Topology, delivery: Delivery) -> Recorded:
    return record_heartbeat(s, topo, delivery, time.time())


class Forwarder:
    """Consumes ``results`` and ``heartbeats`` on its own thread and connection."""

    def __init__(self, topo: Topology, sessions: sessionmaker[Session]):
        self.topo = topo
        self.sessions = sessions
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self.connected = threading.Event()
        self._batch: list[Pending] = []

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
            except TRANSIENT as e:
                log.warning("result/heartbeat consumer lost the database: %s", e)
            except Exception:
                log.exception("result/heartbeat consumer failed; restarting it")
            self.connected.clear()
            self._stop.wait(RECONNECT_DELAY_S)

    def _consume(self) -> None:
        connection = amqp.connect(self.topo.url, client_name="compute-service-forwarder")
        try:
            channel = connection.channel()
            declare_topology(channel, self.topo)
            channel.basic_qos(prefetch_count=PREFETCH)
            outbound = connection.channel()
            outbound.tx_select()
            self._batch = []
            channel.basic_consume(self.topo.results_queue, self._collect("result", record_result))
            channel.basic_consume(
                self.topo.heartbeats_queue, self._collect("heartbeat", _heartbeat_now)
            )
            self.connected.set()
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
                if self._batch:
                    self._settle(channel, outbound)
        finally:
            if connection.is_open:
                connection.close()

    def _collect(self, kind: str, record: Recorder) -> t.Callable:
        """The consumer callback: only queue the delivery; :meth:`_settle` acts on it."""

        def handle(channel: t.Any, method: t.Any, props: t.Any, body: bytes) -> None:
            delivery = Delivery(method.routing_key, props.user_id, body, bool(method.redelivered))
            self._batch.append(Pending(kind, record, method.delivery_tag, delivery))

        return handle

    def _settle(self, channel: t.Any, outbound: t.Any) -> None:
        """Record the batch, forward its results, then acknowledge it, in that order."""
        batch, self._batch = self._batch, []
        forwards: list[Forward] = []
        for recorded in self._record_batch(batch):
            if recorded.purge is not None:
                recorded.forwards += self._purge(channel, recorded.purge)
            forwards += recorded.forwards
        for forward in forwards:
            self.forward(outbound, forward)
        if forwards:
            outbound.tx_commit()
        channel.basic_ack(batch[-1].tag, multiple=True)

    def _record_batch(self, batch: list[Pending]) -> list[Recorded]:
        """All in one transaction; if any message fails it, each in its own instead."""
        if len(batch) > 1:
            try:
                with self.sessions.begin() as s:
                    return self._record_together(s, batch)
            except TRANSIENT:
                raise
            except Exception as e:
                log.info("a batch of %d messages is recorded one by one: %r", len(batch), e)
        return [self._record(p.kind, p.record, p.delivery) for p in batch]

    def _record(self, kind: str, record: Recorder, delivery: Delivery) -> Recorded:
        try:
            with self.sessions.begin() as s:
                return record(s, self.topo, delivery)
        except Refused as e:
            self._count(kind, e.reason, e.detail)
        except TRANSIENT:
            raise
        except Exception as e:
            problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.exception("a %s message could not be stored (%s)", kind, problem)
            self._count(kind, "unstorable", problem)
            if kind == "result":
                return self._fail_unstorable(delivery, problem)
        return Recorded()

    def _record_together(self, s: Session, batch: list[Pending]) -> list[Recorded]:
        """The results in one go, the heartbeats one by one, in one transaction."""
        results = [p.delivery for p in batch if p.kind == "result"]
        recorded = iter(record_results(s, self.topo, results))
        return [
            next(recorded) if p.kind == "result" else p.record(s, self.topo, p.delivery)
            for p in batch
        ]

    def _fail_unstorable(self, delivery: Delivery, problem: str) -> Recorded:
        try:
            with self.sessions.begin() as s:
                return fail_unstorable(s, self.topo, delivery, problem)
        except Refused:
            return Recorded()
        except TRANSIENT:
            raise
        except Exception:
            log.exception("could not even fail the task of an unstorable result")
            return Recorded()

    def _purge(self, channel: t.Any, purge: t.Any) -> list[Forward]:
        """Empty a failed user endpoint's queue; fail what was submitted before the purge.

        On a channel of its own: a queue that does not exist closes the channel.
        """
        side = channel.connection.channel()
        try:
            side.queue_purge(purge.queue)
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code != 404:  # no queue: nothing to purge
                raise
        finally:
            if side.is_open:
                side.close()
        with self.sessions.begin() as s:
            return fail_pending(s, self.topo, purge.user_endpoint_id, purge.text, purge.before)

    @staticmethod
    def forward(channel: t.Any, forward: Forward) -> None:
        """Queue a result for an SDK queue; the broker holds it once the channel's
        transaction commits, whose flush sends every frame the batch queued."""
        headers = {"high_assurance": True} if forward.high_assurance else None
        properties = pika.BasicProperties(
            timestamp=int(time.time()), delivery_mode=2, headers=headers
        )
        queue_frames(channel, "", forward.queue, forward.body, properties)

    def _count(self, kind: str, reason: str, detail: str) -> None:
        log.warning("dropped a %s message (%s): %s", kind, reason, detail)
        try:
            with self.sessions.begin() as s:
                store.count_dropped(s, kind, reason, detail, time.time())
        except TRANSIENT:
            raise
        except Exception:
            log.exception("could not count a dropped %s message", kind)
