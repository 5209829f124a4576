"""Researcher code for the appliance e2e test: unmodified official SDK, env-configured.

Prints one JSON document: who the task ran as, and what a bad option produced.
"""

import json
import sys

from globus_compute_sdk import Executor


def whoami():
    """Who runs the task; with a ThreadPoolEngine that is the user endpoint itself."""
    import getpass
    import os
    import sys

    return {
        "rendering_loaded": sorted({"jinja2", "jsonschema"} & set(sys.modules)),
        "user": getpass.getuser(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": sorted(os.getgroups()),
        "home": os.environ.get("HOME"),
        "secret_in_env": any("SECRET" in k for k in os.environ),
        "env_keys": sorted(os.environ),
    }


def fails():
    raise RuntimeError("raised by the researcher's function")


def main(endpoint_id: str, mode: str) -> dict:
    if mode == "run":
        with Executor(endpoint_id=endpoint_id, user_endpoint_config={"label": "e2e"}) as ex:
            first = ex.submit(whoami)
            broken = ex.submit(fails)
            return {"whoami": outcome(first), "error": outcome(broken)}
    with Executor(endpoint_id=endpoint_id, user_endpoint_config={"label": 5}) as ex:
        return {"error": outcome(ex.submit(whoami))}


def outcome(future):
    """The task's result, or its exception as text (what a researcher would read)."""
    try:
        return future.result(timeout=120)
    except Exception as e:
        return f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
