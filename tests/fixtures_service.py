"""Fixtures for running the real compute service in tests.

- ``rabbit_vhost``: a private RabbitMQ vhost and an administrator account of
  its own for the service (created with ``rabbitmqctl``, deleted afterwards
  with every account the service made there), so queues never collide with
  other test runs and nothing relies on the well-known ``guest`` account.
- ``compute_service``: one ``compute-service start`` subprocess on port 5000
  for the session (the SDK's ``local`` environment is fixed to
  ``localhost:5000``). Port 5000 is shared by every concurrent test session on
  the machine, so it is guarded by an ``flock``.
- ``api_service``: the same on a free port, for REST tests without the SDK.
- ``start_service``: start more instances on free ports (persistence tests).
- ``postgres_url``: a throwaway schema in the ``test`` database, or a skip
  naming why when no server answers on 127.0.0.1:5432.

Use them with ``pytest_plugins = ["tests.fixtures_service"]`` or by importing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
SDK_PORT = 5000
PORT_LOCK = Path("/tmp/compute-agent-service-port-5000.lock")
PORT_LOCK_WAIT_S = 90
COMPUTE_SCOPE = "https://auth.globus.org/scopes/facd7ccc-c5f4-42aa-916b-a0e270e2c2a9/all"


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


BROKER_API = "http://127.0.0.1:15672/api"


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def vhost_accounts(vhost: str, auth: tuple[str, str] | None = None) -> list[str]:
    """Every account holding permissions on ``vhost``."""
    if auth is None:
        out = _rabbitmqctl("list_permissions", "-p", vhost, "--no-table-headers")
        return [line.split("\t")[0] for line in out.splitlines() if line.strip()]
    rows = httpx.get(f"{BROKER_API}/vhosts/{_q(vhost)}/permissions", auth=auth).json()
    return [row["user"] for row in rows]


@contextlib.contextmanager
def private_vhost(tag: str):
    """Yield the URL of a fresh vhost's own administrator; both go on exit, with the
    accounts a service made there.

    Only the administrator is made with ``rabbitmqctl`` (each call starts an
    Erlang VM, about half a second); it does the rest through the management API.
    """
    vhost = f"ca-test-{tag}-{uuid.uuid4().hex[:8]}"
    # Hex, not token_urlsafe: a secret starting with "-" is an option to rabbitmqctl.
    admin, secret = f"{vhost}-admin", secrets.token_hex(18)
    auth = (admin, secret)
    _rabbitmqctl("add_user", admin, secret)
    try:
        _rabbitmqctl("set_user_tags", admin, "administrator")
        httpx.put(f"{BROKER_API}/vhosts/{_q(vhost)}", auth=auth).raise_for_status()
        grant = {"configure": ".*", "write": ".*", "read": ".*"}
        httpx.put(
            f"{BROKER_API}/permissions/{_q(vhost)}/{_q(admin)}", json=grant, auth=auth
        ).raise_for_status()
        yield f"amqp://{admin}:{secret}@127.0.0.1:5672/{vhost}"
    finally:
        with contextlib.suppress(httpx.HTTPError):
            for account in set(vhost_accounts(vhost, auth)) - {"guest", admin}:
                httpx.delete(f"{BROKER_API}/users/{_q(account)}", auth=auth)
            httpx.delete(f"{BROKER_API}/vhosts/{_q(vhost)}", auth=auth)
        _rabbitmqctl("delete_user", admin)


def queued_command(admin_url: str, registration: dict) -> dict:
    """The next start command the service queued for an endpoint, read as the service."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(admin_url))
    try:
        queue = registration["command_queue_info"]["queue"]
        method, _props, raw = connection.channel().basic_get(queue, auto_ack=True)
        assert method is not None, f"no start command waits in {queue}"
        return json.loads(raw)
    finally:
        connection.close()


@pytest.fixture(scope="session")
def rabbit_vhost():
    with private_vhost("svc") as url:
        yield url


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def service_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclasses.dataclass
class RunningService:
    """A ``compute-service start`` subprocess and how to reach it."""

    port: int
    db_url: str
    amqp_url: str
    log_path: Path
    process: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def start(self) -> None:
        args = ["--port", str(self.port), "--amqp-url", self.amqp_url, "--db", self.db_url]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "start", *args, *self.extra_args],
                env=_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited early; log:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/version", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"service did not answer within 30 s; log:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as a crash or an OOM kill would leave it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def add_client(self, username: str, *linked: str) -> dict:
        """Create a client through the admin CLI; returns its JSON."""
        args = ["client", "add", "--username", username, "--db", self.db_url]
        for other in linked:
            args += ["--linked", other]
        done = service_cli(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def token(self, client: dict, scope: str = COMPUTE_SCOPE) -> str:
        response = httpx.post(
            f"{self.url}/v2/oauth2/token",
            data={"grant_type": "client_credentials", "scope": scope},
            auth=(client["client_id"], client["client_secret"]),
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def api(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def port_5000_lock():
    """Serialise test sessions that need the SDK's fixed port 5000."""
    with open(PORT_LOCK, "w") as handle:
        deadline = time.monotonic() + PORT_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"port {SDK_PORT} stayed locked by another test session ({PORT_LOCK})"
                    )
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def compute_service(tmp_path_factory, rabbit_vhost):
    """The service on port 5000 for the whole session, on PostgreSQL (its production
    store) when a server answers, else on SQLite."""
    tmp = tmp_path_factory.mktemp("compute-service")
    with contextlib.ExitStack() as stack:
        if _postgres_answers():
            db_url = stack.enter_context(private_schema())
        else:
            db_url = f"sqlite:///{tmp / 'service.db'}"
        svc = RunningService(
            port=SDK_PORT, db_url=db_url, amqp_url=rabbit_vhost, log_path=tmp / "service.log"
        )
        with port_5000_lock():
            svc.start()
            try:
                yield svc
            finally:
                svc.stop()


@pytest.fixture(scope="session")
def api_service(tmp_path_factory, rabbit_vhost):
    """The service on a free port, for REST tests that do not need the SDK's port.

    It shares the session's vhost with ``compute_service`` under its own name
    prefix: two services consuming one ``results`` queue would steal each
    other's results.
    """
    tmp = tmp_path_factory.mktemp("api-service")
    svc = RunningService(
        port=free_port(),
        db_url=f"sqlite:///{tmp / 'service.db'}",
        amqp_url=rabbit_vhost,
        log_path=tmp / "service.log",
        extra_args=("--amqp-prefix", "api."),
    )
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def start_service(tmp_path):
    """Start extra service instances on free ports; all are stopped afterwards."""
    started: list[RunningService] = []

    def start(db_url: str, amqp_url: str, *extra_args: str) -> RunningService:
        svc = RunningService(
            port=free_port(),
            db_url=db_url,
            amqp_url=amqp_url,
            log_path=tmp_path / f"service-{len(started)}.log",
            extra_args=extra_args,
        )
        started.append(svc)
        svc.start()
        return svc

    yield start
    for svc in started:
        svc.stop()


def _postgres_answers() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=1):
        return True
    return False


@contextlib.contextmanager
def private_schema():
    """A URL whose connections use a fresh schema in database ``test``; dropped after."""
    import psycopg

    schema = f"ca_test_{uuid.uuid4().hex[:10]}"
    admin = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{admin}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def postgres_url():
    if not _postgres_answers():
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    with private_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each store test runs on SQLite and on PostgreSQL (skipped if absent)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")
