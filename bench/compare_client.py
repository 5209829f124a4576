"""The researcher's side of ``bench.compare``: unmodified official-SDK code.

Configured only by the environment, like any researcher's script
(GLOBUS_SDK_ENVIRONMENT=local, GLOBUS_SDK_SERVICE_URL_AUTH,
GLOBUS_COMPUTE_CLIENT_ID/SECRET). One scenario per run; the last stdout line
is a JSON document with the figures. Clocks start after the SDK is imported:
interpreter start-up is the laptop's cost, not the endpoint's.

Usage: python -m bench.compare_client SCENARIO ENDPOINT_ID CONFIG_JSON [ARG]

- ``first``: submit one no-op and wait for it (a cold start when the identity is
  new); ARG, if given, is a file to wait for before submitting (a barrier shared
  by the fan-out's processes).
- ``sequential``: ARG round trips one at a time, after one warm-up task.
- ``burst``: ARG no-op tasks submitted at once, after one warm-up task.
"""

from __future__ import annotations

import json
import os
import sys
import time

from globus_compute_sdk import Executor

RESULT_TIMEOUT_S = 600


def noop():
    return None


def executor(endpoint_id: str, config: dict) -> Executor:
    """An Executor whose own client-side throttle does not set the pace."""
    return Executor(
        endpoint_id=endpoint_id,
        user_endpoint_config=config,
        api_burst_limit=8,
        api_burst_window_s=1,
    )


def wait_for(path: str) -> None:
    """Say this process is ready (``PATH.ready.PID``), then wait for ``path`` to appear."""
    with open(f"{path}.ready.{os.getpid()}", "w"):
        pass
    while not os.path.exists(path):
        time.sleep(0.01)


def first(endpoint_id: str, config: dict, barrier: str | None) -> dict:
    with executor(endpoint_id, config) as ex:
        if barrier:
            wait_for(barrier)
        started = time.time()
        future = ex.submit(noop)
        future.result(timeout=RESULT_TIMEOUT_S)
        done = time.time()
    return {"started": started, "done": done, "seconds": done - started, "task_id": future.task_id}


def sequential(endpoint_id: str, config: dict, count: int) -> dict:
    with executor(endpoint_id, config) as ex:
        ex.submit(noop).result(timeout=RESULT_TIMEOUT_S)
        rtts, task_ids = [], []
        for _ in range(count):
            started = time.perf_counter()
            future = ex.submit(noop)
            future.result(timeout=RESULT_TIMEOUT_S)
            rtts.append(time.perf_counter() - started)
            task_ids.append(future.task_id)
    return {"round_trips": rtts, "task_ids": task_ids}


def burst(endpoint_id: str, config: dict, count: int) -> dict:
    with executor(endpoint_id, config) as ex:
        ex.submit(noop).result(timeout=RESULT_TIMEOUT_S)
        started = time.perf_counter()
        futures = [ex.submit(noop) for _ in range(count)]
        for future in futures:
            future.result(timeout=RESULT_TIMEOUT_S)
        seconds = time.perf_counter() - started
    return {"tasks": count, "seconds": seconds}


def main(argv: list[str]) -> dict:
    scenario, endpoint_id, config = argv[0], argv[1], json.loads(argv[2])
    arg = argv[3] if len(argv) > 3 else None
    if scenario == "first":
        return first(endpoint_id, config, arg)
    if scenario == "sequential":
        return sequential(endpoint_id, config, int(arg or 200))
    if scenario == "burst":
        return burst(endpoint_id, config, int(arg or 2000))
    raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
