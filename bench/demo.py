"""``make demo``: run the main job as far as it exists, on real components.

Today this is the protocol path: the official Globus Compute SDK serializes a
function call exactly as its Executor does; wire/ packs it as a Task and sends it
through the real RabbitMQ on 127.0.0.1:5672; a consumer built on wire/ runs it and
publishes a Result; the official globus-compute-common and SDK decode that result.
The full appliance (service -> manager -> user endpoint as a local account) will
replace this once those parts land; the output says which one ran.
"""

from __future__ import annotations

import time
import uuid

from globus_compute_common import messagepack
from globus_compute_sdk.serialize import ComputeSerializer

from wire.amqp import connect
from wire.messages import Result, Task, pack, unpack_as
from wire.serializer import serialize_result, unpack_task_buffer

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


def researcher_function(name, greeting="Hello"):
    import getpass
    import socket

    return f"{greeting}, {name}, from {getpass.getuser()}@{socket.gethostname()}"


def _get(channel, queue: str, timeout_s: float = 10.0) -> bytes:
    """Wait for one message: a publish is asynchronous, so the queue may lag."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return body
        channel.connection.sleep(0.05)
    raise TimeoutError(f"nothing arrived on {queue} within {timeout_s} s")


def _submit(channel, queue: str) -> uuid.UUID:
    sdk = ComputeSerializer()
    function_code = sdk.pack_buffers([sdk.serialize(researcher_function)])
    payload = sdk.pack_buffers([sdk.serialize(("world",)), sdk.serialize({"greeting": "Hi"})])
    task = Task(task_id=uuid.uuid4(), task_buffer=function_code + payload)
    channel.basic_publish("", queue, pack(task))
    print(f"1. SDK-serialized task {task.task_id} published to RabbitMQ queue {queue}")
    return task.task_id


def _execute(channel, task_queue: str, result_queue: str) -> None:
    body = _get(channel, task_queue)
    task = unpack_as(body, Task)
    fn, args, kwargs = unpack_task_buffer(task.task_buffer)
    result = Result(task_id=task.task_id, data=serialize_result(fn(*args, **kwargs)))
    channel.basic_publish("", result_queue, pack(result))
    print("2. consumer built on wire/ ran it and published the Result")


def _receive(channel, result_queue: str, task_id: uuid.UUID) -> str:
    body = _get(channel, result_queue)
    result = messagepack.unpack(body)
    assert result.task_id == task_id
    value = ComputeSerializer().deserialize(result.data)
    print(f"3. official globus-compute-common + SDK decoded the result: {value!r}")
    return value


def main() -> None:
    print(
        "compute-agent demo: protocol path over real RabbitMQ (service/manager e2e not yet built)"
    )
    started = time.perf_counter()
    connection = connect(BROKER, client_name="compute-agent-demo")
    try:
        channel = connection.channel()
        task_queue = channel.queue_declare("", exclusive=True).method.queue
        result_queue = channel.queue_declare("", exclusive=True).method.queue
        task_id = _submit(channel, task_queue)
        _execute(channel, task_queue, result_queue)
        _receive(channel, result_queue, task_id)
    finally:
        connection.close()
    print(f"done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
