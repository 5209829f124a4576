"""Researcher code for the fault suite: the unmodified official SDK, env-configured.

``batch_client.py ENDPOINT COUNT MARKS CONFIG PACE [POISON]``: registers one
function and submits COUNT tasks with ``Client.batch_run`` and the
``user_endpoint_config`` CONFIG (JSON; the service declares the task group's
result queue), then prints the task ids and the task group id as JSON. Each task
appends a line to ``MARKS/<n>`` before answering ``n``, so a test can tell a task
that ran twice; each takes PACE seconds (so a fault lands while work is in
flight); task POISON raises an error whose text holds a NUL and a NaN.
"""

import json
import sys

from globus_compute_sdk import Client

CHUNK = 100


def mark(n, marks, poison, pace):
    import time

    with open(f"{marks}/{n}", "a") as f:
        f.write("ran\n")
    time.sleep(pace)
    if n == poison:
        raise ValueError("poison: a NUL \x00 and a NaN " + repr(float("nan")))
    return n


def main(
    endpoint_id: str, count: int, marks: str, config: str, pace: float, poison: int = -1
) -> dict:
    client = Client()
    function_id = client.register_function(mark)
    task_ids, group = [], None
    for start in range(0, count, CHUNK):
        batch = client.create_batch(
            task_group_id=group,
            create_websocket_queue=True,
            user_endpoint_config=json.loads(config),
        )
        for n in range(start, min(count, start + CHUNK)):
            batch.add(function_id, args=(n, marks, poison, pace))
        answer = client.batch_run(endpoint_id, batch)
        group = answer["task_group_id"]
        task_ids += answer["tasks"][function_id]
    return {"task_ids": task_ids, "task_group_id": group}


if __name__ == "__main__":
    endpoint, count, marks, config, pace, *poison = sys.argv[1:]
    print(json.dumps(main(endpoint, int(count), marks, config, float(pace), *map(int, poison))))
