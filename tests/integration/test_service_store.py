"""The store, auth and the forwarder's decisions against SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid

import pytest

from service import auth, forwarder, schema, store
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


def test_results_are_recorded_once_and_unknown_ones_dropped(sessions):
    with sessions.begin() as s:
        task_id = _task(s, str(uuid.uuid4()))
    raw = messages.pack(messages.Result(task_id=uuid.UUID(task_id), data="00\nabc"))
    with sessions.begin() as s:
        [forward] = forwarder.record_result(s, raw)
        assert forward.body == raw
    with sessions.begin() as s:
        assert forwarder.record_result(s, raw) == []
        task = s.get(schema.Task, task_id)
        assert task.status == "success" and task.result == "00\nabc" and task.completion_t
    unknown = messages.pack(messages.Result(task_id=uuid.uuid4(), data="x"))
    with sessions.begin() as s:
        assert forwarder.record_result(s, unknown) == []
        assert forwarder.record_result(s, b"\x02junk") == []
        assert forwarder.record_result(s, routing_heartbeat(uuid.uuid4(), {})) == []


def routing_heartbeat(endpoint_id: uuid.UUID, state: dict) -> bytes:
    return messages.pack(
        messages.EPStatusReport(endpoint_id=endpoint_id, global_state=state, task_statuses={})
    )


def test_error_report_fails_pending_tasks_of_that_user_endpoint(sessions):
    uep_id, other_uep = str(uuid.uuid4()), str(uuid.uuid4())
    with sessions.begin() as s:
        pending = _task(s, uep_id)
        done = _task(s, uep_id)
        elsewhere = _task(s, other_uep)
        ep_id = s.get(schema.Task, pending).endpoint_id
        s.add(schema.UserEndpoint(id=uep_id, endpoint_id=ep_id, identity_id="o", name="u"))
    with sessions.begin() as s:
        store.finish_task(s, done, status="success", result="00\nx")
    report = routing_heartbeat(
        uuid.UUID(uep_id), {"error": "no account for you", "heartbeat_period": 3}
    )
    with sessions.begin() as s:
        forwards = forwarder.record_heartbeat(s, report, now=1.0)
        pending_group = s.get(schema.Task, pending).task_group_id
    assert [f.task_group_id for f in forwards] == [pending_group]
    result = messages.unpack(forwards[0].body)
    assert result.is_error and result.data == "no account for you"
    with sessions.begin() as s:
        assert s.get(schema.Task, pending).exception == "no account for you"
        assert s.get(schema.Task, done).status == "success"
        assert s.get(schema.Task, elsewhere).status == store.PENDING
        assert s.get(schema.UserEndpoint, uep_id).last_error == "no account for you"


def test_heartbeats_update_endpoint_status(sessions):
    ep_id = str(uuid.uuid4())
    with sessions.begin() as s:
        s.add(schema.Endpoint(id=ep_id, owner_id="o", name="e"))
    with sessions.begin() as s:
        assert (
            forwarder.record_heartbeat(
                s, routing_heartbeat(uuid.UUID(ep_id), {"heartbeat_period": 5}), 42.0
            )
            == []
        )
        assert forwarder.record_heartbeat(s, routing_heartbeat(uuid.uuid4(), {}), 42.0) == []
        assert forwarder.record_heartbeat(s, b"not a message", 42.0) == []
    with sessions.begin() as s:
        ep = s.get(schema.Endpoint, ep_id)
        assert (ep.last_heartbeat, ep.heartbeat_period) == (42.0, 5.0)
