"""The audit log: who ran what, as the official line format, and fail-closed.

Records from user endpoints arrive on per-endpoint packet pipes (``O_DIRECT``,
one record per write) whose write end the user endpoint gets as ``audit_fd``.
The manager prefixes each with the endpoint's uid, pid and id and appends it to
the log. If the log cannot be written the manager must stop: an audited
endpoint that keeps running unaudited is worse than one that stops.
"""

from __future__ import annotations

import datetime
import os
import select
from pathlib import Path

PACKET_MAX = 4096


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


class AuditLog:
    """An append-only 0600 file; every failure raises :class:`AuditWriteError`."""

    def __init__(self, path: Path) -> None:
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise AuditWriteError(f"cannot open audit log {path}: {e}") from None
        self.path = path
        self._pipes: dict[int, tuple[int, int, str]] = {}

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
        self._pipes[read_end] = (uid, pid, uep_id)

    def drain(self, timeout_s: float = 0.0) -> None:
        """Copy every pending record from every pipe into the log; close pipes at EOF."""
        if not self._pipes:
            return
        readable, _, _ = select.select(list(self._pipes), [], [], timeout_s)
        for fd in readable:
            uid, pid, uep_id = self._pipes[fd]
            while True:
                try:
                    packet = os.read(fd, PACKET_MAX)
                except BlockingIOError:
                    break
                if not packet:
                    del self._pipes[fd]
                    os.close(fd)
                    break
                self.write(record_line(uid, pid, uep_id, packet.decode("utf-8", "replace")))

    def close(self) -> None:
        for fd in list(self._pipes):
            os.close(fd)
        self._pipes.clear()
        os.close(self._fd)
