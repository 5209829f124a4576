"""One AMQP session of a user endpoint: a consuming channel and a confirming
publish channel on one pika SelectConnection, driven by its ioloop.

Everything here runs on the endpoint's main thread. A session owns its pending
deliveries and its publish bookkeeping (delivery tags, confirms), so when the
connection drops they are dropped with it: the broker redelivers what we never
acked, and the store still holds every result we never saw confirmed.
"""

from __future__ import annotations

import collections
import json
import logging
import time
import typing as t
import uuid

import pika
import pika.exceptions
import pika.spec

from uep.execution import error_result
from uep.intake import Verdict, judge
from wire.amqp import connection_parameters, publish_kwargs
from wire.messages import EPStatusReport, Result, pack, unpack_as
from wire.redaction import redact

if t.TYPE_CHECKING:
    from uep.engines.base import Engine
    from uep.store import Store
    from uep.window import Window
    from wire.queue_info import AmqpCreds

log = logging.getLogger(__name__)

CONFIRM_WAIT_S = 5.0
REFUSALS = (
    pika.exceptions.ProbableAuthenticationError,
    pika.exceptions.AuthenticationError,
    pika.exceptions.ProbableAccessDeniedError,
)
SHUTTING_DOWN = "endpoint stopped before the task finished; task state unknown"


class Settings(t.NamedTuple):
    heartbeat_period: float
    idle_soft: int
    idle_hard: int
    amqp_port: int | None
    allowed_functions: frozenset[str] | None
    stop_grace_s: float
    rerun_unfinished: bool


class Owner(t.Protocol):
    """What a session needs of the user endpoint that runs it (:class:`uep.endpoint.UserEndpoint`)."""

    endpoint_id: str
    window: Window
    settings: Settings
    store: Store
    engine: Engine
    forwarded: int
    received: int
    stop_reason: str | None
    credentials: t.Callable[[], AmqpCreds]
    audit: t.Callable[..., None]

    @property
    def results_unstored(self) -> bool: ...

    def take_results(self) -> list[tuple[str, bytes]]: ...

    def idle_check(self) -> str | None: ...

    def request_stop(self, reason: str) -> None: ...

    def note_stop(self, reason: str) -> None: ...

    def heartbeat_state(self, active: bool) -> dict: ...

    def parent_gone(self) -> bool: ...

    def answer_unfinished(self, why: str) -> None: ...

    def stranded(self, task_id: str | None) -> bool: ...

    def submit(self, verdict: Verdict, body: bytes) -> bytes | None: ...


class Session:
    """One AMQP connection: a consuming channel and a confirming publish channel."""

    def __init__(self, endpoint: Owner) -> None:
        self.ep = endpoint
        self.opened = False
        self.stopping = False
        self.conn: pika.SelectConnection | None = None
        self.consume_ch = None
        self.publish_ch = None
        self.consumer_tag: str | None = None
        self.prefetch = 0
        self.task_bytes = 0  # the bodies of every task delivered in this session
        self.tasks = 0
        self.pending: collections.deque = collections.deque()
        self.next_tag = 0
        self.in_flight: dict[int, str | None] = {}
        self.publishing: set[str] = set()
        self.returned: set[str] = set()
        self.resend_due = False
        self.finishing = False
        self.refused = False  # the broker answered, and refused our credentials

    # -- plumbing

    def call_threadsafe(self, fn: t.Callable[[], None]) -> bool:
        """Run ``fn`` on the session's ioloop; False if there is no loop to run it."""
        conn = self.conn
        if conn is None:
            return False
        try:
            conn.ioloop.add_callback_threadsafe(fn)
        except Exception:
            log.debug("ioloop gone; dropped a wake-up", exc_info=True)
            return False
        return True

    def run(self) -> bool:
        creds = self.ep.credentials()
        self.creds = creds
        urls = {creds.result_queue_info.connection_url, creds.heartbeat_queue_info.connection_url}
        if urls != {creds.task_queue_info.connection_url}:
            log.warning("results and heartbeats go through the task queue's broker connection")
        port = self.ep.settings.amqp_port
        params = connection_parameters(
            creds.task_queue_info.connection_url,
            port=port,
            client_name=f"uep {self.ep.endpoint_id}",
        )
        self.conn = pika.SelectConnection(
            params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
        )
        try:
            self.conn.ioloop.start()
        except Exception:
            self._abandon()
            raise
        finally:
            self.conn = None
        return self.opened

    def _abandon(self) -> None:
        """After a crash in a callback: close the connection so the broker drops
        our exclusive consumer and redelivers what we never acked."""
        self.stopping = True
        try:
            if self.conn.is_open:
                self.conn.close()
                self.conn.ioloop.start()
        except Exception:
            log.debug("could not close the broken session cleanly", exc_info=True)

    def _on_open_error(self, _conn, error) -> None:
        log.warning("cannot connect to the broker: %s", redact(str(error) or repr(error)))
        self.refused = isinstance(error, REFUSALS)
        self.conn.ioloop.stop()

    def _on_closed(self, _conn, reason) -> None:
        if not self.stopping:
            log.warning("broker connection closed: %s", redact(str(reason)))
        self.conn.ioloop.stop()

    def _on_open(self, conn) -> None:
        conn.channel(on_open_callback=self._on_publish_channel)

    def _on_publish_channel(self, ch) -> None:
        self.publish_ch = ch
        ch.add_on_close_callback(self._on_channel_closed)
        ch.add_on_return_callback(self._on_return)
        ch.confirm_delivery(self._on_confirm, callback=lambda _f: self._publish_ready())

    def _publish_ready(self) -> None:
        self.conn.channel(on_open_callback=self._on_consume_channel)

    def _on_consume_channel(self, ch) -> None:
        self.consume_ch = ch
        ch.add_on_close_callback(self._on_channel_closed)
        self.prefetch = self.ep.window.floor
        ch.basic_qos(prefetch_count=self.prefetch, callback=lambda _f: self._consume())

    def _consume(self, callback: t.Callable[[], None] | None = None) -> None:
        self.consumer_tag = self.consume_ch.basic_consume(
            self.creds.task_queue_info.queue,
            self._on_message,
            exclusive=True,
            callback=lambda _frame: (callback or self._consuming)(),
        )

    def _consuming(self) -> None:
        """The broker accepted us as the queue's one consumer: the session is up."""
        self.opened = True
        log.info(
            "session open; consuming %s (prefetch %d; the engine holds %d to %d tasks)",
            self.creds.task_queue_info.queue,
            self.prefetch,
            self.ep.window.floor,
            self.ep.window.ceiling,
        )
        self._heartbeat()
        self.ep.take_results()  # finished while no session could be woken
        self._resend_stored()
        self._watch()
        if self.ep.stop_reason is not None:
            self.begin_stop()

    def _on_channel_closed(self, ch, reason) -> None:
        if self.stopping and self.conn.is_closing:
            return
        log.warning("channel closed: %s", redact(str(reason)))
        if self.conn.is_open:
            self.conn.close()

    # -- consuming

    def _on_message(self, ch, method, properties, body) -> None:
        if self.stopping:
            return
        self.pending.append((method.delivery_tag, properties.headers or {}, body))
        self.task_bytes += len(body)
        self.tasks += 1
        if len(self.pending) == 1:
            self.conn.ioloop.call_later(0, self.pump)

    def pump(self) -> None:
        """Move pending deliveries into the journal and the engine, then ack them.

        Only while the consuming channel is open. pika ends a connection the
        broker closed from an ioloop callback, and the timers due in that same
        pass still run after it (this pump re-arms itself while deliveries wait
        for room). A delivery of a closed channel can no longer be acked: the
        broker gives it to the next session, so it must not be journaled here,
        or that session would skip it as already handled.
        """
        if self.stopping or not self.pending:
            return
        if self.consume_ch is None or not self.consume_ch.is_open:
            self.pending.clear()
            return
        ep, now = self.ep, time.monotonic()
        if self.prefetch < ep.window.ceiling and ep.window.sends_ahead(
            now, self.task_bytes / max(1, self.tasks)
        ):
            self._send_ahead()
        taken = self._take(ep.window.size(now) - ep.engine.outstanding)
        if not taken:
            return
        to_run, answers = self._sort(taken)
        journal = [(v.task_id, b, json.dumps(_jsonable(h))) for v, b, h in to_run]
        ep.store.accept(journal, answers)
        ep.received += len(to_run) + len(answers)
        answers += self._start(to_run)
        self.consume_ch.basic_ack(taken[-1][0], multiple=True)
        for task_id, packed in answers:
            self._publish_result(task_id, packed)
        if self.pending:
            self.conn.ioloop.call_later(0, self.pump)

    def _send_ahead(self) -> None:
        """Let the broker send up to the window's ceiling: set the prefetch of new
        consumers, cancel ours and consume again. What the old consumer holds stays
        ours to ack; pika rejects (requeues) what reaches it after the cancel."""
        ch, old = self.consume_ch, self.consumer_tag
        self.prefetch = self.ep.window.ceiling
        log.info("short, small tasks: the broker may now send %d ahead", self.prefetch)

        def consume_again(_frame) -> None:
            if not self.stopping and ch.is_open:
                self._consume(callback=lambda: None)

        ch.basic_qos(
            prefetch_count=self.prefetch,
            callback=lambda _f: ch.basic_cancel(old, callback=consume_again),
        )

    def _take(self, room: int) -> list:
        taken = []
        while self.pending and len(taken) < room:
            taken.append(self.pending.popleft())
        return taken

    def _sort(self, taken: list) -> tuple[list, list]:
        """Deliveries to run, and immediate answers (rejections); duplicates are skipped.

        A task this run journaled but never started (an earlier pump failed
        between the two) is run when the broker delivers it again, not skipped.
        """
        ep = self.ep
        to_run, answers, seen = [], [], set()
        for _tag, headers, body in taken:
            verdict = judge(headers, body, ep.settings.allowed_functions)
            task_id = verdict.task_id
            if verdict.action == "drop":
                log.error("dropping an unattributable task message: %s", verdict.message)
            elif task_id in seen or (ep.store.known(task_id) and not self._stranded(verdict)):
                log.warning("task %s delivered again; already handled", task_id)
            elif verdict.action == "reject":
                answers.append((task_id, self._reject(verdict)))
            else:
                to_run.append((verdict, body, headers))
            if task_id:
                seen.add(task_id)
        return to_run, answers

    def _stranded(self, verdict) -> bool:
        if verdict.action != "run" or not self.ep.stranded(verdict.task_id):
            return False
        log.warning("task %s was journaled but never started; starting it", verdict.task_id)
        return True

    def _reject(self, verdict) -> bytes:
        ep = self.ep
        log.warning("task %s rejected: %s", verdict.task_id, verdict.message)
        if verdict.code == "FUNCTION_NOT_ALLOWED":
            ep.audit(
                verdict.function_id, verdict.task_id, "FAILED", "Function not permitted on endpoint"
            )
        return error_result(
            verdict.task_id, verdict.message, verdict.code, verdict.message, ep.endpoint_id
        )

    def _start(self, to_run: list) -> list[tuple[str, bytes]]:
        """Hand journaled tasks to the engine; the answers of those it refused, stored."""
        ep = self.ep
        refused = []
        for verdict, body, _headers in to_run:
            ep.audit(verdict.function_id, verdict.task_id, "RECEIVED")
            answer = ep.submit(verdict, body)
            if answer is not None:
                refused.append((verdict.task_id, answer))
        if refused:
            ep.store.add_results(refused)
        return refused

    # -- publishing

    def collect_results(self) -> None:
        for task_id, packed in self.ep.take_results():
            self._publish_result(task_id, packed)
        self.pump()
        self._maybe_finish_stop()

    def _publish(self, info, body: bytes, mark: str | None) -> bool:
        ch = self.publish_ch
        if ch is None or not ch.is_open:
            return False
        ch.basic_publish(body=body, **publish_kwargs(info))
        self.next_tag += 1
        self.in_flight[self.next_tag] = mark
        return True

    def _publish_result(self, task_id: str, packed: bytes) -> None:
        if task_id in self.publishing:
            return
        if self._publish(self.creds.result_queue_info, packed, task_id):
            self.publishing.add(task_id)

    def _resend_stored(self) -> None:
        self.resend_due = False
        for task_id, packed in self.ep.store.pending_results():
            self._publish_result(task_id, packed)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        tags = (
            [tag for tag in self.in_flight if tag <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        acked = isinstance(method, pika.spec.Basic.Ack)
        done = []
        for tag in tags:
            task_id = self.in_flight.pop(tag, None)
            if task_id is None:
                continue
            self.publishing.discard(task_id)
            if acked and task_id not in self.returned:
                done.append(task_id)
            else:
                self.returned.discard(task_id)
                self.resend_due = True
        if done:
            self.ep.store.confirmed(done)
            self.ep.forwarded += len(done)
        if not acked:
            log.warning("broker refused %d publish(es); will retry", len(tags))
        self._maybe_finish_stop()

    def _on_return(self, _ch, method, _props, body) -> None:
        try:
            task_id = str(unpack_as(body, Result).task_id)
        except Exception:
            return
        log.warning("result of task %s was unroutable (%s); will retry", task_id, method.reply_text)
        self.returned.add(task_id)

    # -- periodic work

    def _heartbeat(self) -> None:
        if self.stopping or not self.conn or not self.conn.is_open:
            return
        self._send_heartbeat(active=True)
        reason = self.ep.idle_check()
        if reason:
            log.warning("idle %s limit reached; stopping", reason.upper())
            self.ep.request_stop(f"idle ({reason} limit)")
            return
        self.conn.ioloop.call_later(self.ep.settings.heartbeat_period, self._heartbeat)

    def _send_heartbeat(self, active: bool) -> None:
        report = EPStatusReport(
            endpoint_id=uuid.UUID(self.ep.endpoint_id),
            global_state=self.ep.heartbeat_state(active),
            task_statuses={},
        )
        self._publish(self.creds.heartbeat_queue_info, pack(report), None)

    def _watch(self) -> None:
        """Once a second: parent alive? engine healthy? anything to re-send?"""
        if not self.conn or self.conn.is_closed:
            return
        if self.ep.parent_gone():
            self.ep.note_stop("parent process gone")
        failure = self.ep.engine.failure()
        if failure is not None:
            log.error("engine failed: %s", failure)
            self.ep.note_stop(f"engine failed: {failure}")
        if self.ep.stop_reason is not None and not self.stopping:
            self.begin_stop()
        if self.resend_due and not self.stopping:
            self._resend_stored()
        if self.ep.results_unstored:
            self.collect_results()
        self.conn.ioloop.call_later(1.0, self._watch)

    # -- stopping

    def begin_stop(self) -> None:
        """Stop consuming; let running tasks finish within the grace period."""
        if self.stopping or not self.opened:
            if not self.opened and self.conn is not None:
                self.conn.ioloop.stop()
            return
        self.stopping = True
        log.info("stopping: %s", self.ep.stop_reason)
        self.pending.clear()
        if self.consume_ch is not None and self.consume_ch.is_open and self.consumer_tag:
            self.consume_ch.basic_cancel(self.consumer_tag)
        self.conn.ioloop.call_later(self.ep.settings.stop_grace_s, self._grace_over)
        self._maybe_finish_stop()

    def _grace_over(self) -> None:
        self.ep.answer_unfinished(SHUTTING_DOWN)
        self._resend_stored()
        self._finish_stop()

    def _maybe_finish_stop(self) -> None:
        if self.stopping and not self.finishing and self.ep.engine.outstanding == 0:
            self._finish_stop()

    def _finish_stop(self) -> None:
        if self.finishing:
            return
        self.finishing = True
        for task_id, packed in self.ep.take_results():
            self._publish_result(task_id, packed)
        self._resend_stored()
        self._send_heartbeat(active=False)
        deadline = time.monotonic() + CONFIRM_WAIT_S

        def close_when_confirmed() -> None:
            if self.in_flight and time.monotonic() < deadline and self.publish_ch.is_open:
                self.conn.ioloop.call_later(0.05, close_when_confirmed)
                return
            if self.conn.is_open:
                self.conn.close()

        close_when_confirmed()


def _jsonable(headers: dict) -> dict:
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}
