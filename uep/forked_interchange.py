"""Parsl's interchange forked from the user endpoint, not started as a new program.

Started as a program, the interchange is a fresh interpreter that imports Parsl
again: 31 MB of private memory per user (10 live user endpoints,
``smaps_rollup``), nearly all of it a second copy of what the user endpoint
has already loaded. Forked once the endpoint has imported Parsl's executor and
the interchange's module, it shares those pages with the endpoint and pays only
for what it writes: the endpoint and its interchange went from 70 to 53 MB of
PSS, the user's whole tree from 120 to 102.5 MB.

What the fork must not carry over, and how it is left behind:

- **descriptors**: the endpoint's broker connection, its state database, the
  lock on its directory, the manager's audit and note pipes, the credential
  memfd. A child holding any of them would keep a connection or a lock alive
  after the endpoint is gone. The child closes every descriptor but standard
  input, output and error before anything else runs, as ``close_fds`` does
  before an exec; its configuration comes through a pipe, as it did on stdin.
- **signal handling and logging**: default dispositions again, no wakeup
  descriptor, and the endpoint's log handlers removed: the interchange logs to
  its own file, as before.
- **the collector's work**: :func:`gc.freeze` before the fork keeps both sides'
  collections off the shared objects, or a collection in either process would
  write to every inherited page and copy it.

It runs as the same user, with the same environment, in the same cgroup and
process group as an exec'd interchange would. Parsl starts the interchange
through ``subprocess.Popen`` in its executor module; :func:`install` has that
one call make a :class:`ForkedProgram`, which answers the ``Popen`` methods
Parsl and the engine use (``poll``, ``wait``, ``terminate``, ``kill``), so
Parsl's own code still builds the configuration and stops the interchange.
Should a later Parsl start it some other way, its launch command (the lean one,
:mod:`uep.lean_parsl`) runs as before: more memory, nothing broken, and the
test of the interchange's shared pages says so.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
import typing as t

TITLE = "parsl: HTEX interchange"
DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1)
POLL_S = 0.05


class ForkedProgram:
    """The forked interchange, with the face of the ``subprocess.Popen`` Parsl expects."""

    def __init__(self, args: t.Any, stdin: t.Any = None, **_: t.Any) -> None:
        self.args = args
        self.returncode: int | None = None
        self._reaping = threading.Lock()
        read, write = os.pipe()
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:  # e.g. the user's process limit: the engine fails to start
            os.close(read)
            os.close(write)
            raise
        if pid == 0:
            self._child(read)
        os.close(read)
        self.pid = pid
        self.stdin = os.fdopen(write, "wb")

    def _child(self, read: int) -> t.NoReturn:
        _run_interchange(read)

    def poll(self) -> int | None:
        """The exit code once the child is gone; the engine's status thread and
        Parsl's shutdown may ask at once, so one of them reaps it."""
        with self._reaping:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:  # reaped by no one we know: gone, status lost
                    self.returncode = 0
                else:
                    if pid == self.pid:
                        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(POLL_S)
        return t.cast(int, self.returncode)

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __repr__(self) -> str:
        return f"<ForkedProgram pid={self.pid} returncode={self.returncode}>"


def _forget_the_endpoint(keep: int) -> None:
    """In the child: none of the endpoint's descriptors, handlers or log output."""
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    signal.set_wakeup_fd(-1)
    for signum in DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    logging.getLogger().handlers.clear()


def _run_interchange(read: int) -> t.NoReturn:
    """The child's whole life: Parsl's interchange main, then out without the
    endpoint's exit handlers."""
    code = 1
    try:
        _forget_the_endpoint(read)
        from parsl.executors.high_throughput.interchange import Interchange
        from setproctitle import setproctitle

        with os.fdopen(read, "rb") as pipe:
            config = pickle.load(pipe)
        setproctitle(TITLE)
        Interchange(**config).start()
        code = 0
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)


def install(executor: t.Any) -> None:
    """Have this executor fork its interchange when it starts it."""
    import parsl.executors.high_throughput.executor as module
    import parsl.executors.high_throughput.interchange  # noqa: F401 - shared with the fork

    start = executor._start_local_interchange_process
    forking = types.SimpleNamespace(
        Popen=ForkedProgram, PIPE=subprocess.PIPE, TimeoutExpired=subprocess.TimeoutExpired
    )

    def start_forked() -> None:
        module.subprocess = forking
        try:
            start()
        finally:
            module.subprocess = subprocess

    executor._start_local_interchange_process = start_forked
