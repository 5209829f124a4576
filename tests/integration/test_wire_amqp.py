"""wire.amqp against the real RabbitMQ on 127.0.0.1:5672."""

import uuid

import pytest

from wire.amqp import AmqpConnectionError, connect, publish_kwargs
from wire.messages import Result, pack, unpack
from wire.queue_info import WriteQueueInfo

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


def test_publish_with_queue_publish_kwargs_and_read_back():
    queue = f"ca-test-wire-{uuid.uuid4().hex[:8]}"
    conn = connect(BROKER, client_name="wire-test")
    try:
        ch = conn.channel()
        ch.queue_declare(queue, auto_delete=True)
        ch.confirm_delivery()
        info = WriteQueueInfo.from_dict(
            {
                "connection_url": BROKER,
                "exchange": "",
                "queue": queue,
                "queue_publish_kwargs": {
                    "routing_key": queue,
                    "mandatory": True,
                    "properties": {"delivery_mode": 2},
                },
            }
        )
        result = Result(task_id=uuid.uuid4(), data="00\ngARLKi4=\n")
        ch.basic_publish(body=pack(result), **publish_kwargs(info))
        method, props, body = ch.basic_get(queue, auto_ack=True)
        assert method is not None and props.delivery_mode == 2
        assert unpack(body) == result
    finally:
        conn.close()


def test_bad_credentials_error_hides_the_password():
    with pytest.raises(AmqpConnectionError) as err:
        connect("amqp://guest:wrong-pass-123@127.0.0.1:5672/%2F", connection_attempts=1)
    assert "wrong-pass-123" not in str(err.value)
    assert "guest:***@" in str(err.value)


def test_unreachable_broker_is_a_wire_error():
    with pytest.raises(AmqpConnectionError, match="cannot connect"):
        connect("amqp://u:pw@127.0.0.1:1/%2F", connection_attempts=1)
