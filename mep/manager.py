"""The manager's main loop: the imperative shell around the decision core.

One thread does everything, in a loop that never blocks for long: consume start
commands (acked at once, as upstream), decide, act (spawn, refresh credentials,
or tell the submitter why not), reap children after SIGCHLD, restart those that
exited cleanly while tasks still wait in their queue, publish heartbeats, copy audit
records, and reload the identity mapping on SIGHUP. The manager talks to the
broker over its one connection, made from its registration: notices and queue
depth checks never follow an address a command names. The pieces it acts through
live elsewhere: :mod:`mep.privilege` for every identity-changing syscall,
:mod:`mep.children` for the child table, :mod:`mep.notices` for rejections.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
import typing as t

import pika
import pika.exceptions
import setproctitle

from mep import children as child_table
from mep.audit import AuditLog, AuditWriteError, record_line, session_line
from mep.command import Properties, Rejection
from mep.containment import Containment, ContainmentError, current_layout
from mep.decision import Decision, DecisionContext, LaunchPlan, Refresh, Running, decide
from mep.launch import CredentialChannel, open_note_pipe, read_note
from mep.notices import send_failure_notice
from mep.privilege import SpawnError, spawn_user_endpoint
from mep.registration import Registration
from mep.task_queue import waiting_tasks
from wire.amqp import connection_parameters, publish_kwargs, redact
from wire.messages import EPStatusReport, pack

log = logging.getLogger(__name__)
# Longer than a user endpoint's own stop (its 10 s grace for running tasks, then
# answering what did not finish), so no task is left unanswered by a manager stop.
STOP_GRACE_S = 25.0
CONTAINMENT_FAILED = (
    "the endpoint host could not set up your user endpoint's resources;"
    " please contact the endpoint administrator"
)
LOOP_TICK_S = 0.5
STATUS_FILE = "status.json"


@dataclasses.dataclass
class Started:
    """What the manager remembers about a user endpoint it started."""

    plan: LaunchPlan
    credentials: CredentialChannel
    started_at: float
    last_request_at: float
    note_fd: int = -1


class Manager:
    """Runs until signalled; everything it needs comes from :class:`mep.runtime.Runtime`."""

    def __init__(self, runtime: t.Any, registration: Registration) -> None:
        self.rt = runtime
        self.reg = registration
        self.children = child_table.ChildTable(runtime.restart_policy())
        self.started: dict[str, Started] = {}
        self.pending_restarts: dict[str, float] = {}
        self.restart_plans: dict[str, LaunchPlan] = {}
        self.audit: AuditLog | None = None
        self.containment = Containment(
            current_layout(), str(registration.endpoint_id), runtime.config.limits
        )
        self._stop = False
        self._reload = False
        self._next_heartbeat = 0.0
        self._connection: t.Any = None
        self._channel: t.Any = None

    # ---- signals -------------------------------------------------------
    def _install_signals(self) -> None:
        def stop(signum: int, _frame: t.Any) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            self._stop = True

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, stop)
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "_reload", True))
        signal.signal(signal.SIGCHLD, lambda *_: None)

    # ---- the loop ------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        self._title("running")
        self.containment.prepare()
        self.containment.start_warden()
        log.info(
            "user endpoints are contained in %s",
            self.containment.unified_base or "no cgroup (this manager is their subreaper)",
        )
        if self.rt.config.audit_log_path:
            self.audit = AuditLog(self.rt.config.audit_log_path)
            self.audit.write(
                session_line(os.getuid(), os.getpid(), str(self.reg.endpoint_id), True)
            )
        backoff = 1.0
        try:
            while not self._stop:
                try:
                    self._serve()
                    backoff = 1.0
                except (pika.exceptions.AMQPError, OSError) as e:
                    self._write_status(connected=False)
                    log.error(
                        "broker connection lost: %s; retrying in %.0f s", redact(str(e)), backoff
                    )
                    self._sleep_housekeeping(backoff)
                    backoff = min(backoff * 2, 30.0)
        except AuditWriteError as e:
            log.critical("%s; stopping (the audit log is fail-closed)", e)
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
        for exited in self.children.reap():
            self._on_exit(exited)
        if not self.containment.contained:
            self.children.reap_orphans()
        if self._reload:
            self._reload = False
            self.rt.reload()
        self._restart_due()
        if self.audit:
            self.audit.drain()
        if heartbeats and time.monotonic() >= self._next_heartbeat:
            self._heartbeat()

    # ---- commands ------------------------------------------------------
    def _on_command(self, channel: t.Any, method: t.Any, props: t.Any, body: bytes) -> None:
        channel.basic_ack(method.delivery_tag)
        properties = Properties(
            props.content_type, props.timestamp, dict(props.headers or {}), props.user_id
        )
        if properties.headers.get("debug") and self.reg.command_sender in (None, props.user_id):
            log.info("command received: %s", redact(body.decode("utf-8", "replace")))
        try:
            decision = decide(properties, body, time.time(), self._context())
            self._act(decision)
        except AuditWriteError:
            raise
        except Exception:
            log.exception("unable to handle a start command")

    def _context(self) -> DecisionContext:
        running = {
            name: Running(user, str(self.started[name].plan.command.endpoint_id))
            for name, user in self.children.running_users().items()
            if name in self.started
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
        if rejection.endpoint_id is not None:
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
        blocked = self.children.before_start(name)
        if blocked is not None:
            self._reject(
                self._plan_rejection(
                    plan, "circuit_open", blocked.user_message, blocked.admin_message
                )
            )
            return
        try:
            join = self.containment.cell(plan.account.name, name).join_fds()
        except ContainmentError as e:
            self.containment.release(name)
            self._reject(self._plan_rejection(plan, "containment", CONTAINMENT_FAILED, str(e)))
            return
        credentials = CredentialChannel(name, plan.command.amqp_creds)
        note_r, note_w = open_note_pipe()
        audit_w = None
        if self.audit:
            audit_r, audit_w = self.audit.open_pipe()
        try:
            request = self.rt.spawn_request(plan, credentials, audit_w, join, note_w)
            spawned = spawn_user_endpoint(request)
        except SpawnError as e:
            credentials.close()
            os.close(note_r)
            self.containment.release(name)
            self.children.after_start_failure(name)
            self._reject(
                self._plan_rejection(plan, f"spawn:{e.step}", e.user_message, e.admin_message)
            )
            return
        finally:
            for fd in (*join, note_w, *(() if audit_w is None else (audit_w,))):
                os.close(fd)
        credentials.close_child_end()
        now = time.monotonic()
        self.children.add(name, spawned)
        self.started[name] = Started(plan, credentials, now, now, note_r)
        if self.audit:
            self.audit.watch(
                audit_r, spawned.account.uid, spawned.pid, str(plan.command.endpoint_id)
            )
            self.audit.write(
                record_line(
                    spawned.account.uid,
                    spawned.pid,
                    str(plan.command.endpoint_id),
                    f"START local_user={plan.account.name} identity={plan.ep_info.get('globus_matched_identity')}",
                )
            )
        log.info(
            "started user endpoint %s (pid %d) as %s for %s",
            name,
            spawned.pid,
            plan.account.name,
            plan.command.username,
        )

    @staticmethod
    def _plan_rejection(plan: LaunchPlan, check: str, user: str, admin: str) -> Rejection:
        """A refusal of a planned start, told to its submitter (admin text names the account)."""
        return Rejection(
            check,
            user,
            f"{admin} (user endpoint {plan.command.name}, local user {plan.account.name})",
            plan.command.endpoint_id,
        )

    # ---- children ------------------------------------------------------
    def _on_exit(self, exited: t.Any) -> None:
        started = self.started.pop(exited.name, None)
        log.info("user endpoint %s (pid %d) exited: %s", exited.name, exited.pid, exited.describe())
        self.containment.release(exited.name)
        if started is None:
            return
        started.credentials.close()
        note = read_note(started.note_fd)
        os.close(started.note_fd)
        if note:
            log.warning(
                "user endpoint %s (local user %s) said why: %s",
                exited.name,
                started.plan.account.name,
                note,
            )
        if self.audit:
            self.audit.write(
                record_line(
                    started.plan.account.uid,
                    exited.pid,
                    str(started.plan.command.endpoint_id),
                    f"EXIT {exited.describe()}",
                )
            )
        has_work = not exited.stop_requested and self._has_waiting_work(started)
        verdict = self.children.after_exit(exited, has_work)
        if self._stop:
            return
        if verdict.restart:
            log.info("restarting user endpoint %s in %.1f s", exited.name, verdict.delay_s)
            self.pending_restarts[exited.name] = time.monotonic() + verdict.delay_s
            self.restart_plans[exited.name] = started.plan
        elif verdict.user_message:  # the circuit opened
            self._reject(
                self._plan_rejection(
                    started.plan, verdict.verdict.value, verdict.user_message, verdict.admin_message
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
        self._write_status(connected=self._channel is not None and not final)
        if self._channel is None:
            return
        state = {
            "heartbeat_period": 0 if final else period,
            "user_endpoints": len(self.children),
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

    def _write_status(self, connected: bool) -> None:
        """``status.json`` tells ``compute-endpoint list`` what the manager is doing."""
        state = {
            "endpoint_id": str(self.reg.endpoint_id),
            "pid": os.getpid(),
            "connected": connected,
            "user_endpoints": len(self.children),
            "updated": time.time(),
            "heartbeat_period": self.rt.config.heartbeat_period,
            "broker": redact(self.reg.command_queue.connection_url),
        }
        path = self.rt.endpoint_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)

    def _title(self, state: str) -> None:
        setproctitle.setproctitle(
            f"compute-agent manager *({self.reg.endpoint_id}, {self.rt.endpoint_dir}) [{state}]"
        )

    def _shutdown(self) -> None:
        self._title("shutdown in progress")
        self.pending_restarts.clear()
        self.children.stop_all(STOP_GRACE_S)
        for exited in self.children.reap():
            log.info("user endpoint %s stopped: %s", exited.name, exited.describe())
        self.containment.close()
        if not self.containment.contained:
            self.children.reap_orphans(everyone=True)
        for started in self.started.values():
            started.credentials.close()
            os.close(started.note_fd)
        self.started.clear()
        if self.audit:
            try:
                self.audit.drain()
                self.audit.write(
                    session_line(os.getuid(), os.getpid(), str(self.reg.endpoint_id), False)
                )
            except AuditWriteError as e:
                log.critical("%s", e)
            self.audit.close()
        log.info("shutdown complete; manager %s ends", self.reg.endpoint_id)
