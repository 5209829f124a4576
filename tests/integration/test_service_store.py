"""The store, auth and the forwarder's decisions against SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from service import auth, recording, schema, store
from service.routing import Topology
from wire import messages


@pytest.fixture
def sessions(db_url):
    factory = store.open_database(db_url)
    yield factory
    store.dispose(factory)


def _task(s, uep_id: str, owner: str = "o") -> str:
    group = schema.TaskGroup(id=str(uuid.uuid4()), owner_id=owner)
    ep = schema.Endpoint(id=str(uuid.uuid4()), owner_id=owner, name="e")
    s.add_all([group, ep])
    s.flush()
    task = schema.Task(
        id=str(uuid.uuid4()),
        task_group_id=group.id,
        owner_id=owner,
        function_id=str(uuid.uuid4()),
        endpoint_id=ep.id,
        user_endpoint_id=uep_id,
        created_t=time.time(),
    )
    s.add(task)
    return task.id


def test_clients_identities_and_tokens(sessions):
    with sessions.begin() as s:
        client, secret = auth.add_client(s, "fay@uni.edu", ["fay@lab.org", "fay@uni.edu"], None)
        client_id = client.client_id
    with sessions.begin() as s:
        client = auth.authenticate_client(s, client_id, secret)
        with pytest.raises(auth.AuthError):
            auth.authenticate_client(s, client_id, secret + "x")
        [issued] = auth.issue_tokens(s, client, auth.COMPUTE_SCOPE, ttl_s=60)
    with sessions.begin() as s:
        caller = auth.caller_for_token(s, issued.access_token)
        assert [i["username"] for i in caller.identities] == ["fay@uni.edu", "fay@lab.org"]
        assert caller.identities[0]["id"] == caller.identities[0]["sub"]
        assert caller.identities[0]["status"] == "used"
        assert caller.resource_server == "funcx_service"
        with pytest.raises(auth.AuthError, match="expired"):
            auth.caller_for_token(s, issued.access_token, now=time.time() + 61)
        with pytest.raises(auth.AuthError, match="not valid"):
            auth.caller_for_token(s, "nope")
    with sessions.begin() as s:
        again, _ = auth.add_client(s, "fay@lab.org", [], None)
        assert again.identity_id == caller.identities[1]["id"]


TOPO = Topology("amqp://svc:pw@127.0.0.1:5672/v", "p.")


def result_from(sender: str, task_id: str, user_id: str | None = None) -> recording.Delivery:
    raw = messages.pack(messages.Result(task_id=uuid.UUID(task_id), data="00\nabc"))
    return recording.Delivery(f"{sender}.results", user_id, raw)


def report_from(sender: str, about: str, state: dict, user_id: str | None = None):
    raw = messages.pack(
        messages.EPStatusReport(endpoint_id=uuid.UUID(about), global_state=state, task_statuses={})
    )
    return recording.Delivery(f"{sender}.heartbeats", user_id, raw)


def refused(call, reason: str) -> None:
    with pytest.raises(recording.Refused) as caught:
        call()
    assert caught.value.reason == reason, caught.value.detail


def test_a_result_counts_once_and_only_from_the_tasks_user_endpoint(sessions):
    uep, other = str(uuid.uuid4()), str(uuid.uuid4())
    with sessions.begin() as s:
        task_id = _task(s, uep, owner="alice-id")
        group = s.get(schema.Task, task_id).task_group_id
    record = recording.record_result
    with sessions.begin() as s:
        refused(lambda: record(s, TOPO, result_from(other, task_id)), "not_the_tasks_endpoint")
        refused(
            lambda: record(s, TOPO, result_from(uep, task_id, user_id=f"p.uep.{other}")),
            "user_id",
        )
        refused(lambda: record(s, TOPO, result_from("results", task_id)), "routing_key")
        refused(lambda: record(s, TOPO, result_from(uep.upper(), task_id)), "routing_key")
        assert s.get(schema.Task, task_id).status == store.PENDING
    with sessions.begin() as s:
        [forward] = record(s, TOPO, result_from(uep, task_id, user_id=f"p.uep.{uep}")).forwards
        assert forward.queue == f"p.tg.alice-id.{group}"
        assert forward.body == result_from(uep, task_id).body
    with sessions.begin() as s:
        assert record(s, TOPO, result_from(uep, task_id)).forwards == []
        again = dataclasses.replace(result_from(uep, task_id), redelivered=True)
        assert len(record(s, TOPO, again).forwards) == 1  # its first forward may have been lost
        task = s.get(schema.Task, task_id)
        assert task.status == "success" and task.result == "00\nabc" and task.completion_t
    with sessions.begin() as s:
        refused(lambda: record(s, TOPO, result_from(uep, str(uuid.uuid4()))), "unknown_task")
        junk = recording.Delivery(f"{uep}.results", None, b"\x02junk")
        refused(lambda: record(s, TOPO, junk), "malformed")
        report = report_from(uep, uep, {}).body
        refused(
            lambda: record(s, TOPO, recording.Delivery(f"{uep}.results", None, report)), "malformed"
        )


def test_a_batch_of_results_gets_the_verdicts_and_forwards_of_one_by_one(sessions):
    """The forwarder's batch path reads plain rows; it must decide as the ORM path does."""
    uep, other = str(uuid.uuid4()), str(uuid.uuid4())
    with sessions.begin() as s:
        tasks = [_task(s, uep, owner="alice-id") for _ in range(3)]
        s.get(schema.Endpoint, s.get(schema.Task, tasks[0]).endpoint_id).high_assurance = True
        groups = [s.get(schema.Task, t).task_group_id for t in tasks]
    batch = [result_from(uep, t, user_id=f"p.uep.{uep}") for t in tasks]
    with sessions.begin() as s:
        for wrong, reason in (
            (result_from(other, tasks[1]), "not_the_tasks_endpoint"),
            (result_from(uep, str(uuid.uuid4())), "unknown_task"),
            (result_from(uep, tasks[1], user_id=f"p.uep.{other}"), "user_id"),
        ):
            refused(lambda w=wrong: recording.record_results(s, TOPO, [*batch, w]), reason)
    with sessions.begin() as s:
        assert {s.get(schema.Task, t).status for t in tasks} == {store.PENDING}
        recorded = recording.record_results(s, TOPO, [*batch, batch[2]])
    forwards = [r.forwards for r in recorded]
    assert [[(f.queue, f.body, f.high_assurance) for f in fs] for fs in forwards] == [
        [(f"p.tg.alice-id.{groups[0]}", batch[0].body, True)],
        [(f"p.tg.alice-id.{groups[1]}", batch[1].body, False)],
        [(f"p.tg.alice-id.{groups[2]}", batch[2].body, False)],
        [],  # the same result twice in one batch is forwarded once
    ]
    with sessions.begin() as s:
        assert {s.get(schema.Task, t).status for t in tasks} == {"success"}
        assert [r.forwards for r in recording.record_results(s, TOPO, batch)] == [[], [], []]
        again = [dataclasses.replace(d, redelivered=True) for d in batch]
        assert [len(r.forwards) for r in recording.record_results(s, TOPO, again)] == [1, 1, 1]


def test_an_error_report_fails_only_the_senders_own_pending_tasks(sessions):
    uep_id, other_uep = str(uuid.uuid4()), str(uuid.uuid4())
    with sessions.begin() as s:
        pending = _task(s, uep_id)
        done = _task(s, uep_id)
        elsewhere = _task(s, other_uep)
        ep_id = s.get(schema.Task, pending).endpoint_id
        for uid in (uep_id, other_uep):
            s.add(schema.UserEndpoint(id=uid, endpoint_id=ep_id, identity_id="o", name=uid))
    with sessions.begin() as s:
        store.finish_task(s, done, status="success", result="00\nx")
    error = {"error": "no account for you", "heartbeat_period": 3}
    with sessions.begin() as s:
        forged = report_from(other_uep, uep_id, error)
        refused(
            lambda: recording.record_heartbeat(s, TOPO, forged, 1.0), "not_the_senders_endpoint"
        )
    with sessions.begin() as s:
        now = time.time()
        recorded = recording.record_heartbeat(s, TOPO, report_from(uep_id, uep_id, error), now)
        forwards = recorded.forwards
        pending_group = s.get(schema.Task, pending).task_group_id
    assert [f.queue for f in forwards] == [f"p.tg.o.{pending_group}"]
    assert recorded.purge.queue == f"p.{uep_id}.tasks" and recorded.purge.before == now
    result = messages.unpack(forwards[0].body)
    assert result.is_error and result.data == "no account for you"
    with sessions.begin() as s:
        assert s.get(schema.Task, pending).exception == "no account for you"
        assert s.get(schema.Task, done).status == "success"
        assert s.get(schema.Task, elsewhere).status == store.PENDING
        assert s.get(schema.UserEndpoint, uep_id).last_error == "no account for you"


def test_a_manager_speaks_for_itself_and_its_own_user_endpoints_only(sessions):
    uep_id, stranger_ep = str(uuid.uuid4()), str(uuid.uuid4())
    with sessions.begin() as s:
        pending = _task(s, uep_id)
        ep_id = s.get(schema.Task, pending).endpoint_id
        s.add(schema.UserEndpoint(id=uep_id, endpoint_id=ep_id, identity_id="o", name="u"))
        s.add(schema.Endpoint(id=stranger_ep, owner_id="x", name="x"))
    error = {"error": "mapping failed", "heartbeat_period": 3}
    beat = recording.record_heartbeat
    with sessions.begin() as s:
        refused(
            lambda: beat(s, TOPO, report_from(stranger_ep, uep_id, error), 5.0),
            "not_the_senders_endpoint",
        )
        refused(
            lambda: beat(
                s, TOPO, report_from(ep_id, ep_id, {}, user_id=f"p.ep.{stranger_ep}"), 5.0
            ),
            "user_id",
        )
        refused(
            lambda: beat(s, TOPO, report_from(str(uuid.uuid4()), ep_id, {}), 5.0),
            "unknown_endpoint",
        )
        refused(
            lambda: beat(s, TOPO, recording.Delivery(f"{ep_id}.heartbeats", None, b"nope"), 5.0),
            "malformed",
        )
        assert s.get(schema.Task, pending).status == store.PENDING
    with sessions.begin() as s:
        ok = beat(
            s, TOPO, report_from(ep_id, ep_id, {"heartbeat_period": 5}, f"p.ep.{ep_id}"), 42.0
        )
        assert ok.forwards == [] and ok.purge is None
        [forward] = beat(s, TOPO, report_from(ep_id, uep_id, error), time.time()).forwards
    assert messages.unpack(forward.body).data == "mapping failed"
    with sessions.begin() as s:
        ep = s.get(schema.Endpoint, ep_id)
        assert (ep.last_heartbeat, ep.heartbeat_period) == (42.0, 5.0)
        assert s.get(schema.Task, pending).exception == "mapping failed"


def test_refusals_are_counted_by_kind_and_reason(sessions):
    with sessions.begin() as s:
        store.count_dropped(s, "result", "user_id", "first", 1.0)
        store.count_dropped(s, "result", "user_id", "second\x00", 2.0)
        store.count_dropped(s, "heartbeat", "malformed", "x", 3.0)
    with sessions() as s:
        rows = [
            (r.kind, r.reason, r.count, r.last_at, r.last_detail) for r in store.dropped_counts(s)
        ]
    assert rows == [
        ("heartbeat", "malformed", 1, 3.0, "x"),
        ("result", "user_id", 2, 2.0, "second\\x00"),
    ]


def test_a_database_made_before_an_index_existed_gets_it_when_opened(db_url):
    from sqlalchemy import inspect

    factory = store.open_database(db_url)
    engine = factory.kw["bind"]
    [index] = [i for i in schema.Task.__table__.indexes if i.name == "ix_tasks_owner_created"]
    index.drop(engine)
    assert "ix_tasks_owner_created" not in {i["name"] for i in inspect(engine).get_indexes("tasks")}
    store.dispose(factory)
    factory = store.open_database(db_url)
    try:
        names = {i["name"] for i in inspect(factory.kw["bind"]).get_indexes("tasks")}
        assert {"ix_tasks_owner_created", "ix_tasks_endpoint_completion"} <= names
    finally:
        store.dispose(factory)


def test_a_reported_state_is_stored_cut_to_a_bounded_size(sessions):
    """A user endpoint's report is what it says: megabytes of it are not kept."""
    uep_id = str(uuid.uuid4())
    with sessions.begin() as s:
        ep_id = s.get(schema.Task, _task(s, uep_id)).endpoint_id
        s.add(schema.UserEndpoint(id=uep_id, endpoint_id=ep_id, identity_id="o", name="u"))
    nested: dict = {}
    for _ in range(50):
        nested = {"n": nested}
    state = {
        "heartbeat_period": 3,
        "config_raw": "x" * 2_000_000,
        "many": list(range(100_000)),
        "nested": nested,
    }
    with sessions.begin() as s:
        recording.record_heartbeat(s, TOPO, report_from(uep_id, uep_id, state), time.time())
    with sessions() as s:
        kept = s.get(schema.UserEndpoint, uep_id).last_state
    assert kept["heartbeat_period"] == 3
    assert kept["config_raw"].endswith("[cut by the service]") and len(kept["config_raw"]) < 17_000
    assert kept["many"] == list(range(recording.STATE_ITEMS_LIMIT))
    assert "cut by the service" in str(kept["nested"]) and len(str(kept["nested"])) < 300


def test_a_submit_is_journaled_with_its_outbox_and_leaves_it_once_sent(sessions):
    with sessions.begin() as s:
        group = schema.TaskGroup(id=str(uuid.uuid4()), owner_id="o")
        ep = schema.Endpoint(id=str(uuid.uuid4()), owner_id="o", name="e")
        s.add_all([group, ep])
    ids = [str(uuid.uuid4()) for _ in range(300)]
    now = time.time()
    tasks = [
        {
            "id": task_id,
            "task_group_id": group.id,
            "owner_id": "o",
            "function_id": "f",
            "endpoint_id": ep.id,
            "user_endpoint_id": "u",
            "status": store.PENDING,
            "created_t": now,
        }
        for task_id in ids
    ]
    outbox = [
        {
            "task_id": task_id,
            "user_endpoint_id": "u",
            "body": task_id.encode() + b"\x00\xff",
            "headers": {"task_uuid": task_id},
            "created_t": now,
        }
        for task_id in ids
    ]
    with sessions.begin() as s:
        store.journal_tasks(s, tasks, outbox)
        store.journal_tasks(s, [], [])
    with sessions() as s:
        stored = {
            t.id: t for t in s.query(schema.Task).filter(schema.Task.task_group_id == group.id)
        }
        assert set(stored) == set(ids)
        assert {(t.status, t.owner_id, t.user_endpoint_id) for t in stored.values()} == {
            (store.PENDING, "o", "u")
        }
        unsent = {r.task_id: r for r in store.unsent(s, now + 1)}
        assert set(unsent) == set(ids)
        sample = unsent[ids[7]]
        assert sample.body == ids[7].encode() + b"\x00\xff"
        assert sample.headers == {"task_uuid": ids[7]}
    with sessions.begin() as s:
        store.sent(s, ids[:250])
    with sessions() as s:
        assert sorted(r.task_id for r in store.unsent(s, now + 1)) == sorted(ids[250:])
