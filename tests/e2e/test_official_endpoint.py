"""The official globus-compute-endpoint 4.19 against our service, with the official SDK.

The endpoint is not a dependency of this project: ``make test`` installs it
into its own virtual environment (``make official-endpoint``) and points
``COMPUTE_AGENT_OFFICIAL_ENDPOINT`` at its ``globus-compute-endpoint``; run
alone, the test looks in /var/tmp/gce-419 and skips, saying so, if absent. It runs
unprivileged, as a local user created here, so its core endpoint checks the
start command's identity set against our ``userinfo`` and forks its user
endpoint as that same user.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_sdk_executor import run_sdk

OFFICIAL = Path(
    os.environ.get(
        "COMPUTE_AGENT_OFFICIAL_ENDPOINT", "/var/tmp/gce-419/bin/globus-compute-endpoint"
    )
)
pytestmark = [
    pytest.mark.skipif(
        not OFFICIAL.exists(),
        reason=f"official endpoint not installed at {OFFICIAL} (see module docstring)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="creates a local user"),
]


def _user_pids(user: str) -> list[int]:
    done = subprocess.run(["ps", "-u", user, "-o", "pid="], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


@pytest.fixture
def local_user():
    name = f"gce{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "-m", name], check=True, capture_output=True)
    yield name
    for pid in _user_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    subprocess.run(["userdel", "-r", name], capture_output=True)


def test_official_endpoint_runs_sdk_tasks(compute_service, local_user, tmp_path):
    client = compute_service.add_client(f"{local_user}@uni.edu")
    home = Path(f"/home/{local_user}")
    env = [
        "GLOBUS_SDK_ENVIRONMENT=local",
        f"GLOBUS_SDK_SERVICE_URL_AUTH={compute_service.url}/",
        f"GLOBUS_COMPUTE_CLIENT_ID={client['client_id']}",
        f"GLOBUS_COMPUTE_CLIENT_SECRET={client['client_secret']}",
        f"HOME={home}",
        f"PATH={OFFICIAL.parent}:/usr/bin:/bin",
    ]
    as_user = ["runuser", "-u", local_user, "--", "env", "-i", *env, str(OFFICIAL)]
    configured = subprocess.run(
        [*as_user, "configure", "ep1"], capture_output=True, text=True, timeout=60
    )
    assert configured.returncode == 0, configured.stderr
    with open(home / ".globus_compute/ep1/config.yaml", "a") as config:
        config.write("\nheartbeat_period: 5\n")
    with open(tmp_path / "cep.log", "wb") as log:
        cep = subprocess.Popen(
            [*as_user, "start", "ep1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        endpoint_json = home / ".globus_compute/ep1/endpoint.json"
        deadline = time.monotonic() + 60
        while not endpoint_json.exists() and cep.poll() is None:
            assert time.monotonic() < deadline, "the official endpoint did not register"
            time.sleep(0.5)
        assert cep.poll() is None, (tmp_path / "cep.log").read_text()[-3000:]
        endpoint_id = json.loads(endpoint_json.read_text())["endpoint_id"]
        out = run_sdk(compute_service, client, "official", endpoint_id, tmp_path)
        assert out["add"] == 42
        assert "ValueError: kaboom-official" in out["boom"]
        assert out["status"] == "online"
    finally:
        os.killpg(cep.pid, signal.SIGTERM)
        try:
            cep.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(cep.pid, signal.SIGKILL)
            cep.wait(5)
