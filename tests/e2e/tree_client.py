"""Researcher code for the process-tree e2e test: unmodified official SDK, env-configured.

``run ENDPOINT CONFIG``: one task that starts a daemon of its own (double-forked,
in a new session, ignoring SIGTERM: the worst a researcher can leave behind)
and returns the pids it knows. ``sleep ENDPOINT CONFIG SECONDS``: a task that
sleeps; prints its id first, then the outcome (a result or the error text).
``fork ENDPOINT CONFIG N``: a task that tries to start N processes at once and
says how many it could. The last line printed is JSON.
"""

import json
import sys
import time

from globus_compute_sdk import Executor


def leave_a_daemon() -> dict:
    import os
    import signal
    import time

    read, write = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(write, str(os.getpid()).encode())
            while True:
                time.sleep(1)
        os._exit(0)
    daemon = int(os.read(read, 32))
    return {"worker": os.getpid(), "daemon": daemon, "uid": os.getuid()}


def nap(seconds: float) -> str:
    import time

    time.sleep(seconds)
    return "woke up"


def fork_many(count: int) -> dict:
    import os
    import time

    children, refused = [], None
    for _ in range(count):
        try:
            pid = os.fork()
        except OSError as e:
            refused = f"{type(e).__name__}: {e}"
            break
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return {"started": len(children), "refused": refused}


def main(mode: str, endpoint_id: str, config: str, *args: str) -> dict:
    with Executor(endpoint_id=endpoint_id, user_endpoint_config=json.loads(config)) as ex:
        if mode == "run":
            return ex.submit(leave_a_daemon).result(timeout=120)
        if mode == "fork":
            return ex.submit(fork_many, int(args[0])).result(timeout=120)
        future = ex.submit(nap, float(args[0]))
        deadline = time.monotonic() + 60
        while future.task_id is None and time.monotonic() < deadline:
            time.sleep(0.05)
        print(json.dumps({"task_id": future.task_id}))
        sys.stdout.flush()
        try:
            return {"result": future.result(timeout=150)}
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}"}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
