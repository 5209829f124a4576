"""The official SDK, configured only by environment variables, against our service.

The service runs as ``compute-service start`` on port 5000; the endpoint is the
wire-only stand-in of :mod:`tests.e2e.wire_endpoint`; the SDK code runs in a
subprocess because it reads its environment at import time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.wire_endpoint import WireEndpoint

SCRIPT = Path(__file__).with_name("sdk_client.py")


@pytest.fixture(scope="module")
def alice(compute_service):
    return compute_service.add_client("alice@uni.edu", "alice@lab.org")


@pytest.fixture(scope="module")
def endpoint(compute_service, alice):
    ep = WireEndpoint(compute_service.url, compute_service.token(alice))
    ep.register()
    ep.start()
    yield ep
    ep.stop()
    assert not ep.errors, ep.errors


def run_sdk(service, client: dict, scenario: str, endpoint_id: str, tmp_path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLOBUS_", "PYTHONPATH"))}
    env.update(
        GLOBUS_SDK_ENVIRONMENT="local",
        GLOBUS_SDK_SERVICE_URL_AUTH=f"{service.url}/",
        GLOBUS_COMPUTE_CLIENT_ID=client["client_id"],
        GLOBUS_COMPUTE_CLIENT_SECRET=client["client_secret"],
        GLOBUS_COMPUTE_USER_DIR=str(tmp_path / "gc-user"),
    )
    done = subprocess.run(
        [sys.executable, str(SCRIPT), scenario, endpoint_id, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"{done.stderr[-3000:]}\nservice log:\n{service.log()}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_executor_gets_results_and_remote_exceptions(compute_service, alice, endpoint, tmp_path):
    out = run_sdk(compute_service, alice, "executor", endpoint.endpoint_id, tmp_path)
    assert out["add"] == 42
    assert out["many"] == [0, 2, 4, 6, 8]
    assert out["boom"].startswith("TaskExecutionFailed")
    assert "ValueError: kaboom-from-remote" in out["boom"]
    command = endpoint.commands[-1]
    assert command["command"] == "cmd_start_endpoint"
    assert command["globus_username"] == "alice@uni.edu"
    assert [i["username"] for i in command["globus_identity_set"]] == [
        "alice@uni.edu",
        "alice@lab.org",
    ]
    assert command["kwargs"]["user_opts"] == {"account": "abc"}
    assert "python_version" in command["kwargs"]["user_runtime"]


def test_client_get_task_batch_and_registered_functions(
    compute_service,
    alice,
    endpoint,
    tmp_path,
):
    out = run_sdk(compute_service, alice, "client", endpoint.endpoint_id, tmp_path)
    assert out["value"] == 23
    assert out["task"]["status"] == "success" and out["task"]["result"] == 23
    assert out["task"]["pending"] is False and float(out["task"]["completion_t"]) > 0
    assert list(out["batch"].values()) == [{"status": "success", "result": 23}]
    assert out["status"] == "online"
    assert out["tripled"] == 21


def test_failed_user_endpoint_start_reaches_the_future(
    compute_service,
    alice,
    endpoint,
    tmp_path,
):
    out = run_sdk(compute_service, alice, "failed_start", endpoint.endpoint_id, tmp_path)
    assert "result" not in out
    assert "no local account is mapped to your identity" in out["error"]


def test_same_person_and_config_reach_the_same_user_endpoint(
    compute_service,
    alice,
    endpoint,
    tmp_path,
):
    run_sdk(compute_service, alice, "executor", endpoint.endpoint_id, tmp_path)
    names = {
        c["kwargs"]["name"]
        for c in endpoint.commands
        if c["kwargs"]["user_opts"] == {"account": "abc"}
    }
    assert len(names) == 1
    assert len({c["kwargs"]["name"] for c in endpoint.commands}) >= 2


def test_allowed_functions_as_the_sdk_sees_and_meets_them(
    compute_service, alice, endpoint, tmp_path
):
    from wire import serializer

    code = serializer.pack_buffers([serializer.serialize(lambda a, b: a + b)])
    with compute_service.api(compute_service.token(alice)) as api:
        fid = api.post("/v3/functions", json={"function_name": "plus", "function_code": code})
        fid = fid.json()["function_uuid"]
        route = f"/v3/endpoints/{endpoint.endpoint_id}/allowed_functions"
        assert api.put(route, json={"functions": [fid]}).status_code == 200
        try:
            out = run_sdk(compute_service, alice, "access", endpoint.endpoint_id, tmp_path, fid)
        finally:
            api.put(route, json={"functions": []})
    assert out["allowed_functions"] == {
        "endpoint_id": endpoint.endpoint_id,
        "restricted": True,
        "functions": [fid],
    }
    assert out["allowed"] == 3
    assert (
        "FUNCTION_NOT_PERMITTED" in out["refused"] and "not allowed on endpoint" in out["refused"]
    )
