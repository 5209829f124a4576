"""The worker pool forks its task workers, and a fork keeps none of the pool's
network connections open.

Each case runs in a fresh interpreter: the fork hook is process-wide.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from uep import worker_pool

REPO = Path(__file__).resolve().parents[2]

# A parent holds a TCP connection and a Unix socket pair, forks a child that
# stays alive, then closes its end of the TCP connection: does the peer see it
# closed while the child lives, and what does the child still hold?
FORKING_PROGRAM = """
import json, multiprocessing, socket, sys
from uep import worker_pool

if sys.argv[1] == "hook":
    worker_pool.fork_instead_of_spawn()

def child(unix_end, report, release):
    import os
    found = [worker_pool._socket_of(int(fd)) for fd in os.listdir("/proc/self/fd")]
    families = [f[0] if f else None for f in found]
    unix_end.sendall(b"still here")
    report.put(sorted(int(f) for f in families if f is not None))
    release.wait(30)

listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
peer, _ = listener.accept()
ours, theirs = socket.socketpair()
ctx = multiprocessing.get_context("fork")
report, release = ctx.Queue(), ctx.Event()
process = ctx.Process(target=child, args=(theirs, report, release))
process.start()
families = report.get(timeout=30)
client.close()
peer.settimeout(2)
try:
    closed = peer.recv(1) == b""
except TimeoutError:
    closed = False
release.set()
process.join(30)
print(json.dumps({"closed": closed, "child_sockets": families, "unix": ours.recv(10).decode()}))
"""


def _run(program: str, *args: str) -> dict:
    """The JSON document ``program`` prints last, run in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_the_hook_a_forked_child_keeps_the_connection_open():
    """The premise: the child's copy of the descriptor keeps the TCP connection up."""
    seen = _run(FORKING_PROGRAM, "plain")
    assert seen["closed"] is False
    assert int(socket.AF_INET) in seen["child_sockets"]


def test_with_the_hook_the_child_holds_no_network_socket():
    seen = _run(FORKING_PROGRAM, "hook")
    assert seen["closed"] is True
    assert seen["child_sockets"] == [int(socket.AF_UNIX)] * len(seen["child_sockets"])
    assert seen["child_sockets"]  # the pair and the queues' sockets stay usable
    assert seen["unix"] == "still here"


def test_the_pool_forks_what_it_would_spawn():
    program = (
        "from uep import worker_pool; worker_pool.fork_instead_of_spawn();"
        f"import {worker_pool.POOL} as pool; print(pool.SpawnContext.get_start_method())"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split()[-1] == "fork"


def test_its_command_runs_this_module_with_this_interpreter():
    assert worker_pool.command() == [sys.executable, "-m", "uep.worker_pool"]


# A forked child writes to the pool's manager dict and reports what it holds of
# the manager's server; the parent reads the dict back and counts its own children.
MANAGER_PROGRAM = """
import json, os, socket, sys
from uep import worker_pool

if sys.argv[1] == "hook":
    worker_pool.fork_instead_of_spawn()
context = worker_pool.PoolContext()
manager = context.Manager()
in_progress, queue = manager.dict(), manager.Queue()
address = worker_pool._SERVED[0]

def child(in_progress, queue):
    held = [fd for fd in map(int, os.listdir("/proc/self/fd"))
            if worker_pool._socket_of(fd) == (socket.AF_UNIX, address)]
    in_progress[os.getpid()] = "task 7"
    queue.put(len(held))

process = context.Process(target=child, args=(in_progress, queue))
process.start()
held = queue.get(timeout=30)
process.join(30)
children = open(f"/proc/self/task/{os.getpid()}/children").read().split()
print(json.dumps({"seen": dict(in_progress), "held": held, "children": children,
                  "child": str(process.pid), "exit": process.exitcode}))
"""


def test_the_pools_manager_is_served_by_a_thread_and_a_forked_worker_reaches_it():
    """No server process: the pool has no child but the worker, and what the worker
    wrote is in the pool's dict."""
    seen = _run(MANAGER_PROGRAM, "hook")
    assert seen["exit"] == 0
    assert seen["seen"] == {seen["child"]: "task 7"}
    assert seen["children"] == []  # the worker has been joined; nothing else was started


def test_a_forked_worker_holds_none_of_the_managers_server_sockets():
    """The premise without the hook (the server's listener and its connections are
    inherited), then with it."""
    assert _run(MANAGER_PROGRAM, "plain")["held"] > 0
    assert _run(MANAGER_PROGRAM, "hook")["held"] == 0
