"""The forwarder loses nothing and never stalls: real RabbitMQ, SQLite and PostgreSQL.

- a forward lost with its connection (between the commit and the SDK publish)
  is forwarded again when the broker redelivers the result;
- a poison result (NUL in a traceback and NaN in its details, which PostgreSQL
  refuses; or anything else that cannot be stored) fails its task with an
  explicit error and the results and heartbeats behind it keep flowing;
- an error report empties the user endpoint's task queue, so its next start
  does not run tasks whose submitters were told they failed.
"""

from __future__ import annotations

import math
import time
import uuid

import pika
import pika.exceptions
import pytest

from service import recording, schema, store
from service.broker import Publisher
from service.forwarder import Forwarder
from service.routing import Topology, task_message
from tests.fixtures_service import private_vhost
from wire import messages, serializer


class Harness:
    """A forwarder on its own vhost and database, with tasks and user endpoints to match."""

    def __init__(self, admin_url: str, db_url: str, forwarder_class: type = Forwarder) -> None:
        self.topo = Topology(admin_url)
        self.sessions = store.open_database(db_url)
        self.publisher = Publisher(self.topo)
        self.publisher.ensure_topology()
        self.forwarder = forwarder_class(self.topo, self.sessions)
        self.connection = pika.BlockingConnection(pika.URLParameters(admin_url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.endpoint_id = str(uuid.uuid4())
        with self.sessions.begin() as s:
            s.add(schema.Endpoint(id=self.endpoint_id, owner_id="owner", name="e"))

    def start(self) -> None:
        self.forwarder.start()
        assert self.forwarder.connected.wait(20)

    def close(self) -> None:
        self.forwarder.stop()
        self.publisher.close()
        if self.connection.is_open:
            self.connection.close()
        store.dispose(self.sessions)

    def user_endpoint(self) -> str:
        uep_id = str(uuid.uuid4())
        with self.sessions.begin() as s:
            s.add(
                schema.UserEndpoint(
                    id=uep_id, endpoint_id=self.endpoint_id, identity_id="owner", name=uep_id
                )
            )
        queue = self.topo.task_queue(uep_id)
        self.channel.queue_declare(queue, durable=True)
        return uep_id

    def task(self, uep_id: str, created_t: float | None = None) -> str:
        task_id, group = str(uuid.uuid4()), str(uuid.uuid4())
        with self.sessions.begin() as s:
            s.add(schema.TaskGroup(id=group, owner_id="owner"))
            s.flush()
            s.add(
                schema.Task(
                    id=task_id,
                    task_group_id=group,
                    owner_id="owner",
                    function_id=str(uuid.uuid4()),
                    endpoint_id=self.endpoint_id,
                    user_endpoint_id=uep_id,
                    created_t=time.time() if created_t is None else created_t,
                )
            )
        self.channel.queue_declare(self.topo.sdk_queue("owner", group), durable=True)
        return task_id

    def sdk_queue(self, task_id: str) -> str:
        with self.sessions() as s:
            task = s.get(schema.Task, task_id)
            return self.topo.sdk_queue(task.owner_id, task.task_group_id)

    def result(self, uep_id: str, result: messages.Result) -> None:
        body = messages.pack(result)
        self.channel.basic_publish(self.topo.results_exchange, f"{uep_id}.results", body)

    def report(self, sender: str, about: str, state: dict) -> None:
        report = messages.EPStatusReport(
            endpoint_id=uuid.UUID(about), global_state=state, task_statuses={}
        )
        body = messages.pack(report)
        self.channel.basic_publish(self.topo.heartbeats_exchange, f"{sender}.heartbeats", body)

    def forwarded(self, task_id: str, timeout_s: float = 20) -> list[messages.Result]:
        """Every result on the task's SDK queue once one has arrived (waits for the first)."""
        queue, got = self.sdk_queue(task_id), []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            method, _props, body = self.channel.basic_get(queue, auto_ack=True)
            if method is not None:
                got.append(messages.unpack(body))
                continue
            if got:
                return got
            self.connection.sleep(0.1)
        return got

    def heartbeat_of(self, uep_id: str) -> float | None:
        with self.sessions() as s:
            return s.get(schema.UserEndpoint, uep_id).last_heartbeat

    def status(self, task_id: str) -> schema.Task:
        with self.sessions() as s:
            return s.get(schema.Task, task_id)


@pytest.fixture
def harness(db_url):
    with private_vhost("fwd") as admin_url:
        made = Harness(admin_url, db_url)
        try:
            yield made
        finally:
            made.close()


def ok(task_id: str, value) -> messages.Result:
    return messages.Result(task_id=uuid.UUID(task_id), data=serializer.serialize(value))


class LosesFirstForward(Forwarder):
    """The connection drops right after the commit, before the first SDK publish."""

    lost = 0

    def forward(self, channel, forward) -> None:
        if not LosesFirstForward.lost:
            LosesFirstForward.lost += 1
            channel.connection.close()
            raise pika.exceptions.ConnectionClosed(320, "connection dropped (test)")
        super().forward(channel, forward)


def test_a_forward_lost_after_the_commit_is_made_on_redelivery(db_url):
    LosesFirstForward.lost = 0
    with private_vhost("fwd") as admin_url:
        made = Harness(admin_url, db_url, LosesFirstForward)
        try:
            made.start()
            uep = made.user_endpoint()
            task = made.task(uep)
            made.result(uep, ok(task, 42))
            got = made.forwarded(task, timeout_s=30)
            assert LosesFirstForward.lost == 1
            assert [serializer.deserialize(r.data) for r in got] == [42]
            assert made.status(task).status == "success"
        finally:
            made.close()


def test_a_poison_result_fails_its_task_and_the_rest_keep_flowing(harness):
    harness.start()
    uep = harness.user_endpoint()
    nul, nan, after = harness.task(uep), harness.task(uep), harness.task(uep)
    traceback = "Traceback (most recent call last):\n  ValueError: bad\x00byte\n"
    error = messages.ResultErrorDetails(code="RemoteExecutionError", user_message="x\x00y")
    harness.result(
        uep, messages.Result(task_id=uuid.UUID(nul), data=traceback, error_details=error)
    )
    harness.result(
        uep, messages.Result(task_id=uuid.UUID(nan), data="00\nx", details={"t": math.nan})
    )
    harness.result(uep, ok(after, "still flowing"))
    harness.report(uep, uep, {"heartbeat_period": 30})
    assert [serializer.deserialize(r.data) for r in harness.forwarded(after)] == ["still flowing"]
    [forwarded] = harness.forwarded(nul)
    assert forwarded.data == traceback  # the SDK gets the traceback as sent
    stored = harness.status(nul)
    assert stored.status == "failed" and "bad\\x00byte" in stored.exception
    assert harness.forwarded(nan) and harness.status(nan).details == {"t": None}
    deadline = time.monotonic() + 10
    while not harness.heartbeat_of(uep) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert harness.heartbeat_of(uep), "heartbeats stalled behind the poison"


class RefusesOneTask(Forwarder):
    """Something about one result breaks storing it (the kind of bug no test foresaw)."""

    poison: str = ""

    def _record(self, kind, record, delivery):
        def broken(s, topo, d):
            if RefusesOneTask.poison.encode() in d.body:
                raise RuntimeError("cannot store this one")
            return record(s, topo, d)

        return super()._record(kind, broken, delivery)

    def _record_together(self, s, batch):
        if any(RefusesOneTask.poison.encode() in p.delivery.body for p in batch):
            raise RuntimeError("cannot store this batch")
        return super()._record_together(s, batch)


def test_an_unstorable_result_is_an_explicit_error_not_a_redelivery_loop(db_url):
    with private_vhost("fwd") as admin_url:
        made = Harness(admin_url, db_url, RefusesOneTask)
        try:
            made.start()
            uep = made.user_endpoint()
            bad, good = made.task(uep), made.task(uep)
            RefusesOneTask.poison = bad
            made.result(uep, ok(bad, 1))
            made.result(uep, ok(good, 2))
            assert [serializer.deserialize(r.data) for r in made.forwarded(good)] == [2]
            [answer] = made.forwarded(bad)
            assert answer.is_error and "could not store" in answer.data
            assert made.status(bad).status == "failed"
            with made.sessions() as s:
                counts = {(r.kind, r.reason): r.count for r in store.dropped_counts(s)}
            assert counts[("result", "unstorable")] == 1
        finally:
            made.close()


def test_an_error_report_empties_the_queue_and_spares_later_tasks(harness):
    harness.start()
    uep = harness.user_endpoint()
    waiting = [harness.task(uep) for _ in range(3)]
    for task_id in waiting:
        body, props = task_message(
            task_id=task_id,
            function_id=str(uuid.uuid4()),
            function_code="x",
            payload="y",
            resource_specification=None,
            result_serializers=None,
        )
        harness.channel.basic_publish(
            "", harness.topo.task_queue(uep), body, pika.BasicProperties(**props)
        )
    later = harness.task(uep, created_t=time.time() + 3600)
    harness.report(uep, uep, {"error": "no local account for you", "heartbeat_period": 3})
    for task_id in waiting:
        [answer] = harness.forwarded(task_id)
        assert answer.is_error and "no local account" in answer.data
    queue = harness.channel.queue_declare(harness.topo.task_queue(uep), passive=True)
    assert queue.method.message_count == 0, "failed tasks would still run at the next start"
    assert harness.status(later).status == store.PENDING


def test_recording_makes_text_and_json_storable():
    assert recording.storable_text("a\x00b") == "a\\x00b"
    assert recording.storable_json({"x\x00": [math.inf, "n\x00", 1.5, None]}) == {
        "x\\x00": [None, "n\\x00", 1.5, None]
    }


class CountsBatches(Forwarder):
    """Counts the results recorded together, in batches of more than one."""

    together = 0

    def _record_together(self, s, batch):
        recorded = super()._record_together(s, batch)
        if len(batch) > 1:
            CountsBatches.together += sum(p.kind == "result" for p in batch)
        return recorded


def test_a_batch_records_each_result_once_and_one_bad_message_costs_only_itself(db_url):
    """Results waiting before the forwarder starts arrive in batches and are recorded
    together; a batch holding a duplicate, a result from the wrong user endpoint and a
    heartbeat is recorded message by message, each with its own verdict."""
    CountsBatches.together = 0
    with private_vhost("fwd") as admin_url:
        harness = Harness(admin_url, db_url, CountsBatches)
        try:
            uep, other = harness.user_endpoint(), harness.user_endpoint()
            clean = [harness.task(uep) for _ in range(300)]
            for i, task_id in enumerate(clean):
                harness.result(uep, ok(task_id, i))
            harness.start()
            _assert_forwarded_once(harness, clean)
            assert CountsBatches.together >= 200, "the results were not recorded in batches"
            mixed = [harness.task(uep) for _ in range(50)]
            harness.forwarder.stop()
            for i, task_id in enumerate(mixed):
                harness.result(uep, ok(task_id, i))
            harness.result(uep, ok(mixed[3], "a second answer"))
            harness.result(other, ok(mixed[5], "not yours"))
            harness.report(uep, uep, {"heartbeat_period": 30})
            harness.forwarder = CountsBatches(harness.topo, harness.sessions)
            harness.start()
            _assert_forwarded_once(harness, mixed)
            with harness.sessions() as s:
                counts = {(r.kind, r.reason): r.count for r in store.dropped_counts(s)}
            assert counts == {("result", "not_the_tasks_endpoint"): 1}
            assert harness.heartbeat_of(uep)
        finally:
            harness.close()


def _assert_forwarded_once(harness: Harness, tasks: list[str]) -> None:
    """Task ``i`` of ``tasks`` succeeded with ``i``, stored and forwarded exactly once."""
    for i, task_id in enumerate(tasks):
        assert [serializer.deserialize(r.data) for r in harness.forwarded(task_id)] == [i]
    with harness.sessions() as s:
        stored = s.query(schema.Task).filter(schema.Task.id.in_(tasks))
        assert {t.id: serializer.deserialize(t.result) for t in stored} == {
            task_id: i for i, task_id in enumerate(tasks)
        }


def test_finishing_many_tasks_keeps_the_guard_against_finishing_one_twice(db_url):
    sessions = store.open_database(db_url)
    try:
        with sessions.begin() as s:
            s.add(schema.TaskGroup(id="g", owner_id="o"))
            s.flush()
            for task_id in ("a", "b"):
                s.add(
                    schema.Task(
                        id=task_id,
                        task_group_id="g",
                        owner_id="o",
                        function_id="f",
                        endpoint_id="e",
                        user_endpoint_id="u",
                        created_t=1.0,
                    )
                )
        outcome = {"status": "success", "result": "r", "exception": None, "details": {"k": 1}}
        with sessions.begin() as s:
            assert store.finish_tasks(s, {"a": outcome})
        with sessions.begin() as s:
            assert not store.finish_tasks(s, {"a": outcome, "b": outcome}), "a was already done"
            s.rollback()
        with sessions() as s:
            a, b = s.get(schema.Task, "a"), s.get(schema.Task, "b")
            assert (a.status, a.result, a.details, b.status) == (
                "success",
                "r",
                {"k": 1},
                store.PENDING,
            )
            assert a.completion_t and b.completion_t is None
    finally:
        store.dispose(sessions)
