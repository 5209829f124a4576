"""The service's periodic work on real RabbitMQ and SQLite/PostgreSQL.

A submit killed between its commit and its publish is finished by the
housekeeper from the outbox; tasks whose user endpoint never starts fail with a
message after the start timeout instead of waiting forever.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pika
import pytest

from service import schema, store
from service.broker import Publisher
from service.broker_admin import BrokerAdmin
from service.broker_provisioning import Provisioner, load_key
from service.housekeeper import OUTBOX_AGE_S, Housekeeper
from service.routing import Topology, task_message
from tests.fixtures_service import private_vhost
from wire import messages


@pytest.fixture
def house(db_url):
    with private_vhost("house") as admin_url:
        topo = Topology(admin_url)
        sessions = store.open_database(db_url)
        publisher = Publisher(topo)
        publisher.ensure_topology()
        provisioner = Provisioner(topo, BrokerAdmin.for_url(admin_url), load_key(sessions))
        keeper = Housekeeper(topo, sessions, publisher, provisioner, start_timeout_s=600)
        connection = pika.BlockingConnection(pika.URLParameters(admin_url))
        try:
            yield keeper, connection.channel()
        finally:
            connection.close()
            publisher.close()
            store.dispose(sessions)


def _setup(keeper, channel, created_t: float, heartbeat: float | None = None):
    """An endpoint, a user endpoint and one pending task with its outbox row."""
    endpoint_id, uep_id, task_id, group = (str(uuid.uuid4()) for _ in range(4))
    body, props = task_message(
        task_id=task_id,
        function_id=str(uuid.uuid4()),
        function_code="code",
        payload="payload",
        resource_specification=None,
        result_serializers=None,
    )
    with keeper.sessions.begin() as s:
        s.add(schema.Endpoint(id=endpoint_id, owner_id="o", name="e", broker_generation=1))
        s.add(schema.TaskGroup(id=group, owner_id="o"))
        s.add(
            schema.UserEndpoint(
                id=uep_id,
                endpoint_id=endpoint_id,
                identity_id="o",
                name=f"uep.{uep_id}",
                identity_set=[{"id": "o", "sub": "o", "username": "o@x.org"}],
                last_heartbeat=heartbeat,
            )
        )
        s.flush()
        s.add(
            schema.Task(
                id=task_id,
                task_group_id=group,
                owner_id="o",
                function_id=str(uuid.uuid4()),
                endpoint_id=endpoint_id,
                user_endpoint_id=uep_id,
                created_t=created_t,
            )
        )
        s.add(
            schema.OutboxTask(
                task_id=task_id,
                user_endpoint_id=uep_id,
                body=body,
                headers=props["headers"],
                created_t=created_t,
            )
        )
    channel.queue_declare(keeper.topo.sdk_queue("o", group), durable=True)
    return endpoint_id, uep_id, task_id, group


def test_what_a_killed_submit_left_in_the_outbox_is_published(house):
    keeper, channel = house
    now = time.time()
    endpoint_id, uep_id, task_id, _ = _setup(keeper, channel, now - OUTBOX_AGE_S - 5)
    _young = _setup(keeper, channel, now - 1)
    assert keeper.resend_unsent(now) == 1
    method, props, body = channel.basic_get(keeper.topo.task_queue(uep_id), auto_ack=True)
    assert method is not None and str(messages.unpack(body).task_id) == task_id
    assert props.headers["task_uuid"] == task_id
    _m, cprops, raw = channel.basic_get(keeper.topo.command_queue(endpoint_id), auto_ack=True)
    command = json.loads(raw)
    assert (
        command["kwargs"]["name"] == f"uep.{uep_id}" and cprops.user_id == keeper.topo.service_user
    )
    with keeper.sessions() as s:
        assert [r.task_id for r in store.unsent(s, now + 1)] == [_young[2]]


def test_tasks_whose_user_endpoint_never_starts_fail_after_the_timeout(house):
    keeper, channel = house
    now = time.time()
    _ep, stuck_uep, stuck, group = _setup(keeper, channel, now - 700)
    channel.queue_declare(keeper.topo.task_queue(stuck_uep), durable=True)
    channel.basic_publish("", keeper.topo.task_queue(stuck_uep), b"stale task")
    _ep2, _uep2, alive, _g2 = _setup(keeper, channel, now - 700, heartbeat=now - 30)
    _ep3, _uep3, recent, _g3 = _setup(keeper, channel, now - 60)
    assert keeper.time_out_starts(now) == 1
    with keeper.sessions() as s:
        failed = s.get(schema.Task, stuck)
        assert failed.status == "failed" and "has not started in the 600 s" in failed.exception
        assert s.get(schema.Task, alive).status == store.PENDING
        assert s.get(schema.Task, recent).status == store.PENDING
    _m, _p, raw = channel.basic_get(keeper.topo.sdk_queue("o", group), auto_ack=True)
    assert messages.unpack(raw).is_error
    depth = channel.queue_declare(keeper.topo.task_queue(stuck_uep), passive=True)
    assert depth.method.message_count == 0
    keeper.start_timeout_s = 0
    assert keeper.time_out_starts(now + 10_000) == 0


def test_a_finished_submit_leaves_nothing_in_the_outbox(api_service):
    from wire import serializer

    client = api_service.add_client(f"ola-{uuid.uuid4().hex[:6]}@uni.edu")
    code = serializer.pack_buffers([serializer.serialize(len)])
    payload = serializer.pack_buffers([serializer.serialize(("x",)), serializer.serialize({})])
    with api_service.api(api_service.token(client)) as api:
        ep = api.post("/v3/endpoints", json={"endpoint_name": "o"}).json()["endpoint_id"]
        fid = api.post("/v3/functions", json={"function_name": "f", "function_code": code})
        fid = fid.json()["function_uuid"]
        sub = api.post(f"/v3/endpoints/{ep}/submit", json={"tasks": {fid: [payload] * 3}})
        assert sub.status_code == 200
    sessions = store.open_database(api_service.db_url)
    try:
        with sessions() as s:
            assert store.unsent(s, time.time() + 60) == []
    finally:
        store.dispose(sessions)


def test_finished_actions_are_released_after_their_release_after(house):
    keeper, _channel = house
    now = time.time()
    moment = schema.utcnow()

    def action(release_at):
        return schema.Action(
            id=str(uuid.uuid4()),
            creator_id="o",
            request_id=str(uuid.uuid4()),
            request_digest="d",
            task_group_id=str(uuid.uuid4()),
            task_ids=[],
            release_after_s=60,
            release_at=release_at,
        )

    expired = action(moment - dt.timedelta(seconds=1))
    later = action(moment + dt.timedelta(hours=1))
    running = action(None)
    with keeper.sessions.begin() as s:
        s.add_all([expired, later, running])
    keeper.tick(now)
    with keeper.sessions.begin() as s:
        left = {a.id for a in s.query(schema.Action)}
    assert left == {later.id, running.id}
    assert keeper.release_actions(now + 2 * 3600) == 1
