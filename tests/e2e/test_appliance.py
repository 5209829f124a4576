"""The whole appliance: official SDK -> compute-service -> root manager -> user endpoint.

Real everything: the service subprocess on port 5000, RabbitMQ, a manager
started with ``compute-endpoint start`` as root, local accounts created here,
and the researcher's code run through the unmodified official SDK configured
only by environment variables. Each task must run as the researcher's own
account; a mapping to nobody and a bad template option must come back to the
SDK as readable errors while the manager keeps serving.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures_service import REPO

pytest_plugins = ["tests.fixtures_service"]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the appliance test creates local users")

TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: 6
idle_heartbeats_hard: 60
engine:
  type: ThreadPoolEngine
  max_workers: 2
# label {{ label }} only has to render
"""
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"label": {"type": "string", "pattern": "^[a-z0-9-]+$"}},
    "additionalProperties": False,
}


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 60)
    return subprocess.run(args, capture_output=True, text=True, check=False, **kw)


@pytest.fixture(scope="module")
def local_users():
    """Two researchers' accounts (with a shared supplementary group), removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    group, names = f"ca-e2e-{tag}", [f"ca-e2e-{tag}-a", f"ca-e2e-{tag}-b"]
    assert _run("groupadd", group).returncode == 0
    try:
        for name in names:
            done = _run("useradd", "-m", "-G", group, "-s", "/bin/sh", name)
            assert done.returncode == 0, done.stderr
        yield [pwd.getpwnam(n) for n in names], group
    finally:
        for name in names:
            _run("pkill", "-KILL", "-u", name)
            _run("userdel", "-r", name)
        _run("groupdel", group)


def _env(service, client: dict, user_dir: Path | None = None) -> dict:
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


@pytest.fixture(scope="module")
def manager(compute_service, local_users, tmp_path_factory):
    """A configured multi-user endpoint, started as root; stopped and checked afterwards."""
    (alice, bob), _ = local_users
    root = tmp_path_factory.mktemp("endpoints")
    admin = compute_service.add_client("admin@site.org")
    clients = {
        "alice": compute_service.add_client("alice@uni.edu"),
        "bob": compute_service.add_client("bob@lab.org"),
        "carol": compute_service.add_client("carol@nowhere.org"),
    }
    mapping = [
        {
            "DATA_TYPE": "expression_identity_mapping#1.0.0",
            "mappings": [
                {"source": "{username}", "match": "alice@uni\\.edu", "output": alice.pw_name},
                {"source": "{username}", "match": "bob@lab\\.org", "output": bob.pw_name},
            ],
        }
    ]
    mapping_file = root / "mapping.json"
    mapping_file.write_text(json.dumps(mapping))
    cli = [sys.executable, "-m", "mep.cli"]
    done = _run(
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
        env=_env(compute_service, admin),
    )
    assert done.returncode == 0, done.stderr
    directory = root / "ep"
    (directory / "user_config_template.yaml.j2").write_text(TEMPLATE)
    (directory / "user_config_schema.json").write_text(json.dumps(SCHEMA))
    log = open(root / "manager.out", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [*cli, "start", "ep", "--config-dir", str(root)],
        env=_env(compute_service, admin),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        endpoint_id = process.stdout.readline().strip()
        assert process.poll() is None, (root / "manager.out").read_text()
        uuid.UUID(endpoint_id)
        yield {
            "id": endpoint_id,
            "dir": directory,
            "clients": clients,
            "service": compute_service,
            "process": process,
            "users": (alice, bob),
            "cli": cli,
            "root": root,
        }
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(45)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log.close()


def _submit(mgr, who: str, mode: str, tmp_path: Path) -> dict:
    user_dir = tmp_path / f"sdk-{who}"
    done = _run(
        sys.executable,
        str(REPO / "tests" / "e2e" / "appliance_client.py"),
        mgr["id"],
        mode,
        env=_env(mgr["service"], mgr["clients"][who], user_dir),
        timeout=200,
    )
    assert done.returncode == 0, done.stderr[-3000:] + _manager_log(mgr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _manager_log(mgr) -> str:
    return (
        "\n--- manager log ---\n"
        + (mgr["dir"] / "endpoint.log").read_text(errors="replace")[-4000:]
    )


def test_each_researcher_runs_as_their_own_account(manager, tmp_path):
    alice, bob = manager["users"]
    for who, account in (("alice", alice), ("bob", bob)):
        out = _submit(manager, who, "run", tmp_path)
        me = out["whoami"]
        assert (me["user"], me["uid"], me["gid"]) == (
            account.pw_name,
            account.pw_uid,
            account.pw_gid,
        )
        assert set(os.getgrouplist(account.pw_name, account.pw_gid)) == set(me["groups"])
        assert me["home"] == account.pw_dir
        assert me["secret_in_env"] is False
        assert "raised by the researcher's function" in out["error"]
    listed = _run(*manager["cli"], "list", "--json", "--config-dir", str(manager["root"]))
    row = json.loads(listed.stdout)[0]
    assert row["status"] == "running" and row["id"] == manager["id"]


def test_unmapped_identity_gets_a_readable_error(manager, tmp_path):
    out = _submit(manager, "carol", "run", tmp_path)
    assert out["whoami"].startswith("TaskExecutionFailed")
    assert "Identity failed to map to a local user name" in out["whoami"]
    assert manager["process"].poll() is None


def test_bad_template_option_is_refused_with_the_schema_message(manager, tmp_path):
    out = _submit(manager, "alice", "bad-option", tmp_path)
    assert "label" in out["error"] and "string" in out["error"]
    assert manager["process"].poll() is None
    time.sleep(0.1)
