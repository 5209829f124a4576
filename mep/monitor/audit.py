"""The audit log: who ran what, as the official line format, and fail-closed.

Records from user endpoints arrive on per-endpoint packet pipes (``O_DIRECT``,
one record per write) whose write end the user endpoint gets as ``audit_fd``.
The monitor prefixes each with the endpoint's uid, pid and id and appends it to
the log. If the log cannot be written the monitor must stop: an audited
endpoint that keeps running unaudited is worse than one that stops.

The writing end belongs to a researcher's process, so each pipe has a budget:
at most ``RATE_BYTES`` a second (``BURST_BYTES`` at once) reach the log, and one
drain reads at most ``PACKETS_PER_DRAIN`` records of one pipe. A user endpoint
that writes faster finds its pipe full and waits (its own tasks stall); the
monitor's loop, the disk and every other user's endpoint are not affected.
Nothing is dropped: records wait in the pipe until the budget allows them.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import select
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
PACKET_MAX = 4096
RATE_BYTES = 256 * 1024
BURST_BYTES = 1024 * 1024
PACKETS_PER_DRAIN = 64


class AuditWriteError(Exception):
    """The audit log could not be written; the manager stops."""


def clean(payload: str) -> str:
    """One line per record: newlines become spaces, CR and NUL go."""
    return payload.replace("\n", " ").replace("\r", "").replace("\0", "")


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat()


def record_line(uid: int, pid: int, uep_id: str, payload: str, when: str | None = None) -> str:
    return f"{when or _now()} uid={uid} pid={pid} uep={uep_id} {clean(payload)}\n"


def session_line(uid: int, pid: int, endpoint_id: str, begin: bool, when: str | None = None) -> str:
    marker = "Begin MEP session =====" if begin else "End MEP session -----"
    return f"{when or _now()} uid={uid} pid={pid} eid={endpoint_id} {marker}\n"


@dataclasses.dataclass
class _Pipe:
    """One user endpoint's pipe: who writes it, and what it may still write now."""

    uid: int
    pid: int
    uep_id: str
    allowance: float
    checked_at: float
    throttled: bool = False

    def refill(self, now: float) -> None:
        self.allowance = min(BURST_BYTES, self.allowance + (now - self.checked_at) * RATE_BYTES)
        self.checked_at = now


class AuditLog:
    """An append-only 0600 file; every failure raises :class:`AuditWriteError`."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise AuditWriteError(f"cannot open audit log {path}: {e}") from None
        self.path = path
        self._clock = clock
        self._pipes: dict[int, _Pipe] = {}

    def write(self, line: str) -> None:
        data = line.encode("utf-8", "replace")
        try:
            if os.write(self._fd, data) != len(data):
                raise OSError("short write")
        except OSError as e:
            raise AuditWriteError(f"cannot write audit log {self.path}: {e}") from None

    def open_pipe(self) -> tuple[int, int]:
        """A packet pipe for one user endpoint: (read end kept here, write end for the child)."""
        read_end, write_end = os.pipe2(os.O_DIRECT | os.O_CLOEXEC)
        os.set_blocking(read_end, False)
        return read_end, write_end

    def watch(self, read_end: int, uid: int, pid: int, uep_id: str) -> None:
        self._pipes[read_end] = _Pipe(uid, pid, uep_id, BURST_BYTES, self._clock())

    def drain(self, timeout_s: float = 0.0) -> None:
        """Copy pending records into the log, within each pipe's budget; close pipes at EOF."""
        if not self._pipes:
            return
        readable, _, _ = select.select(list(self._pipes), [], [], timeout_s)
        now = self._clock()
        for fd in readable:
            pipe = self._pipes[fd]
            pipe.refill(now)
            if self._copy(fd, pipe) == "eof":
                del self._pipes[fd]
                os.close(fd)

    def _copy(self, fd: int, pipe: _Pipe) -> str:
        for _ in range(PACKETS_PER_DRAIN):
            if pipe.allowance < PACKET_MAX:
                self._throttled(pipe)
                return "budget"
            try:
                packet = os.read(fd, PACKET_MAX)
            except BlockingIOError:
                return "empty"
            if not packet:
                return "eof"
            pipe.allowance -= len(packet)
            text = packet.decode("utf-8", "replace")
            self.write(record_line(pipe.uid, pipe.pid, pipe.uep_id, text))
        return "more"

    @staticmethod
    def _throttled(pipe: _Pipe) -> None:
        if not pipe.throttled:
            pipe.throttled = True
            log.warning(
                "user endpoint %s (uid %d, pid %d) writes audit records faster than %d KiB/s;"
                " they wait in its pipe, and its tasks with them",
                pipe.uep_id,
                pipe.uid,
                pipe.pid,
                RATE_BYTES // 1024,
            )

    def close(self) -> None:
        for fd in list(self._pipes):
            os.close(fd)
        self._pipes.clear()
        os.close(self._fd)
