"""mep.task_queue against the real RabbitMQ: how many tasks wait for an exited endpoint.

Asked the way the manager asks: on its own connection, with a manager's
account, which may not read the task queue (a passive declare needs no
permission).
"""

import uuid

import pika
import pytest

from mep.task_queue import waiting_tasks
from service import broker_accounts
from service.broker_admin import BrokerAdmin
from service.routing import Topology
from tests.fixtures_service import private_vhost


@pytest.fixture
def manager_connection():
    """An admin connection and a connection with a manager's least-privilege account."""
    with private_vhost("waiting") as admin_url:
        topo = Topology(admin_url)
        grant = broker_accounts.manager_grant(topo, str(uuid.uuid4()))
        BrokerAdmin.for_url(admin_url).apply(grant, "manager-pw")
        admin = pika.BlockingConnection(pika.URLParameters(admin_url))
        mine = pika.BlockingConnection(
            pika.URLParameters(topo.party_url(grant.username, "manager-pw"))
        )
        try:
            yield admin, mine
        finally:
            mine.close()
            admin.close()


def test_counts_ready_and_returned_tasks(manager_connection):
    admin, mine = manager_connection
    name = f"{uuid.uuid4()}.tasks"
    channel = admin.channel()
    channel.queue_declare(name, durable=True)
    assert waiting_tasks(mine, name) == 0
    for _ in range(3):
        channel.basic_publish("", name, b"task")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="ACCESS_REFUSED"):
        mine.channel().basic_get(name)  # it may count the tasks, never take one
    consumer = admin.channel()
    method, _, _ = consumer.basic_get(name, auto_ack=False)
    assert method is not None and waiting_tasks(mine, name) == 2
    consumer.close()  # an endpoint that dies holding a task gives it back
    assert waiting_tasks(mine, name) == 3


def test_unknown_queue_or_no_connection_is_none_not_an_error(manager_connection):
    _admin, mine = manager_connection
    assert waiting_tasks(mine, f"ca-test-missing-{uuid.uuid4().hex}") is None
    assert mine.is_open  # only the asking channel closed
    assert waiting_tasks(None, "q") is None
