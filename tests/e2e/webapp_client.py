"""Researcher code for the web app's browser test: unmodified official SDK, env-configured.

Submits ``count`` short naps and one function that raises, waits for all of
them, and prints one JSON document with the task ids of each kind.
"""

import json
import sys

from globus_compute_sdk import Executor


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def broken_division():
    return {"answer": 1 / 0}


def main(endpoint_id: str, count: int, seconds: float) -> dict:
    with Executor(endpoint_id=endpoint_id, user_endpoint_config={"label": "web"}) as ex:
        naps = [ex.submit(nap, seconds) for _ in range(count)]
        failing = ex.submit(broken_division)
        results = [f.result(timeout=150) for f in naps]
        try:
            failing.result(timeout=150)
            error = None
        except Exception as e:  # the SDK raises the remote failure as its own exception
            error = f"{type(e).__name__}: {e}"
    assert results == [seconds] * count, results
    return {"ok": [f.task_id for f in naps], "failed": failing.task_id, "error": error}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))
