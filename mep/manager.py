"""The manager's main loop: the imperative shell around the decision core.

The manager runs as its own unprivileged account; its monitor (root) starts,
contains, audits and reaps user endpoints on its behalf
(:mod:`mep.monitor.server`). One thread does everything, in a loop that never
blocks for long: consume start commands (acked at once, as upstream), decide,
act (ask the monitor to spawn, refresh credentials, or tell the submitter why
not), handle the exits the monitor reports, restart those that exited while
tasks still wait in their queue, publish heartbeats, and reload the identity
mapping on SIGHUP. The manager talks to the broker over its one connection,
made from its registration: notices and queue depth checks never follow an
address a command names.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
import types

import pika
import pika.adapters.blocking_connection
import pika.exceptions
import pika.spec
import setproctitle

from mep.command import Properties, Rejection
from mep.decision import Decision, DecisionContext, LaunchPlan, Refresh, Running, decide
from mep.launch import CredentialChannel, open_note_pipe, read_note
from mep.monitor.channel import sealed_memfd
from mep.monitor_link import Exited, MonitorGone, MonitorLink, SpawnRefused
from mep.notices import send_failure_notice
from mep.registration import Registration
from mep.restart_policy import RestartBook, exit_facts
from mep.runtime import Runtime
from mep.task_queue import waiting_tasks
from wire.amqp import connection_parameters, publish_kwargs
from wire.messages import EPStatusReport, pack
from wire.redaction import redact

log = logging.getLogger(__name__)
LOOP_TICK_S = 0.5
Channel = pika.adapters.blocking_connection.BlockingChannel


@dataclasses.dataclass
class Started:
    """What the manager remembers about a user endpoint the monitor started for it."""

    plan: LaunchPlan
    credentials: CredentialChannel
    pid: int
    started_at: float
    last_request_at: float
    note_fd: int

    def close(self) -> None:
        self.credentials.close()
        if self.note_fd >= 0:
            os.close(self.note_fd)
            self.note_fd = -1


class Manager:
    """Runs until signalled or until its monitor is gone."""

    def __init__(self, runtime: Runtime, registration: Registration, monitor: MonitorLink) -> None:
        self.rt = runtime
        self.reg = registration
        self.monitor = monitor
        self.restarts = RestartBook(runtime.restart_policy())
        self.started: dict[str, Started] = {}
        self.pending_restarts: dict[str, float] = {}
        self.restart_plans: dict[str, LaunchPlan] = {}
        self._stop = False
        self._reload = False
        self._next_heartbeat = 0.0
        self._connection: pika.BlockingConnection | None = None
        self._channel: Channel | None = None

    # ---- signals -------------------------------------------------------
    def _install_signals(self) -> None:
        def stop(signum: int, _frame: types.FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            self._stop = True

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, stop)
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "_reload", True))

    # ---- the loop ------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        self._title("running")
        backoff = 1.0
        try:
            while not self._stop:
                try:
                    self._serve()
                    backoff = 1.0
                except (pika.exceptions.AMQPError, OSError) as e:
                    self._report_status(connected=False)
                    log.error(
                        "broker connection lost: %s; retrying in %.0f s", redact(str(e)), backoff
                    )
                    self._sleep_housekeeping(backoff)
                    backoff = min(backoff * 2, 30.0)
        except MonitorGone as e:
            log.critical("the monitor is gone (%s); the manager ends", e)
            return 1
        finally:
            self._shutdown()
        return 0

    def _serve(self) -> None:
        params = connection_parameters(
            self.reg.command_queue.connection_url,
            port=self.rt.config.amqp_port,
            client_name=f"compute-agent manager {self.reg.endpoint_id}",
        )
        connection = pika.BlockingConnection(params)
        self._connection = connection
        if self.reg.command_sender is None:
            log.warning(
                "the service does not name its broker account: commands are trusted on the"
                " broker's permissions alone"
            )
        try:
            self._channel = connection.channel()
            self._channel.confirm_delivery()
            self._channel.basic_consume(self.reg.command_queue.queue, self._on_command)
            log.info("consuming start commands from %s", self.reg.command_queue.queue)
            self._next_heartbeat = 0.0
            while not self._stop:
                connection.process_data_events(time_limit=LOOP_TICK_S)
                self._housekeeping()
            self._heartbeat(final=True)
        finally:
            self._channel = None
            self._connection = None
            if connection.is_open:
                connection.close()

    def _sleep_housekeeping(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop and time.monotonic() < deadline:
            time.sleep(min(LOOP_TICK_S, seconds))
            self._housekeeping(heartbeats=False)

    def _housekeeping(self, heartbeats: bool = True) -> None:
        for exited in self.monitor.events():
            self._on_exit(exited)
        if self._reload:
            self._reload = False
            self.rt.reload()
        self._restart_due()
        if heartbeats and time.monotonic() >= self._next_heartbeat:
            self._heartbeat()

    # ---- commands ------------------------------------------------------
    def _on_command(
        self,
        channel: Channel,
        method: pika.spec.Basic.Deliver,
        props: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        channel.basic_ack(method.delivery_tag)
        properties = Properties(
            props.content_type, props.timestamp, dict(props.headers or {}), props.user_id
        )
        if properties.headers.get("debug") and self.reg.command_sender in (None, props.user_id):
            log.info("command received: %s", redact(body.decode("utf-8", "replace")))
        try:
            decision = decide(properties, body, time.time(), self._context())
            self._act(decision)
        except MonitorGone:
            raise
        except Exception:
            log.exception("unable to handle a start command")

    def _context(self) -> DecisionContext:
        running = {
            name: Running(s.plan.account.name, str(s.plan.command.endpoint_id))
            for name, s in self.started.items()
        }
        return self.rt.decision_context(running, self.reg)

    def _act(self, decision: Decision) -> None:
        if isinstance(decision, Rejection):
            self._reject(decision)
        elif isinstance(decision, Refresh):
            self._refresh(decision)
        else:
            self._launch(decision)

    def _reject(self, rejection: Rejection) -> None:
        log.warning("start refused [%s]: %s", rejection.check, rejection.admin_message)
        if rejection.endpoint_id is not None and self._channel is not None:
            send_failure_notice(
                self._channel,
                self.reg.heartbeat_queue,
                rejection.endpoint_id,
                rejection.user_message,
            )

    def _refresh(self, refresh: Refresh) -> None:
        started = self.started.get(refresh.command.name)
        if started is None:
            return
        started.credentials.write(refresh.command.amqp_creds)
        started.last_request_at = time.monotonic()
        log.info("refreshed credentials of running user endpoint %s", refresh.command.name)

    def _launch(self, plan: LaunchPlan) -> None:
        name = plan.command.name
        self.pending_restarts.pop(name, None)
        self.restart_plans.pop(name, None)
        blocked = self.restarts.before_start(name)
        if blocked is not None:
            self._reject(
                _plan_rejection(plan, "circuit_open", blocked.user_message, blocked.admin_message)
            )
            return
        credentials = CredentialChannel(name, plan.command.amqp_creds)
        order = self.rt.spawn_order(plan, credentials)
        note_r, note_w = open_note_pipe()
        payload = sealed_memfd(order.payload)
        try:
            outcome = self.monitor.spawn(
                name=order.name,
                user=order.user,
                endpoint_id=order.endpoint_id,
                identity=order.identity,
                env=order.env,
                fds=(payload, credentials.child_fd, note_w),
            )
        except BaseException:
            credentials.close()
            os.close(note_r)
            raise
        finally:
            os.close(payload)
            os.close(note_w)
            credentials.close_child_end()
        if isinstance(outcome, SpawnRefused):
            credentials.close()
            os.close(note_r)
            self.restarts.after_start_failure(name)
            self._reject(
                _plan_rejection(
                    plan, f"spawn:{outcome.step}", outcome.user_message, outcome.admin_message
                )
            )
            return
        now = time.monotonic()
        self.started[name] = Started(plan, credentials, outcome, now, now, note_r)
        log.info(
            "started user endpoint %s (pid %d) as %s for %s",
            name,
            outcome,
            plan.account.name,
            plan.command.username,
        )

    # ---- exits ---------------------------------------------------------
    def _on_exit(self, exited: Exited) -> None:
        started = self.started.pop(exited.name, None)
        if started is None:
            return
        facts = exit_facts(exited.rc, exited.signal, exited.ran_s, exited.stop_requested)
        log.info("user endpoint %s (pid %d) exited: %s", exited.name, exited.pid, facts.description)
        note = read_note(started.note_fd)
        started.close()
        if note:
            log.warning(
                "user endpoint %s (local user %s) said why: %s",
                exited.name,
                started.plan.account.name,
                note,
            )
        has_work = not exited.stop_requested and self._has_waiting_work(started)
        verdict = self.restarts.after_exit(exited.name, facts, has_work)
        if self._stop:
            return
        if verdict.restart:
            log.info("restarting user endpoint %s in %.1f s", exited.name, verdict.delay_s)
            self.pending_restarts[exited.name] = time.monotonic() + verdict.delay_s
            self.restart_plans[exited.name] = started.plan
        elif verdict.user_message:  # the circuit opened
            self._reject(
                _plan_rejection(
                    started.plan,
                    verdict.verdict.value,
                    verdict.user_message,
                    verdict.admin_message,
                )
            )
        elif verdict.admin_message:
            log.info("%s", verdict.admin_message)

    def _has_waiting_work(self, started: Started) -> bool:
        """Tasks wait in its queue; if the broker cannot say, a recent start command counts."""
        queue = started.plan.command.amqp_creds.task_queue_info.queue
        waiting = waiting_tasks(self._connection, queue)
        if waiting is not None:
            return waiting > 0
        since_request = time.monotonic() - started.last_request_at
        return (
            started.last_request_at > started.started_at
            and since_request <= self.rt.config.mu_child_ep_grace_period_s
        )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for name, when in list(self.pending_restarts.items()):
            if when > now or self._stop:
                continue
            del self.pending_restarts[name]
            self._launch(self.restart_plans.pop(name))

    # ---- heartbeats and shutdown ---------------------------------------
    def _heartbeat(self, final: bool = False) -> None:
        period = self.rt.config.heartbeat_period
        self._next_heartbeat = time.monotonic() + period
        self._report_status(connected=self._channel is not None and not final)
        if self._channel is None:
            return
        state = {
            "heartbeat_period": 0 if final else period,
            "user_endpoints": len(self.started),
            "active": not final,
        }
        report = EPStatusReport(
            endpoint_id=self.reg.endpoint_id, global_state=state, task_statuses={}
        )
        try:
            self._channel.basic_publish(
                body=pack(report), **publish_kwargs(self.reg.heartbeat_queue)
            )
        except pika.exceptions.AMQPError as e:
            log.warning("heartbeat not delivered: %s", redact(str(e)))

    def _report_status(self, connected: bool) -> None:
        """The monitor keeps ``status.json`` for ``compute-endpoint list``."""
        self.monitor.status(connected)

    def _title(self, state: str) -> None:
        setproctitle.setproctitle(
            f"compute-agent manager *({self.reg.endpoint_id}, {self.rt.endpoint_dir}) [{state}]"
        )

    def _shutdown(self) -> None:
        """The monitor stops the user endpoints; what is left here is our own descriptors."""
        self._title("shutdown in progress")
        self.pending_restarts.clear()
        for started in self.started.values():
            started.close()
        self.started.clear()
        log.info("shutdown complete; manager %s ends", self.reg.endpoint_id)


def _plan_rejection(plan: LaunchPlan, check: str, user: str, admin: str) -> Rejection:
    """A refusal of a planned start, told to its submitter (admin text names the account)."""
    return Rejection(
        check,
        user,
        f"{admin} (user endpoint {plan.command.name}, local user {plan.account.name})",
        plan.command.endpoint_id,
    )
