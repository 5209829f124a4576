"""``make demo``: the main job, end to end, on this machine.

1. start the self-hosted compute service on localhost:5000 (SQLite, a private
   RabbitMQ vhost) and create Globus-Auth-shaped clients for an admin and a
   researcher;
2. create a local account for the researcher and configure a multi-user
   endpoint whose identity mapping sends ``researcher@uni.edu`` to it;
3. start the manager as root with ``compute-endpoint start``;
4. run unmodified official-SDK code as the researcher (configured only by
   environment variables) and print who the function ran as;
5. print the web app's address and the credentials to sign in with;
6. stop everything and remove the account, or, with ``--keep`` (``make demo
   KEEP=1``), leave the service and its data running so the web app can be
   looked at, and print how to stop it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.fixtures_service import PORT_LOCK, REPO, SDK_PORT, RunningService, private_vhost

RESEARCHER_CODE = """
import getpass, json, os, socket, sys
from globus_compute_sdk import Executor

def where_am_i(x):
    import getpass, os, socket
    return {"user": getpass.getuser(), "uid": os.getuid(), "host": socket.gethostname(), "x": x}

def fails():
    raise ValueError("a failure to read in the web app")

with Executor(endpoint_id=sys.argv[1], user_endpoint_config={"label": "demo"}) as ex:
    futures = [ex.submit(where_am_i, i) for i in range(3)]
    failing = ex.submit(fails)
    ran = [f.result(timeout=120) for f in futures]
    try:
        failing.result(timeout=120)
        failed = "it did not fail"
    except Exception as e:
        failed = str(e).strip().splitlines()[-1].strip()
    print(json.dumps({"ran": ran, "failed": failed}))
"""
TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: 4
engine:
  type: ProcessPoolEngine
  max_workers: 2
"""


def say(step: str) -> None:
    print(f"[demo] {step}", flush=True)


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw
    )
    if done.returncode != 0:
        raise SystemExit(f"[demo] failed: {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    return done


@contextlib.contextmanager
def local_account():
    name = f"ca-demo-{uuid.uuid4().hex[:6]}"
    run("useradd", "-m", "-s", "/bin/sh", name)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)


def env_for(service: RunningService, client: dict, **extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), GLOBUS_SDK_ENVIRONMENT="local")
    env.update(
        GLOBUS_SDK_SERVICE_URL_AUTH=f"{service.url}/",
        GLOBUS_COMPUTE_CLIENT_ID=client["client_id"],
        GLOBUS_COMPUTE_CLIENT_SECRET=client["client_secret"],
        **extra,
    )
    return env


def configure(root: Path, service: RunningService, admin: dict, account: pwd.struct_passwd) -> None:
    mapping = root / "mapping.json"
    rule = {"source": "{username}", "match": "researcher@uni\\.edu", "output": account.pw_name}
    mapping.write_text(
        json.dumps([{"DATA_TYPE": "expression_identity_mapping#1.0.0", "mappings": [rule]}])
    )
    run(
        sys.executable,
        "-m",
        "mep.cli",
        "configure",
        "demo",
        "--multi-user",
        "--contact-email",
        "admin@site.org",
        "--id-mapping-config",
        str(mapping),
        "--config-dir",
        str(root),
        env=env_for(service, admin),
    )
    (root / "demo" / "user_config_template.yaml.j2").write_text(TEMPLATE)


@contextlib.contextmanager
def manager(root: Path, service: RunningService, admin: dict):
    log = root / "manager.out"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mep.cli", "start", "demo", "--config-dir", str(root)],
            env=env_for(service, admin),
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
    try:
        endpoint_id = process.stdout.readline().strip()
        if not endpoint_id:
            raise SystemExit(f"[demo] the manager did not start:\n{log.read_text()}")
        yield endpoint_id
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


@contextlib.contextmanager
def port_5000():
    """The SDK's ``local`` environment is fixed to localhost:5000: wait for it to be ours."""
    with open(PORT_LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("port 5000 is in use by a test run; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        deadline = time.monotonic() + 600
        while _listening(SDK_PORT):
            if time.monotonic() > deadline:
                raise SystemExit(
                    "[demo] something else keeps listening on port 5000; stop it first"
                )
            time.sleep(1)
        yield


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def web_app_note(service: RunningService, people: dict[str, dict]) -> None:
    say(f"web app: open {service.url}/app/ and sign in with")
    for who, client in people.items():
        say(f"  {who}: Client ID {client['client_id']}")
        say(f"  {' ' * len(who)}  Client secret {client['client_secret']}")


def _leave_running(service: RunningService, root: Path, amqp: str, started: float) -> None:
    """Exit at once, leaving the service, its database and its broker vhost behind.

    ``os._exit`` on purpose: a normal exit would run the clean-ups of the
    temporary directory and the vhost (context managers and finalizers), which
    are now the admin's to run, with the command printed here.
    """
    vhost = amqp.rsplit("/", 1)[1]
    say(f"the service keeps running (pid {service.process.pid}); data in {root}")
    say(f"stop it with: kill {service.process.pid}; rm -rf {root}")
    say(
        "and remove its broker vhost and the accounts it made there: for u in"
        f" $(rabbitmqctl -q list_permissions -p {vhost} --no-table-headers | cut -f1);"
        f' do rabbitmqctl -q delete_user "$u"; done; rabbitmqctl -q delete_vhost {vhost}'
    )
    say(f"done in {time.perf_counter() - started:.1f} s")
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the service running")
    keep = parser.parse_args().keep
    if os.geteuid() != 0:
        raise SystemExit("[demo] run as root: it creates a local account and starts a root manager")
    started = time.perf_counter()
    with contextlib.ExitStack() as cleanup:
        root = Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix="compute-agent-demo-"))
        )
        amqp = cleanup.enter_context(private_vhost("demo"))
        cleanup.enter_context(port_5000())
        service = RunningService(
            SDK_PORT, f"sqlite:///{root / 'service.db'}", amqp, root / "service.log"
        )
        say(f"starting compute-service on {service.url}")
        service.start()
        if service.process.poll() is not None:
            raise SystemExit(f"[demo] compute-service exited:\n{service.log()}")
        try:
            admin = service.add_client("admin@site.org")
            researcher = service.add_client("researcher@uni.edu")
            with local_account() as account:
                say(
                    f"local account {account.pw_name} (uid {account.pw_uid}) for researcher@uni.edu"
                )
                configure(root, service, admin, account)
                with manager(root, service, admin) as endpoint_id:
                    say(
                        f"endpoint running (a root monitor, the manager as compute-agent), id {endpoint_id}"
                    )
                    code = root / "researcher.py"
                    code.write_text(RESEARCHER_CODE)
                    sdk_env = env_for(
                        service, researcher, GLOBUS_COMPUTE_USER_DIR=str(root / "sdk")
                    )
                    done = run(sys.executable, str(code), endpoint_id, env=sdk_env, timeout=240)
                    outcome = json.loads(done.stdout.strip().splitlines()[-1])
                    for row in outcome["ran"]:
                        say(
                            f"task {row['x']} ran as {row['user']} (uid {row['uid']}) on {row['host']}"
                        )
                    say(f"and one task failed, as it should: {outcome['failed']}")
            web_app_note(service, {"researcher@uni.edu": researcher, "admin@site.org": admin})
        except BaseException:
            service.stop()
            raise
        if keep:
            _leave_running(service, root, amqp, started)
        service.stop()
        say("the service stopped; `make demo KEEP=1` keeps it running for the web app")
    say(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
