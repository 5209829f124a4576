"""One process per endpoint directory (a manager, a user endpoint), held with a locked PID file.

Upstream judges staleness by the file's age; a kernel lock cannot go stale: it
is held exactly as long as the process that took it lives, so a crashed manager
never blocks the next start and a live one is never mistaken for dead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

PID_FILE = "daemon.pid"


class AlreadyRunning(Exception):
    """Another manager holds the lock; ``pid`` says which."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(
            f"another instance (pid {pid if pid else 'unknown'}) is running for {path.parent};"
            " refusing to start"
        )
        self.pid = pid


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    except ValueError:
        return None


class PidFile:
    """A held lock on ``<endpoint dir>/daemon.pid`` holding our pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(self._fd)
            os.close(self._fd)
            raise AlreadyRunning(path, pid) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = -1


def running_pid(endpoint_dir: Path) -> int | None:
    """The pid of the live manager of ``endpoint_dir``, or None if none runs."""
    path = endpoint_dir / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    finally:
        os.close(fd)
    return None
