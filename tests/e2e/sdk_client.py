"""Unmodified official-SDK user code, run in a subprocess by the e2e tests.

Configured only by the environment (GLOBUS_SDK_ENVIRONMENT=local,
GLOBUS_SDK_SERVICE_URL_AUTH, GLOBUS_COMPUTE_CLIENT_ID/SECRET,
GLOBUS_COMPUTE_USER_DIR). Prints one JSON document describing what happened.
"""

import json
import sys

from globus_compute_sdk import Client, Executor


def add(a, b=0):
    return a + b


def boom(message):
    raise ValueError(message)


def executor_scenario(endpoint_id: str) -> dict:
    with Executor(endpoint_id=endpoint_id, user_endpoint_config={"account": "abc"}) as ex:
        ok = ex.submit(add, 2, b=40)
        bad = ex.submit(boom, "kaboom-from-remote")
        many = [ex.submit(add, i, b=i) for i in range(5)]
        out = {"add": ok.result(timeout=60), "many": [f.result(timeout=60) for f in many]}
        try:
            bad.result(timeout=60)
            out["boom"] = None
        except Exception as e:
            out["boom"] = f"{type(e).__name__}: {e}"
        out["task_group_id"] = str(ex.task_group_id)
        out["task_ids"] = [ok.task_id, bad.task_id]
    return out


def client_scenario(endpoint_id: str) -> dict:
    client = Client()
    function_id = client.register_function(add)
    with Executor(endpoint_id=endpoint_id) as ex:
        future = ex.submit_to_registered_function(function_id, args=(20,), kwargs={"b": 3})
        value = future.result(timeout=60)
        task_id = future.task_id
    task = client.get_task(task_id)
    batch = Client().get_batch_result([task_id])  # a fresh client: its cache is empty
    source_id = client.register_source_code("def triple(x):\n    return 3 * x\n", "triple")
    with Executor(endpoint_id=endpoint_id) as ex:
        tripled = ex.submit_to_registered_function(source_id, args=(7,)).result(timeout=60)
    return {
        "function_id": function_id,
        "value": value,
        "task": {k: task[k] for k in ("status", "result", "pending", "completion_t")},
        "batch": {tid: {"status": r["status"], "result": r["result"]} for tid, r in batch.items()},
        "status": client.get_endpoint_status(endpoint_id)["status"],
        "tripled": tripled,
    }


def failed_start_scenario(endpoint_id: str) -> dict:
    config = {"fail_start": "no local account is mapped to your identity"}
    with Executor(endpoint_id=endpoint_id, user_endpoint_config=config) as ex:
        future = ex.submit(add, 1, 1)
        try:
            return {"result": future.result(timeout=60)}
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}"}


def official_scenario(endpoint_id: str) -> dict:
    with Executor(endpoint_id=endpoint_id) as ex:
        out = {"add": ex.submit(add, 2, b=40).result(timeout=90)}
        try:
            ex.submit(boom, "kaboom-official").result(timeout=60)
        except Exception as e:
            out["boom"] = f"{type(e).__name__}: {e}"
    out["status"] = Client().get_endpoint_status(endpoint_id)["status"]
    return out


def access_scenario(endpoint_id: str, allowed_id: str) -> dict:
    """An endpoint restricted to one function: what the SDK shows and what it refuses."""
    out = {"allowed_functions": Client().get_allowed_functions(endpoint_id)}
    with Executor(endpoint_id=endpoint_id) as ex:
        out["allowed"] = ex.submit_to_registered_function(allowed_id, args=(1, 2)).result(
            timeout=60
        )
        try:
            ex.submit(boom, "never runs").result(timeout=60)
            out["refused"] = None
        except Exception as e:
            out["refused"] = f"{type(e).__name__}: {e}"
    return out


if __name__ == "__main__":
    scenario, endpoint, *rest = sys.argv[1:]
    print(json.dumps(globals()[f"{scenario}_scenario"](endpoint, *rest)))
