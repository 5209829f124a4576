"""A 1,000-task batch from the official SDK, one fault in the middle, and its books.

:class:`Batch` submits through ``batch_client.py`` (a subprocess: the SDK reads
its environment at import), then keeps three accounts of what happened:

- the SDK's side: every ``Result`` that reaches the task group's result queue,
  counted per task (read as the service would deliver it to an ``Executor``);
- the service's side: each task's status through the REST API;
- the endpoint's side: how many times each task actually ran (marker files the
  function appends to).

A task is *lost* when it is neither answered nor explicitly failed by the
deadline; *answered twice* when its result queue saw two different answers (an
error and a result, or two results); a *duplicate* is the same answer delivered
again (the forwarder died between a confirmed forward and its ack), which an
``Executor`` ignores.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pika
import pika.exceptions

from tests.e2e.appliance import Manager, client_env, run
from tests.faults import evidence
from wire import messages, serializer

CLIENT = Path(__file__).with_name("batch_client.py")
COUNT = 1000
PACE_S = 0.02  # 1,000 tasks on 4 workers: about 5 s of work for a fault to land in


@dataclasses.dataclass
class Row:
    """One fault's line in the table."""

    fault: str
    submitted: int
    results: int
    errors: int
    lost: int
    answered_twice: int
    duplicates: int
    ran_twice: int
    seconds: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Batch:
    def __init__(
        self,
        mgr: Manager,
        who: str,
        tmp: Path,
        count: int = COUNT,
        config: dict | None = None,
        poison: int | None = None,
    ) -> None:
        self.mgr, self.who, self.count = mgr, who, count
        self.config, self.poison = config or {}, poison
        self.marks = Path(f"/tmp/ca-faults-{uuid.uuid4().hex[:10]}")
        self.marks.mkdir(mode=0o777)
        os.chmod(self.marks, 0o1777)
        self.tmp = tmp
        self.answers: dict[str, list[bytes]] = {}
        self.started = time.monotonic()
        self._connection = None

    def submit(self) -> None:
        env = client_env(self.mgr.service, self.mgr.clients[self.who], self.tmp / "sdk")
        done = run(
            sys.executable,
            str(CLIENT),
            self.mgr.id,
            str(self.count),
            str(self.marks),
            json.dumps(self.config),
            str(PACE_S),
            *([] if self.poison is None else [str(self.poison)]),
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        self.task_ids, self.group = out["task_ids"], out["task_group_id"]
        identity = self.mgr.clients[self.who]["identity_id"]
        self.queue = f"tg.{identity}.{self.group}"
        self.started = time.monotonic()

    # ---- the SDK's side ------------------------------------------------
    def _channel(self):
        if self._connection is None or not self._connection.is_open:
            params = pika.URLParameters(self.mgr.service.amqp_url)
            params.connection_attempts, params.retry_delay = 1, 0
            self._connection = pika.BlockingConnection(params)
        return self._connection.channel()

    def drain(self) -> None:
        """Take every answer waiting on the task group's queue (survives broker outages).

        Each answer is acknowledged after it is counted; one the broker delivers
        again because our ack was lost with the connection is not the system
        answering twice, and is not counted again.
        """
        try:
            channel = self._channel()
            while True:
                method, _props, body = channel.basic_get(self.queue, auto_ack=False)
                if method is None:
                    break
                task_id = str(messages.unpack(body).task_id)
                seen = self.answers.setdefault(task_id, [])
                if not (method.redelivered and body in seen):
                    seen.append(body)
                channel.basic_ack(method.delivery_tag)
            channel.close()
        except (pika.exceptions.AMQPError, OSError):
            self._connection = None

    def answered(self) -> int:
        self.drain()
        return sum(1 for t in self.task_ids if t in self.answers)

    def wait_answered(self, at_least: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.answered() < at_least:
            assert time.monotonic() < deadline, f"only {self.answered()} answers arrived"
            time.sleep(0.2)

    # ---- the service's side --------------------------------------------
    def statuses(self) -> dict[str, str]:
        try:
            token = self.mgr.service.token(self.mgr.clients[self.who])
            found = {}
            with self.mgr.service.api(token) as api:
                for start in range(0, len(self.task_ids), 1000):
                    chunk = self.task_ids[start : start + 1000]
                    got = api.post("/v2/batch_status", json={"task_ids": chunk}).json()
                    found |= {t: doc["status"] for t, doc in got["results"].items()}
            return found
        except Exception:
            return {}

    def settle(self, timeout_s: float) -> None:
        """Wait until every task is answered at the SDK's queue, or time is up."""
        deadline = time.monotonic() + timeout_s
        while self.answered() < len(self.task_ids) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1)
        self.drain()

    # ---- the books -----------------------------------------------------
    def row(self, fault: str) -> Row:
        statuses = self.statuses()
        results = errors = twice = duplicates = 0
        for task_id in self.task_ids:
            bodies = self.answers.get(task_id, [])
            if not bodies:
                continue
            outcomes = {_outcome(b) for b in bodies}
            twice += len(outcomes) > 1
            duplicates += len(outcomes) == 1 and len(bodies) > 1
            if messages.unpack(bodies[0]).is_error:
                errors += 1
            else:
                results += 1
        lost = sum(1 for t in self.task_ids if t not in self.answers)
        lost_at_service = sum(
            1 for t in self.task_ids if statuses.get(t) not in ("success", "failed")
        )
        ran = [len(p.read_text().splitlines()) for p in self.marks.iterdir()]
        return Row(
            fault=fault,
            submitted=len(self.task_ids),
            results=results,
            errors=errors,
            lost=max(lost, lost_at_service if statuses else lost),
            answered_twice=twice,
            duplicates=duplicates,
            ran_twice=sum(1 for n in ran if n > 1),
            seconds=round(time.monotonic() - self.started, 1),
        )

    def explain(self, keep: Path | None = None) -> str:
        """Error texts and unanswered tasks, for a failure message.

        With ``keep``, the logs and journals of every party are copied there
        (before the test's accounts, and their homes, are removed) and each
        unanswered task is followed through them: its status at the service,
        its rows in the user endpoint's journal, how often it ran, and every log
        line that names it.
        """
        errors = collections.Counter(
            messages.unpack(b[0]).data.strip().splitlines()[-1][:160]
            for b in self.answers.values()
            if messages.unpack(b[0]).is_error
        )
        statuses = self.statuses()
        missing = [t for t in self.task_ids if t not in self.answers]
        text = (
            f"errors: {dict(errors)}\nunanswered: "
            f"{[(t, statuses.get(t)) for t in missing[:10]]} ({len(missing)} in all)"
        )
        if keep is None or not missing:
            return text
        kept = evidence.collect(self.mgr, self.config, keep)
        index = {task_id: n for n, task_id in enumerate(self.task_ids)}
        lines = [text, f"evidence kept in {keep}"]
        for task_id in missing[:10]:
            runs = self.marks / str(index[task_id])
            ran = len(runs.read_text().splitlines()) if runs.exists() else 0
            lines.append(
                f"- task {task_id} (#{index[task_id]}): service {statuses.get(task_id)!r},"
                f" ran {ran}x, journal {evidence.journal_rows(kept, task_id)}"
            )
            lines += [f"    {line}" for line in evidence.mentions(kept, task_id)]
        lines.append("user endpoint warnings and errors:")
        lines += [f"    {line}" for line in evidence.alarms(kept)]
        return "\n".join(lines)

    def values(self) -> set:
        """The values of the successful answers (each task answers its own number)."""
        return {
            serializer.deserialize(messages.unpack(b[0]).data)
            for b in self.answers.values()
            if not messages.unpack(b[0]).is_error
        }

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        for path in self.marks.iterdir():
            path.unlink()
        self.marks.rmdir()


def _outcome(body: bytes) -> tuple:
    """What an answer says: error or not, and its data."""
    result = messages.unpack(body)
    return result.is_error, result.data


def vhost_of(amqp_url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(amqp_url).path[1:])
