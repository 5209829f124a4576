"""mep.task_queue against the real RabbitMQ: how many tasks wait for an exited endpoint."""

import uuid

import pika

from mep.task_queue import waiting_tasks
from wire.queue_info import ReadQueueInfo

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


def test_counts_ready_and_returned_tasks():
    name = f"ca-test-waiting-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(BROKER))
    try:
        channel = connection.channel()
        channel.queue_declare(name, auto_delete=False)
        info = ReadQueueInfo(BROKER, name, "")
        assert waiting_tasks(info) == 0
        for _ in range(3):
            channel.basic_publish("", name, b"task")
        consumer = pika.BlockingConnection(pika.URLParameters(BROKER))
        taken = consumer.channel()
        method, _, _ = taken.basic_get(name, auto_ack=False)
        assert method is not None
        consumer.close()  # an endpoint that dies holding a task gives it back
        assert waiting_tasks(info) == 3
    finally:
        connection.channel().queue_delete(name)
        connection.close()


def test_unknown_queue_or_broker_is_none_not_an_error():
    assert waiting_tasks(ReadQueueInfo(BROKER, f"ca-test-missing-{uuid.uuid4().hex}", "")) is None
    assert waiting_tasks(ReadQueueInfo("amqp://u:pw@127.0.0.1:1/%2F", "q", "")) is None
