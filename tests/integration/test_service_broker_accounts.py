"""Per-party broker accounts through the real service and RabbitMQ.

What each account can do is tried on the broker itself: an SDK client reads
only its own identity's result queues; a manager reads only its own commands
and is rotated out at re-registration; deleting an endpoint removes its
accounts and queues and fails its waiting tasks; a removed client's account
is swept; the service refuses to run on ``guest`` or on an account that cannot
manage others.
"""

from __future__ import annotations

import urllib.parse
import uuid

import pika
import pytest

from service.account_sweeper import AccountSweeper
from service.broker_admin import BrokerAdmin
from service.broker_provisioning import Provisioner, load_key
from service.routing import Topology
from tests.fixtures_service import _rabbitmqctl, queued_command, vhost_accounts
from wire import amqp, messages, serializer

CODE = serializer.pack_buffers([serializer.serialize(len)])
PAYLOAD = serializer.pack_buffers([serializer.serialize(("ab",)), serializer.serialize({})])


def refused(url: str, action) -> str:
    """What the broker says to ``action`` on a fresh connection with ``url``'s account."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPConnectionError as e:
        return f"no connection: {type(e).__name__}"
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # so a refused publish fails here, not later
        action(channel)
    except pika.exceptions.ChannelClosedByBroker as e:
        return f"{e.reply_code} {e.reply_text}"
    finally:
        if connection.is_open:
            connection.close()
    return ""


def _submit(api, endpoint_id: str, fid: str) -> dict:
    body = {"tasks": {fid: [PAYLOAD]}, "create_queue": True}
    response = api.post(f"/v3/endpoints/{endpoint_id}/submit", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def two_clients(api_service):
    made = []
    for name in ("hana", "ivo"):
        client = api_service.add_client(f"{name}-{uuid.uuid4().hex[:6]}@uni.edu")
        made.append((client, api_service.api(api_service.token(client))))
    yield made
    for _client, api in made:
        api.close()


def test_an_sdk_client_reads_only_its_own_identitys_results(api_service, two_clients):
    (_, hana_api), (_, ivo_api) = two_clients
    endpoint = hana_api.post("/v3/endpoints", json={"endpoint_name": "s", "public": True}).json()
    fid = hana_api.post("/v3/functions", json={"function_name": "f", "function_code": CODE})
    fid = fid.json()["function_uuid"]
    hana_group = _submit(hana_api, endpoint["endpoint_id"], fid)["task_group_id"]
    ivo_fid = ivo_api.post("/v3/functions", json={"function_name": "f", "function_code": CODE})
    ivo_group = _submit(ivo_api, endpoint["endpoint_id"], ivo_fid.json()["function_uuid"])
    hana_conn = hana_api.get("/v2/get_amqp_result_connection_url").json()
    ivo_conn = ivo_api.get("/v2/get_amqp_result_connection_url").json()
    assert hana_conn["connection_url"] != ivo_conn["connection_url"]
    assert hana_api.get("/v2/get_amqp_result_connection_url").json() == hana_conn  # stable
    own = hana_conn["queue_prefix"] + hana_group
    other = ivo_conn["queue_prefix"] + ivo_group["task_group_id"]
    assert refused(hana_conn["connection_url"], lambda ch: ch.basic_get(own)) == ""
    assert "ACCESS_REFUSED" in refused(hana_conn["connection_url"], lambda ch: ch.basic_get(other))
    for action in (
        lambda ch: ch.basic_get("api.service.results"),
        lambda ch: ch.queue_declare(hana_conn["queue_prefix"] + str(uuid.uuid4())),
        lambda ch: ch.basic_publish("api.results", f"{uuid.uuid4()}.results", b"x"),
    ):
        assert "ACCESS_REFUSED" in refused(hana_conn["connection_url"], action)


def test_a_manager_account_is_confined_and_rotated_at_registration(api_service, rabbit_vhost):
    client = api_service.add_client(f"jo-{uuid.uuid4().hex[:6]}@uni.edu")
    with api_service.api(api_service.token(client)) as api:
        first = api.post("/v3/endpoints", json={"endpoint_name": "m"}).json()
        other = api.post("/v3/endpoints", json={"endpoint_name": "n"}).json()
        endpoint_id = first["endpoint_id"]
        url = first["command_queue_info"]["connection_url"]
        commands = first["command_queue_info"]["queue"]
        assert urllib.parse.urlsplit(url).username == f"api.ep.{endpoint_id}"
        assert refused(url, lambda ch: ch.basic_get(commands)) == ""
        for action in (
            lambda ch: ch.basic_get(other["command_queue_info"]["queue"]),
            lambda ch: ch.basic_publish("api.commands", commands, b"{}"),
            lambda ch: ch.basic_publish("api.results", f"{endpoint_id}.results", b"x"),
            lambda ch: ch.basic_publish(
                "api.heartbeats", f"{other['endpoint_id']}.heartbeats", b"x"
            ),
        ):
            assert "ACCESS_REFUSED" in refused(url, action)
        fid = api.post("/v3/functions", json={"function_name": "f", "function_code": CODE})
        _submit(api, endpoint_id, fid.json()["function_uuid"])
        uep = queued_command(rabbit_vhost, first)["kwargs"]["amqp_creds"]
        uep_url = uep["task_queue_info"]["connection_url"]
        assert refused(uep_url, lambda ch: ch.basic_get(uep["task_queue_info"]["queue"])) == ""

        old = pika.BlockingConnection(pika.URLParameters(url))
        again = api.put(f"/v3/endpoints/{endpoint_id}", json={"endpoint_name": "m"}).json()
        assert again["command_queue_info"]["connection_url"] != url
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
            for _ in range(50):
                old.process_data_events(0.1)
        assert "no connection" in refused(url, lambda ch: None)
        assert "no connection" in refused(uep_url, lambda ch: None)  # the old generation's
        new_url = again["command_queue_info"]["connection_url"]
        assert refused(new_url, lambda ch: ch.basic_get(commands)) == ""
        # The pending task's user endpoint got a start command with fresh credentials.
        fresh = queued_command(rabbit_vhost, again)["kwargs"]["amqp_creds"]
        assert fresh["endpoint_id"] == uep["endpoint_id"]
        assert fresh["task_queue_info"]["connection_url"] != uep_url
        assert refused(fresh["task_queue_info"]["connection_url"], lambda ch: None) == ""


def test_deleting_an_endpoint_retires_its_accounts_queues_and_waiting_tasks(
    api_service, rabbit_vhost
):
    client = api_service.add_client(f"kai-{uuid.uuid4().hex[:6]}@uni.edu")
    with api_service.api(api_service.token(client)) as api:
        reg = api.post("/v3/endpoints", json={"endpoint_name": "gone"}).json()
        endpoint_id = reg["endpoint_id"]
        fid = api.post("/v3/functions", json={"function_name": "f", "function_code": CODE})
        sub = _submit(api, endpoint_id, fid.json()["function_uuid"])
        task_id = next(iter(sub["tasks"].values()))[0]
        uep = queued_command(rabbit_vhost, reg)["kwargs"]["amqp_creds"]
        sdk = api.get("/v2/get_amqp_result_connection_url").json()
        vhost = urllib.parse.unquote(urllib.parse.urlsplit(rabbit_vhost).path[1:])
        mine = {f"api.ep.{endpoint_id}", f"api.uep.{uep['endpoint_id']}"}
        assert mine <= set(vhost_accounts(vhost))
        assert api.delete(f"/v2/endpoints/{endpoint_id}").status_code == 200
        assert not mine & set(vhost_accounts(vhost))
        task = api.get(f"/v2/tasks/{task_id}").json()
        assert task["status"] == "failed" and "deleted" in task["exception"]
    connection = amqp.connect(sdk["connection_url"])
    try:
        _m, _p, raw = connection.channel().basic_get(sdk["queue_prefix"] + sub["task_group_id"])
    finally:
        connection.close()
    result = messages.unpack(raw)
    assert result.is_error and "deleted" in result.data
    gone = refused(
        rabbit_vhost, lambda ch: ch.queue_declare(uep["task_queue_info"]["queue"], passive=True)
    )
    assert "NOT_FOUND" in gone
    gone = refused(
        rabbit_vhost, lambda ch: ch.queue_declare(reg["command_queue_info"]["queue"], passive=True)
    )
    assert "NOT_FOUND" in gone


def test_the_sweeper_removes_a_removed_clients_account_on_its_second_pass(tmp_path):
    from service import auth, store
    from tests.fixtures_service import private_vhost

    with private_vhost("sweep") as admin_url:
        sessions = store.open_database(f"sqlite:///{tmp_path / 's.db'}")
        topo = Topology(admin_url)
        provisioner = Provisioner(topo, BrokerAdmin.for_url(admin_url), load_key(sessions))
        with sessions.begin() as s:
            keep, _ = auth.add_client(s, "keep@uni.edu", [], None)
            drop, _ = auth.add_client(s, "drop@uni.edu", [], None)
            for client in (keep, drop):
                provisioner.sdk_connection_url(s, client.client_id, client.identity_id)
            names = {c.client_id: f"sdk.{c.client_id}" for c in (keep, drop)}
        with sessions.begin() as s:
            s.delete(s.get(type(drop), drop.client_id))
        vhost = urllib.parse.unquote(urllib.parse.urlsplit(admin_url).path[1:])
        sweeper = AccountSweeper(provisioner, sessions)
        assert sweeper.sweep() == []  # first sighting: only suspected
        assert names[drop.client_id] in vhost_accounts(vhost)
        assert sweeper.sweep() == [names[drop.client_id]]
        assert names[drop.client_id] not in vhost_accounts(vhost)
        assert names[keep.client_id] in vhost_accounts(vhost)
        store.dispose(sessions)


def test_removing_a_client_can_remove_its_broker_account_at_once(
    api_service, rabbit_vhost, service_cli
):
    client = api_service.add_client(f"lu-{uuid.uuid4().hex[:6]}@uni.edu")
    with api_service.api(api_service.token(client)) as api:
        url = api.get("/v2/get_amqp_result_connection_url").json()["connection_url"]
    assert refused(url, lambda ch: None) == ""
    args = ("client", "remove", client["client_id"], "--db", api_service.db_url)
    done = service_cli(*args, "--amqp-url", rabbit_vhost, "--amqp-prefix", "api.")
    assert done.returncode == 0, done.stderr
    assert f"removed its broker account api.sdk.{client['client_id']}" in done.stdout
    assert "no connection" in refused(url, lambda ch: None)
    again = service_cli(*args)
    assert again.returncode == 1 and "no client" in again.stderr


def test_load_key_is_made_once_and_kept(tmp_path):
    from service import store

    sessions = store.open_database(f"sqlite:///{tmp_path / 'k.db'}")
    key = load_key(sessions)
    assert len(key) == 32 and load_key(sessions) == key
    store.dispose(sessions)


def test_the_service_refuses_guest_and_accounts_that_cannot_manage(service_cli, tmp_path):
    db = f"sqlite:///{tmp_path / 'g.db'}"
    guest = service_cli("start", "--amqp-url", "amqp://guest:guest@127.0.0.1:5672/%2F", "--db", db)
    assert guest.returncode == 2 and "refusing RabbitMQ's default 'guest'" in guest.stderr
    remote = service_cli(
        "start",
        "--amqp-url",
        "amqp://guest:guest@broker.example.org/",
        "--dev-allow-guest",
        "--db",
        db,
    )
    assert remote.returncode == 2 and "guest" in remote.stderr
    name, secret = f"ca-test-plain-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    _rabbitmqctl("add_user", name, secret)
    try:
        _rabbitmqctl("set_user_tags", name, "management")
        plain = service_cli(
            "start", "--amqp-url", f"amqp://{name}:{secret}@127.0.0.1:5672/%2F", "--db", db
        )
    finally:
        _rabbitmqctl("delete_user", name)
    assert plain.returncode == 2 and "lacks the 'administrator' tag" in plain.stderr
    assert secret not in plain.stderr


def test_broker_admin_errors_never_show_the_password():
    from service.broker_admin import BrokerAdminError

    admin = BrokerAdmin("http://127.0.0.1:1/api", "svc", "hunter2-secret", "/")
    with pytest.raises(BrokerAdminError) as caught:
        admin.check()
    assert "hunter2" not in str(caught.value) and "unreachable" in str(caught.value)
