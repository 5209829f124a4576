"""The user endpoint: sessions one after another, an engine that outlives them.

Everything touching AMQP or the store happens on one thread (the ioloop of the
current :class:`~uep.session.Session`, or the wait between sessions); engines
report back through a thread-safe queue.

The delivery rules that make a task impossible to lose:

1. at most the session's prefetch of deliveries are unacknowledged
   (``basic_qos``: the window's floor, raised once to its ceiling for short,
   small tasks), and the engine is never handed more than it can start soon
   (:mod:`uep.window`);
2. a task is journaled in the store (fsync) and handed to the engine before
   its delivery is acked, and only while that delivery's channel is open (a
   closed channel's deliveries go back to the broker, for the next session);
   a task journaled but never handed over (a step cut short) runs when the
   broker delivers it again;
3. a result is stored (fsync) before it is published and deleted only when the
   broker confirms it; the store is re-published at every session start;
4. at stop: stop consuming, give running tasks a grace period, then answer the
   rest with explicit errors.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import signal
import sqlite3
import threading
import time
import typing as t

from uep.audit import Audit
from uep.engines import Engine
from uep.execution import error_result
from uep.idle import IdleState, idle_tick
from uep.intake import Verdict, judge
from uep.session import SHUTTING_DOWN, Session, Settings
from uep.store import Store
from uep.window import Window
from wire.queue_info import AmqpCreds

log = logging.getLogger(__name__)

RESTARTED = "endpoint restarted; task state unknown"
LOST_CODE = "UNKNOWN_TASK_FAILURE"
MAX_REFUSED_SESSIONS = 10
MAX_RECONNECT_DELAY_S = 30.0


def reconnect_delay(failures: int) -> float:
    """Seconds before the next attempt: doubling from 0.5 s to 30 s, with jitter."""
    if failures == 0:
        return 0.5
    return min(MAX_RECONNECT_DELAY_S, 0.5 * 2 ** min(failures, 16)) * random.uniform(0.8, 1.2)


class UserEndpoint:
    """Runs sessions until stopped; the engine outlives reconnects."""

    def __init__(
        self,
        *,
        engine: Engine,
        store: Store,
        credentials: t.Callable[[], AmqpCreds],
        endpoint_id: str,
        ep_info: dict,
        settings: Settings,
        set_title: t.Callable[[str], None] = lambda _: None,
        audit_fd: int | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.credentials = credentials
        self.endpoint_id = endpoint_id
        self.ep_info = ep_info
        self.settings = settings
        self.set_title = set_title
        self.window = Window(engine.capacity)
        self.received = 0
        self.forwarded = 0
        self.stop_reason: str | None = None
        self._idle = IdleState()
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._unstored: list[tuple[str, bytes]] = []
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._session: Session | None = None
        self._parent = os.getppid()
        self.audit = Audit(audit_fd, self.request_stop)
        self._functions: dict[str, str | None] = {}
        self._started: set[str] = set()  # handed to the engine; answer not yet stored

    # ---- called from any thread -------------------------------------------------

    def note_stop(self, reason: str) -> None:
        """Record a stop request; safe in a signal handler (the loop polls it)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop now (from the loop or any other thread)."""
        self.note_stop(reason)
        session = self._session
        if session is not None:
            session.call_threadsafe(session.begin_stop)

    def _engine_done(self, task_id: str, future) -> None:
        self._results.put((task_id, future.result()))
        with self._wake_lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        session = self._session
        if session is None or not session.call_threadsafe(session.collect_results):
            # No session to wake: the next one collects at its start, and a later
            # completion must be able to wake it.
            with self._wake_lock:
                self._wake_pending = False

    # ---- main thread ------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; the exit status (0 = a deliberate stop).

        A broker that cannot be reached is waited for as long as it takes (the
        engine keeps running and results keep being stored): an outage must not
        strand the tasks this endpoint holds. Only a broker that answers and
        keeps refusing our credentials (the endpoint was retired) makes it give
        up, after ``MAX_REFUSED_SESSIONS`` refusals in a row.
        """
        self._recover_journal()
        failures = refusals = 0
        while self.stop_reason is None:
            session = Session(self)
            self._session = session
            try:
                opened = session.run()
            except Exception:
                log.exception("session failed; reconnecting")
                opened = False
            self._session = None
            self._collect_offline()
            if self.stop_reason is not None:
                break
            failures = 0 if opened else failures + 1
            refusals = refusals + 1 if session.refused else 0
            if refusals >= MAX_REFUSED_SESSIONS:
                log.error("giving up: the broker refused our credentials %d times", refusals)
                self.stop_reason = "broker refused the credentials"
                self.answer_unfinished(SHUTTING_DOWN)
                return 1
            self._wait_offline(reconnect_delay(failures))
        self.answer_unfinished(SHUTTING_DOWN)
        return 0

    def _recover_journal(self) -> None:
        """Answer (or re-run) tasks a previous run accepted but never answered."""
        unfinished = self.store.unfinished_tasks()
        if not unfinished:
            return
        if self.settings.rerun_unfinished:
            log.warning("re-running %d task(s) left unfinished by a previous run", len(unfinished))
            refused = []
            for task_id, body, headers in unfinished:
                answer = self.submit(judge(json.loads(headers), body, None), body)
                if answer is not None:
                    refused.append((task_id, answer))
            self.store.add_results(refused)
            return
        log.warning("answering %d task(s) left unfinished by a previous run", len(unfinished))
        self.store.add_results(
            [(tid, self._lost(tid, RESTARTED)) for tid, _body, _headers in unfinished]
        )

    def _lost(self, task_id: str, why: str) -> bytes:
        return error_result(task_id, why, LOST_CODE, why, self.endpoint_id)

    def submit(self, verdict: Verdict, body: bytes) -> bytes | None:
        """Hand a journaled task to the engine; an error Result if it refuses."""
        try:
            future = self.engine.submit(
                verdict.task_id, body, verdict.resource_spec, verdict.result_serializers
            )
        except Exception as e:
            log.warning("task %s could not start: %s", verdict.task_id, e)
            text = f"Failed to start task: {e}"
            return error_result(
                verdict.task_id, text, "CouldNotExecuteUserTaskError", text, self.endpoint_id
            )
        self._functions[verdict.task_id] = verdict.function_id
        self._started.add(verdict.task_id)
        future.add_done_callback(lambda f, tid=verdict.task_id: self._engine_done(tid, f))
        return None

    def take_results(self) -> list[tuple[str, bytes]]:
        """Engine results ready now and stored, minus those already answered some other way.

        A result that cannot be stored (a full disk, a quota) stays in memory and
        is tried again at the next call; it is not published before it is stored.
        """
        with self._wake_lock:
            self._wake_pending = False
        batch, self._unstored = self._unstored, []
        while True:
            try:
                task_id, packed = self._results.get_nowait()
            except queue.Empty:
                break
            function_id = self._functions.pop(task_id, None)
            if self.store.journaled(task_id):
                batch.append((task_id, packed))
                self.audit(function_id, task_id, "EXEC_END")
            else:
                log.info("dropping late result of task %s (already answered)", task_id)
                self._started.discard(task_id)
        if batch:
            try:
                self.store.add_results(batch)
            except sqlite3.Error as e:
                log.warning("cannot store %d result(s) yet (%s); will retry", len(batch), e)
                self._unstored = batch
                return []
            self._started.difference_update(task_id for task_id, _packed in batch)
            self.window.finished(len(batch), time.monotonic())
        return batch

    def stranded(self, task_id: str | None) -> bool:
        """Journaled by this run but never handed to the engine, so no result can come.

        Every task journaled by an earlier run is answered or restarted by
        :meth:`_recover_journal`; one journaled since is started right after, so
        this holds only if that step was cut short. The broker then delivers it
        again (its ack came after), and it must run rather than be skipped.
        """
        return (
            task_id is not None and task_id not in self._started and self.store.journaled(task_id)
        )

    @property
    def results_unstored(self) -> bool:
        return bool(self._unstored)

    def _collect_offline(self) -> None:
        self.take_results()

    def _wait_offline(self, seconds: float) -> None:
        """Between sessions: keep storing results while waiting to reconnect."""
        deadline = time.monotonic() + seconds
        while self.stop_reason is None and (left := deadline - time.monotonic()) > 0:
            try:
                item = self._results.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            self._results.put(item)
            self.take_results()

    def answer_unfinished(self, why: str) -> None:
        self.take_results()
        unfinished = self.store.unfinished_tasks()
        if unfinished:
            log.warning("answering %d unfinished task(s): %s", len(unfinished), why)
            try:
                self.store.add_results([(tid, self._lost(tid, why)) for tid, _b, _h in unfinished])
            except sqlite3.Error as e:  # they stay journaled: the next start answers them
                log.error("cannot store the answers of unfinished tasks: %s", e)

    def heartbeat_state(self, active: bool) -> dict:
        """What a heartbeat says; a goodbye (``active`` false) skips the engine's figures,
        which a stopping engine may no longer be able to give."""
        state = {"engine_type": self.engine.type_name}
        try:
            if active:
                state = json.loads(json.dumps(self.engine.status(), default=str))
        except Exception:
            log.exception("engine status unavailable")
        state.update(self.ep_info)
        state["heartbeat_period"] = self.settings.heartbeat_period
        state["active"] = active
        return state

    def idle_check(self) -> str | None:
        verdict = idle_tick(
            self._idle,
            self.received,
            self.forwarded,
            soft_limit=self.settings.idle_soft,
            hard_limit=self.settings.idle_hard,
            period=self.settings.heartbeat_period,
        )
        self._idle = verdict.state
        self.set_title(verdict.title)
        return verdict.stop

    def parent_gone(self) -> bool:
        return os.getppid() != self._parent


def install_signal_handlers(endpoint: UserEndpoint) -> None:
    """SIGTERM, SIGHUP and SIGQUIT stop the endpoint gracefully."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda signum, _f: endpoint.note_stop(signal.Signals(signum).name))
