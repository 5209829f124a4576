"""A hand-driven service side for user-endpoint tests, built on wire/.

It declares the AMQP topology of PROTOCOL §4.2 in a private vhost, launches the
user endpoint as ``python -m mep.cli _start-user-endpoint NAME`` with its JSON
payload on stdin, publishes Tasks serialized by the official SDK, and reads
Results and heartbeats back. The one self-test here checks the harness itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.processes import kill_mentioning
from wire import WireError
from wire.amqp import connect
from wire.messages import EPStatusReport, Result, Task, pack, unpack

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.rabbitmq
BROKER = "amqp://guest:guest@127.0.0.1:5672/{vhost}"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def vhost():
    """A private RabbitMQ vhost for one test module, deleted afterwards."""
    name = f"uep-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


def sdk_task(fn, *args, **kwargs) -> tuple[str, bytes]:
    """A Task body exactly as the official SDK packs one."""
    from globus_compute_sdk.serialize import ComputeSerializer

    s = ComputeSerializer()
    buffer = s.pack_buffers([s.serialize(fn), s.serialize(args), s.serialize(kwargs)])
    task_id = uuid.uuid4()
    return str(task_id), pack(Task(task_id=task_id, task_buffer=buffer))


def decode_result(result: Result):
    from globus_compute_sdk.serialize import ComputeSerializer

    return ComputeSerializer().deserialize(result.data)


class Service:
    """The service's side of one user endpoint's queues."""

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.url = BROKER.format(vhost=vhost)
        self.endpoint_id = str(uuid.uuid4())
        self.function_id = str(uuid.uuid4())
        self.task_queue = f"{self.endpoint_id}.tasks"
        self.result_queue = f"results-{self.endpoint_id}"
        self.heartbeat_queue = f"heartbeats-{self.endpoint_id}"
        self.results: dict[str, list[Result]] = {}
        self.heartbeats: list[EPStatusReport] = []
        self._conn = None
        self._declare()

    def _channel(self):
        if self._conn is None or self._conn.is_closed:
            self._conn = connect(self.url, client_name="uep-test-service")
            self._ch = self._conn.channel()
            self._ch.confirm_delivery()
        return self._ch

    def _declare(self) -> None:
        ch = self._channel()
        ch.exchange_declare("tasks", "direct", durable=True)
        ch.exchange_declare("results", "topic", durable=True)
        ch.exchange_declare("heartbeats", "topic", durable=True)
        for queue, exchange, key in (
            (self.task_queue, "tasks", self.task_queue),
            (self.result_queue, "results", f"{self.endpoint_id}.results"),
            (self.heartbeat_queue, "heartbeats", f"{self.endpoint_id}.heartbeats"),
        ):
            ch.queue_declare(queue, durable=True)
            ch.queue_bind(queue, exchange, routing_key=key)

    def amqp_creds(self) -> dict:
        def write(exchange: str, suffix: str, queue: str) -> dict:
            return {
                "connection_url": self.url,
                "exchange": exchange,
                "queue": queue,
                "queue_publish_kwargs": {
                    "exchange": exchange,
                    "routing_key": f"{self.endpoint_id}.{suffix}",
                    "mandatory": True,
                    "properties": {"delivery_mode": 2},
                },
            }

        return {
            "endpoint_id": self.endpoint_id,
            "task_queue_info": {
                "connection_url": self.url,
                "exchange": "tasks",
                "queue": self.task_queue,
            },
            "result_queue_info": write("results", "results", self.result_queue),
            "heartbeat_queue_info": write("heartbeats", "heartbeats", self.heartbeat_queue),
        }

    def submit(self, fn, *args, headers: dict | None = None, **kwargs) -> str:
        task_id, body = sdk_task(fn, *args, **kwargs)
        self.publish_task(task_id, body, headers)
        return task_id

    def publish_task(self, task_id: str, body: bytes, headers: dict | None = None) -> None:
        base = {
            "task_uuid": task_id,
            "function_uuid": self.function_id,
            "resource_specification": "null",
            "result_serializers": None,
        }
        base.update(headers or {})
        base = {k: v for k, v in base.items() if v is not None}
        self._channel().basic_publish(
            "tasks",
            self.task_queue,
            body,
            pika.BasicProperties(headers=base, delivery_mode=2, content_type="application/json"),
        )

    def drain(self) -> None:
        """Move everything waiting on the result and heartbeat queues into memory.

        A broker that is restarting just means nothing to read yet."""
        try:
            self._drain()
        except (pika.exceptions.AMQPError, OSError, WireError):
            self._conn = None
            time.sleep(0.5)

    def _drain(self) -> None:
        ch = self._channel()
        for queue in (self.result_queue, self.heartbeat_queue):
            while True:
                method, _props, body = ch.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                message = unpack(body)
                if isinstance(message, Result):
                    self.results.setdefault(str(message.task_id), []).append(message)
                else:
                    self.heartbeats.append(message)

    def wait_results(self, task_ids, timeout: float = 60.0) -> dict[str, Result]:
        deadline = time.monotonic() + timeout
        wanted = set(task_ids)
        while time.monotonic() < deadline:
            self.drain()
            if wanted <= set(self.results):
                return {tid: self.results[tid][0] for tid in task_ids}
            failed = [h.global_state["error"] for h in self.heartbeats if "error" in h.global_state]
            if failed:
                raise AssertionError(f"the endpoint reported a start-up failure: {failed[0]}")
            time.sleep(0.05)
        missing = wanted - set(self.results)
        raise AssertionError(f"{len(missing)} of {len(wanted)} results missing after {timeout}s")

    def wait_heartbeat(self, predicate, timeout: float = 60.0) -> EPStatusReport:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            for report in self.heartbeats:
                if predicate(report.global_state):
                    return report
            time.sleep(0.1)
        raise AssertionError(f"no matching heartbeat within {timeout}s: {self.heartbeats[-3:]}")

    def close(self) -> None:
        if self._conn is not None and self._conn.is_open:
            ch = self._conn.channel()
            for queue in (self.task_queue, self.result_queue, self.heartbeat_queue):
                ch.queue_delete(queue)
            self._conn.close()


def engine_yaml(engine: str, **top) -> str:
    lines = [f"engine:\n  type: {engine}"]
    if engine in ("ThreadPoolEngine", "ProcessPoolEngine"):
        lines.append("  max_workers: 2")
    lines += [f"{k}: {json.dumps(v)}" for k, v in top.items()]
    return "\n".join(lines) + "\n"


class Endpoint:
    """A user endpoint process, started in its own session and killed at the end."""

    def __init__(self, home: Path, service: Service, config: str, name: str = "uep", **extra):
        self.home = home
        self.log = home / f"{name}.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "PYTHONPATH": str(REPO),
        }
        payload = {
            "amqp_creds": service.amqp_creds(),
            "config": config,
            "ep_info": {"posix_ppid": os.getpid()},
            **extra,
        }
        command = [sys.executable, "-m", "mep.cli", "_start-user-endpoint", name]
        if extra.pop("_via_shell", False):  # a parent that can die on its own
            command = ["/bin/sh", "-c", '"$@"; exit 0', "sh", *command]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=env,
                cwd=home,
                start_new_session=True,
                pass_fds=extra.get("_pass_fds", ()),
            )
        payload.pop("_pass_fds", None)
        self.proc.stdin.write(json.dumps(payload).encode())
        self.proc.stdin.close()

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """SIGKILL takes the whole process group (workers too); others only the endpoint."""
        try:
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        self.kill(signal.SIGKILL)
        self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def service(vhost):
    svc = Service(vhost)
    yield svc
    svc.close()


@pytest.fixture
def launch(tmp_path, service):
    """Start user endpoints for a test; every one is stopped afterwards."""
    started: list[Endpoint] = []

    def start(config: str, name: str = "uep", **extra) -> Endpoint:
        ep = Endpoint(tmp_path, service, config, name, **extra)
        started.append(ep)
        return ep

    yield start
    for ep in started:
        ep.stop()
    kill_mentioning(f"{tmp_path}/")  # provider blocks live in sessions of their own


def _double(x):
    return 2 * x


def test_harness_round_trip(service, launch):
    """The harness itself: one task in, one result out, a heartbeat seen."""
    ep = launch(engine_yaml("ThreadPoolEngine"))
    task_id = service.submit(_double, 21)
    result = service.wait_results([task_id])[task_id]
    assert not result.is_error, result.data
    assert decode_result(result) == 42
    assert service.wait_heartbeat(lambda s: s.get("active") is True)
    assert ep.proc.poll() is None
