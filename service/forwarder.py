"""The one consumer thread: results and heartbeats from every endpoint.

Each message is recorded (:mod:`service.recording`) in one database
transaction, committed before anything is forwarded; then the results are
forwarded to the SDK's queues on a channel with publisher confirms, and only
then is the message acknowledged. A crash or a dropped connection at any point
leaves the message unacknowledged, the broker redelivers it, and the redelivery
forwards again what its first delivery recorded. Nothing is lost; a result
reaches the SDK twice only if the forwarder dies between a confirmed forward
and its ack (the SDK completes each future once).

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

import logging
import threading
import time
import typing as t

import pika
import pika.exceptions
from sqlalchemy import exc as db_errors
from sqlalchemy.orm import Session, sessionmaker

from service import store
from service.broker import declare_topology
from service.recording import (
    Delivery,
    Forward,
    Recorded,
    Refused,
    fail_pending,
    fail_unstorable,
    record_heartbeat,
    record_result,
)
from service.routing import Topology
from wire import amqp

log = logging.getLogger(__name__)
RECONNECT_DELAY_S = 2.0
PREFETCH = 100
# The database could not be asked: try the message again later.
TRANSIENT = (db_errors.OperationalError, db_errors.InterfaceError, db_errors.TimeoutError)

Recorder = t.Callable[[Session, Topology, Delivery], Recorded]


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
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=PREFETCH)
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
            delivery = Delivery(method.routing_key, props.user_id, body, bool(method.redelivered))
            recorded = self._record(kind, record, delivery)
            if recorded.purge is not None:
                recorded.forwards += self._purge(channel, recorded.purge)
            for forward in recorded.forwards:
                self.forward(channel, forward)
            channel.basic_ack(method.delivery_tag)

        return handle

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
        """Put a result on an SDK queue; returns once the broker has confirmed it."""
        headers = {"high_assurance": True} if forward.high_assurance else None
        properties = pika.BasicProperties(
            timestamp=int(time.time()), delivery_mode=2, headers=headers
        )
        channel.basic_publish("", forward.queue, forward.body, properties)

    def _count(self, kind: str, reason: str, detail: str) -> None:
        log.warning("dropped a %s message (%s): %s", kind, reason, detail)
        try:
            with self.sessions.begin() as s:
                store.count_dropped(s, kind, reason, detail, time.time())
        except TRANSIENT:
            raise
        except Exception:
            log.exception("could not count a dropped %s message", kind)
