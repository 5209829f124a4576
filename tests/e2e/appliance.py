"""Running the whole appliance in a test: local accounts, a root manager, researcher code.

The e2e modules share these: accounts created with ``useradd`` (and removed,
with every process they still run), a multi-user endpoint configured with
``compute-endpoint configure`` and started as root with ``compute-endpoint
start``, and the researcher's side run as a subprocess with the unmodified
official SDK configured only by environment variables. Every process started
here is stopped here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import signal
import subprocess
import sys
import time
import typing as t
import urllib.parse
import uuid
from pathlib import Path

from tests.accounts import admin_command
from tests.fixtures_service import REPO, RunningService


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 60)
    return subprocess.run(args, capture_output=True, text=True, check=False, **kw)


@contextlib.contextmanager
def local_accounts(count: int, tag: str):
    """``count`` researchers' accounts sharing a supplementary group; removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    group = f"ca-{tag}-{suffix}"
    names = [f"ca-{tag}-{suffix}-{chr(97 + i) if i < 26 else i}" for i in range(count)]
    admin_command("groupadd", group)
    try:
        for name in names:
            admin_command("useradd", "-m", "-G", group, "-s", "/bin/sh", name)
        yield [pwd.getpwnam(n) for n in names], group
    finally:
        for name in names:
            run("pkill", "-KILL", "-u", name)
            with contextlib.suppress(RuntimeError):  # it may never have been created
                admin_command("userdel", "-r", name)
        admin_command("groupdel", group)


def client_env(service: RunningService, client: dict, user_dir: Path | None = None) -> dict:
    """The environment of official-SDK code (or an endpoint) acting as ``client``."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO),
        GLOBUS_SDK_ENVIRONMENT="local",
        GLOBUS_SDK_SERVICE_URL_AUTH=f"{service.url}/",
        GLOBUS_COMPUTE_CLIENT_ID=client["client_id"],
        GLOBUS_COMPUTE_CLIENT_SECRET=client["client_secret"],
    )
    if user_dir:
        env["GLOBUS_COMPUTE_USER_DIR"] = str(user_dir)
    return env


@dataclasses.dataclass
class Manager:
    """A running multi-user endpoint manager and what tests need to reach it."""

    id: str
    dir: Path
    root: Path
    process: subprocess.Popen | None
    service: RunningService
    clients: dict[str, dict]
    users: tuple
    cli: tuple[str, ...] = (sys.executable, "-m", "mep.cli")
    start: t.Callable[[], None] = lambda: None
    env: dict = dataclasses.field(default_factory=dict)  # the manager's: its owner's client

    def log(self) -> str:
        return (self.dir / "endpoint.log").read_text(errors="replace")


def _mapping(routes: dict[str, str]) -> list[dict]:
    rules = [
        {"source": "{username}", "match": username.replace(".", "\\."), "output": account}
        for username, account in routes.items()
    ]
    rules.append({"source": "{username}", "match": "(.*)@refuse\\.me", "output": "{0}"})
    return [{"DATA_TYPE": "expression_identity_mapping#1.0.0", "mappings": rules}]


@contextlib.contextmanager
def running_manager(
    service: RunningService,
    root: Path,
    routes: dict[str, str],
    template: str,
    schema: dict,
    extra_clients: tuple[str, ...] = (),
    config: str = "",
):
    """Configure and start a root manager mapping ``routes`` (Globus username -> account).

    Yields a :class:`Manager`; a client is made for every routed username (keyed
    by its part before ``@``) and for each of ``extra_clients``; ``config`` is
    added to the manager's ``config.yaml``. On exit the manager gets SIGTERM,
    then SIGKILL if it lingers.
    """
    admin = service.add_client("admin@site.org")
    clients = {u.split("@")[0]: service.add_client(u) for u in (*routes, *extra_clients)}
    mapping_file = root / "mapping.json"
    mapping_file.write_text(json.dumps(_mapping(routes)))
    cli = (sys.executable, "-m", "mep.cli")
    done = run(
        *cli,
        "configure",
        "ep",
        "--multi-user",
        "--contact-email",
        "admin@site.org",
        "--id-mapping-config",
        str(mapping_file),
        "--config-dir",
        str(root),
        env=client_env(service, admin),
    )
    assert done.returncode == 0, done.stderr
    directory = root / "ep"
    if config:
        with open(directory / "config.yaml", "a") as f:
            f.write("\n" + config)
    (directory / "user_config_template.yaml.j2").write_text(template)
    (directory / "user_config_schema.json").write_text(json.dumps(schema))
    out = open(root / "manager.out", "a")  # noqa: SIM115 - closed below
    env = dict(client_env(service, admin), CA_ROOT_ONLY_MARKER="root-secret")
    mgr = Manager("", directory, root, None, service, clients, (), cli, env=env)
    mgr.users = tuple(pwd.getpwnam(a) for a in routes.values())
    mgr.start = lambda: _start_manager(mgr, env, out)
    try:
        mgr.start()
        yield mgr
    finally:
        stop_manager(mgr)
        out.close()


def _start_manager(mgr: Manager, env: dict, out) -> None:
    """Start (or start again) ``mgr``'s manager process; it prints its endpoint id."""
    mgr.process = subprocess.Popen(
        [*mgr.cli, "start", "ep", "--config-dir", str(mgr.root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=out,
        text=True,
    )
    endpoint_id = mgr.process.stdout.readline().strip()
    assert mgr.process.poll() is None, (mgr.root / "manager.out").read_text()
    uuid.UUID(endpoint_id)
    assert mgr.id in ("", endpoint_id), "the manager came back under another id"
    mgr.id = endpoint_id


def stop_manager(mgr: Manager) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    process = mgr.process
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(75)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def submit(mgr: Manager, who: str, script: Path, *args: str, user_dir: Path) -> dict:
    """Run researcher ``script`` as client ``who``; its last stdout line is JSON."""
    done = run(
        sys.executable,
        str(script),
        *args,
        env=client_env(mgr.service, mgr.clients[who], user_dir),
        timeout=200,
    )
    assert done.returncode == 0, done.stderr[-3000:] + "\n--- manager log ---\n" + mgr.log()[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def manager_children(manager_pid: int) -> dict[int, dict]:
    """The monitor's live children but its warden and the manager: pid -> /proc facts.

    ``manager_pid`` is what ``compute-endpoint start`` became: the root monitor,
    the parent of every user endpoint.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != manager_pid:
                continue
            lines = (entry / "status").read_text().splitlines()
            status = dict(line.split(":", 1) for line in lines if ":" in line)
            found[int(entry.name)] = {
                "state": fields[0],
                "sid": int(fields[3]),
                "uid": status["Uid"].split(),
                "gid": status["Gid"].split(),
                "groups": sorted(int(g) for g in status["Groups"].split()),
                "cap_eff": status["CapEff"].strip(),
                "fds": {fd.name: os.readlink(fd) for fd in (entry / "fd").iterdir()},
                "cmdline": (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(),
            }
            cmdline = found[int(entry.name)]["cmdline"]
            if cmdline.startswith(("compute-agent warden", "compute-agent manager")) or (
                "mep.manager_process" in cmdline
            ):
                del found[int(entry.name)]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return found


def user_endpoint_logs(mgr: Manager) -> str:
    """The user endpoints' own logs, for a failure message."""
    logs = []
    for account in mgr.users:
        for path in Path(account.pw_dir, ".compute_agent").glob("*/endpoint.log"):
            logs.append(f"\n--- {path} ---\n" + path.read_text(errors="replace")[-3000:])
    return "".join(logs)


class ServiceSide:
    """The broker as the service sees it: for tests that publish commands themselves.

    Commands go to the manager's command queue with the service's account as
    their validated ``user_id`` (what only the service can do); the manager's
    notices and heartbeats are copied to a private queue bound to its
    heartbeat routing key.
    """

    def __init__(self, mgr: Manager) -> None:
        import pika

        self.mgr = mgr
        self.url = mgr.service.amqp_url
        self.account = urllib.parse.unquote(urllib.parse.urlsplit(self.url).username or "")
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.channel = self.connection.channel()
        self.notices = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.notices, "heartbeats", routing_key=f"{mgr.id}.heartbeats")

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    def creds(self, queue: str = "unused") -> dict:
        """Queue infos on our broker (the manager refuses any other)."""
        write = {
            "connection_url": self.url,
            "exchange": "heartbeats",
            "queue": "service.heartbeats",
            "queue_publish_kwargs": {"exchange": "heartbeats", "routing_key": "x.heartbeats"},
        }
        return {
            "endpoint_id": str(uuid.uuid4()),
            "task_queue_info": {"connection_url": self.url, "exchange": "tasks", "queue": queue},
            "result_queue_info": write,
            "heartbeat_queue_info": write,
        }

    def command(self, username: str, name: str | None = None, creds: dict | None = None) -> dict:
        identity_id = str(uuid.uuid4())
        identity = {"id": identity_id, "sub": identity_id, "username": username, "status": "used"}
        return {
            "command": "cmd_start_endpoint",
            "globus_username": username,
            "globus_effective_identity": identity_id,
            "globus_identity_set": [identity],
            "kwargs": {
                "name": name or f"uep.t.{uuid.uuid4().hex[:8]}",
                "amqp_creds": creds or self.creds(),
                "user_opts": {"label": "ok"},
                "user_runtime": {},
            },
        }

    def publish(
        self,
        body: bytes | dict,
        *,
        timestamp: int | None = None,
        content_type: str = "application/json",
        user_id: str | None = "",
        channel=None,
    ) -> None:
        """Publish to the manager's command queue; ``user_id=""`` means the service's account."""
        import pika

        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        properties = pika.BasicProperties(
            content_type=content_type,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            user_id=self.account if user_id == "" else user_id,
        )
        (channel or self.channel).basic_publish(
            "commands", f"{self.mgr.id}.commands", raw, properties
        )

    def notice(self, endpoint_id: str, timeout_s: float = 20) -> dict:
        """The manager's next error report about user endpoint ``endpoint_id``."""
        from wire.messages import unpack

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            method, _, body = self.channel.basic_get(self.notices, auto_ack=True)
            if method is None:
                self.connection.sleep(0.1)
                continue
            report = unpack(body)
            if str(report.endpoint_id) == endpoint_id and "error" in report.global_state:
                return report.global_state
        raise AssertionError(f"no failure notice about {endpoint_id} arrived")

    def no_notice(self, endpoint_id: str, wait_s: float = 3) -> bool:
        try:
            self.notice(endpoint_id, wait_s)
        except AssertionError:
            return True
        return False
