"""The service's periodic work: what no request or message would ever do.

- **The outbox.** A task's message is journaled with the task and deleted once
  the broker confirmed it. A row older than ``OUTBOX_AGE_S`` belongs to a
  submit the service never finished (killed between commit and publish): its
  task is published again, after a fresh start command for its user endpoint.
  A user endpoint skips a task id it has seen, so a message that did make it
  the first time is not run twice by ours.
- **Start timeout.** When a user endpoint has not been heard from in the
  ``start_timeout_s`` since a task was sent to it (the endpoint is offline, its
  start hangs in ``endpoint_setup``, ...), its waiting tasks fail with a
  message saying so and its queue is purged, so a later start does not run
  them. Zero turns this off.
- **Finished actions.** A Flows action is forgotten ``release_after`` (30 days
  at most) after it was first seen complete, as if its creator had released it.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from service import recording, routing, schema, store
from service.broker import BrokerUnavailable, Publisher
from service.broker_admin import BrokerAdminError
from service.broker_provisioning import Provisioner
from service.routing import Topology

log = logging.getLogger(__name__)
INTERVAL_S = 30.0
OUTBOX_AGE_S = 60.0
START_TIMEOUT = (
    "your user endpoint has not started in the {:.0f} s since tasks were first sent to it"
    " (the endpoint may be offline, or its start hangs); this task did not run"
)


class Housekeeper:
    """Runs :meth:`tick` every ``interval_s`` on its own daemon thread."""

    def __init__(
        self,
        topo: Topology,
        sessions: sessionmaker[Session],
        publisher: Publisher,
        provisioner: Provisioner,
        start_timeout_s: float,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.topo = topo
        self.sessions = sessions
        self.publisher = publisher
        self.provisioner = provisioner
        self.start_timeout_s = start_timeout_s
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for job in (self.resend_unsent, self.time_out_starts, self.release_actions):
            try:
                job(now)
            except (BrokerUnavailable, BrokerAdminError) as e:
                log.warning("%s postponed: %s", job.__name__, e)
            except Exception:
                log.exception("%s failed", job.__name__)

    def resend_unsent(self, now: float) -> int:
        """Publish what a killed service left in the outbox; returns how many tasks."""
        with self.sessions.begin() as s:
            rows = store.unsent(s, now - OUTBOX_AGE_S)
            by_uep = collections.defaultdict(list)
            for row in rows:
                task = s.get(schema.Task, row.task_id)
                if task is not None and task.status == store.PENDING:
                    by_uep[row.user_endpoint_id].append(row)
            plans = [self._plan(s, uep_id, rows) for uep_id, rows in by_uep.items()]
            stale = [r.task_id for r in rows]
        for endpoint_id, uep_id, command, messages in filter(None, plans):
            log.warning("publishing %d task(s) a killed submit left unsent", len(messages))
            self.publisher.submit(
                endpoint_id=endpoint_id,
                user_endpoint_id=uep_id,
                command=command,
                command_properties=routing.command_properties(self.topo.service_user),
                sdk_queue=None,
                tasks=messages,
            )
        with self.sessions.begin() as s:
            store.sent(s, stale)
        return sum(len(p[3]) for p in plans if p)

    def _plan(self, s: Session, uep_id: str, rows: list[schema.OutboxTask]) -> tuple | None:
        uep = s.get(schema.UserEndpoint, uep_id)
        ep = s.get(schema.Endpoint, uep.endpoint_id) if uep else None
        if ep is None:
            return None
        command = routing.start_command_for(uep, self.provisioner.user_endpoint_creds(ep, uep))
        messages = [(r.body, {"headers": r.headers, "delivery_mode": 2}) for r in rows]
        return ep.id, uep.id, command, messages

    def time_out_starts(self, now: float) -> int:
        """Fail tasks whose user endpoint never started; returns how many."""
        if not self.start_timeout_s:
            return 0
        text = START_TIMEOUT.format(self.start_timeout_s)
        failed = []
        with self.sessions.begin() as s:
            ueps = {uep.id for _task, uep in store.stuck_tasks(s, now - self.start_timeout_s)}
            for uep_id in ueps:
                failed += recording.fail_pending(s, self.topo, uep_id, text, now)
        for uep_id in ueps:
            self.publisher.purge(self.topo.task_queue(uep_id))
            log.warning("tasks of user endpoint %s timed out waiting for it to start", uep_id)
        self.publisher.send_results([(f.queue, f.body) for f in failed])
        return len(failed)

    def release_actions(self, now: float) -> int:
        """Forget finished actions past their release time; returns how many."""
        with self.sessions.begin() as s:
            released = store.release_expired_actions(s, dt.datetime.fromtimestamp(now, dt.UTC))
        if released:
            log.info("released %d finished action(s) past their release_after", released)
        return released
