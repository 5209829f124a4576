"""Parsl's worker pool, with its task workers forked instead of spawned.

Parsl's pool starts its task workers, and the server process of its
multiprocessing manager, with spawn: each is a fresh interpreter that imports
Parsl again. Measured per user with the default template (10 live user
endpoints, ``smaps_rollup``): a worker 31 MB, the manager's server 9 MB, and a
resource tracker 6 MB that spawn's named semaphores need, all private. Forked
from the pool after its imports, they share the pool's pages until they write
to them, and fork's semaphores need no tracker: the pool, its server and one
worker went from 79 to 48 MB of PSS, the user's whole tree from 151 to 120.

Fork has one hazard here, and :func:`close_inherited_sockets` removes it: a forked
child inherits every open descriptor, the pool's network sockets included.
The pool probes the interchange before it starts its workers and closes the
probe's connection right after; when a child was forked before ZeroMQ had
really closed it, the child kept that TCP connection open. The interchange then
still saw the pool's identity connected and ignored the pool's real connection,
and the user's first task waited forever (5 of 10 cold starts under load).
Workers talk to the pool and its manager only through pipes and Unix sockets,
so every IPv4 and IPv6 socket is closed in each child right after the fork.
The pool itself runs as before.

Before each fork the pool's objects are frozen (:func:`gc.freeze`): a full
collection in a worker would otherwise write to every inherited object, and so
copy every page it shares. After a task that runs ``gc.collect()`` a worker
measured 22.6 MB of PSS without the freeze and 16.8 with it.

The pool imports only the Parsl submodules it runs (:func:`uep.lean_parsl.defer`):
what the forked children share is then 14 MB rather than 25, and a task that
imports Parsl still gets all of it. And its manager has no server process:
:func:`served_manager` serves it from a thread of the pool (a user's tree 84.7
-> 79.1 MB); each child closes its copies of that server's sockets too.

Everything else a forked child needs is already fork-aware: the logging
module and multiprocessing's queues reset their locks and threads in the
child, the child never touches the pool's ZeroMQ context, and it runs as the
same user, in the same environment and cgroup as the pool it comes from.
"""

from __future__ import annotations

import gc
import multiprocessing.context
import os
import socket
import stat
import sys
import threading
import typing as t

from uep import lean_parsl

MODULE = "uep.worker_pool"
POOL = "parsl.executors.high_throughput.process_worker_pool"
NETWORK = (socket.AF_INET, socket.AF_INET6)


def command() -> list[str]:
    """How to run Parsl's worker pool this way, with this interpreter."""
    return [sys.executable, "-m", MODULE]


def _socket_of(fd: int) -> tuple[int, t.Any] | None:
    """(address family, local address) of descriptor ``fd`` if it is a socket, else None."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
        probe = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        return probe.family, probe.getsockname()
    except OSError:
        return probe.family, None
    finally:
        probe.detach()  # the descriptor stays open: only looked at


# Addresses of the manager servers this process serves from threads.
_SERVED: list[str] = []


def _inherited_by_mistake(family: int, address: t.Any) -> bool:
    """A socket a forked child must not keep: any IPv4/IPv6 one, and the server
    ends of its parent's manager. Holding the latter would keep a connection
    open for the peer after the pool itself is gone: a worker waiting on the
    manager would then wait forever instead of seeing the connection end."""
    return family in NETWORK or (family == socket.AF_UNIX and address in _SERVED)


def close_inherited_sockets() -> None:
    """In a just forked process: close the sockets it must not keep, in one pass."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        found = _socket_of(fd)
        if found is not None and _inherited_by_mistake(*found):
            os.close(fd)


def served_manager() -> t.Any:
    """A SyncManager whose server is a thread of this process, not a process of its own.

    Parsl's pool keeps two things in its manager: the task each worker is
    running (a dict the workers write and the pool reads when a worker dies)
    and the monitoring queue. A server process for them, even forked, cost 11
    MB of PSS per user (5.8 private). Served from a thread of the pool, the
    workers reach it as before, over its Unix socket.
    """
    from multiprocessing.managers import SyncManager

    server = SyncManager().get_server()
    _SERVED.append(server.address)
    threading.Thread(target=server.serve_forever, name="manager-server", daemon=True).start()
    manager = SyncManager(address=server.address)
    manager.connect()
    return manager


class PoolContext(multiprocessing.context.ForkContext):
    """The pool's multiprocessing context: fork, and a manager served by a thread."""

    def Manager(self) -> t.Any:
        return served_manager()


def fork_instead_of_spawn() -> None:
    """Make the pool fork what it would spawn; to be called before it is imported.

    The pool takes its multiprocessing context from ``parsl.multiprocessing``
    when its module is imported. Should a later Parsl stop doing so, its workers
    are spawned as before: more memory, nothing broken, and the test of the
    pool's process tree says so.
    """
    import parsl.multiprocessing as contexts

    contexts.SpawnContext = PoolContext()
    os.register_at_fork(before=gc.freeze, after_in_child=close_inherited_sockets)


def main() -> None:
    lean_parsl.install()
    lean_parsl.defer()
    fork_instead_of_spawn()
    lean_parsl.run(POOL, sys.argv[1:])


if __name__ == "__main__":
    main()
