"""The manager's side of the socket to its monitor (:mod:`mep.monitor.server`).

Every request gets exactly one reply; the monitor also sends ``exited`` events
whenever a user endpoint ends, which may arrive while a request waits for its
reply: they are kept and handed out by :meth:`MonitorLink.events`. If the
monitor is gone, :class:`MonitorGone` is raised and the manager must end (it
cannot start, read or report anything without the monitor).
"""

from __future__ import annotations

import dataclasses
import os
import select
import socket
import stat
import typing as t

from mep.monitor import channel

MAX_FILE_BYTES = 1 << 20


class MonitorGone(Exception):
    """The monitor closed the channel."""


class MonitorRefused(Exception):
    """The monitor answered a request with an error (the message is the admin's)."""


@dataclasses.dataclass(frozen=True)
class FileText:
    """A file the monitor opened for us: its text and what changes when it is edited."""

    text: str
    signature: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class Exited:
    """A user endpoint that ended, as the monitor reaped it."""

    name: str
    pid: int
    rc: int | None
    signal: int | None
    ran_s: float
    stop_requested: bool


@dataclasses.dataclass(frozen=True)
class SpawnRefused:
    step: str
    admin_message: str
    user_message: str


class MonitorLink:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(True)
        self._events: list[Exited] = []

    @classmethod
    def from_fd(cls, fd: int) -> MonitorLink:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    # ---- requests ------------------------------------------------------
    def _request(self, message: dict, fds: t.Sequence[int] = ()) -> tuple[dict, list[int]]:
        try:
            channel.send(self.sock, message, fds)
            while True:
                reply, got = channel.receive(self.sock)
                if reply.get("event") != "exited":
                    return reply, got
                channel.close_all(got)
                self._events.append(_exited(reply))
        except (channel.ChannelClosed, ConnectionError, BrokenPipeError) as e:
            raise MonitorGone(str(e)) from None

    def read(self, file: str) -> FileText | None:
        """One of the admin's files by name (``mep.monitor.requests.FILES``); None if absent."""
        reply, fds = self._request({"op": "read", "file": file})
        if not reply.get("ok"):
            if reply.get("missing"):
                return None
            raise MonitorRefused(str(reply.get("error")))
        (fd,) = fds
        with os.fdopen(fd, "rb") as f:
            status = os.fstat(f.fileno())
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise MonitorRefused(f"the {file} file is larger than {MAX_FILE_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MonitorRefused(f"the {file} file is not UTF-8: {e}") from None
        return FileText(text, _signature(status))

    def read_text(self, file: str) -> str | None:
        found = self.read(file)
        return None if found is None else found.text

    def registered(self, endpoint_id: str, heartbeat_period: float) -> None:
        self._request(
            {"op": "registered", "endpoint_id": endpoint_id, "heartbeat_period": heartbeat_period}
        )

    def status(self, connected: bool) -> None:
        self._request({"op": "status", "connected": connected})

    def spawn(
        self,
        *,
        name: str,
        user: str,
        endpoint_id: str,
        identity: str | None,
        env: dict[str, str],
        fds: tuple[int, int, int],
    ) -> int | SpawnRefused:
        """The user endpoint's pid, or why the monitor did not start it."""
        message = {
            "op": "spawn",
            "name": name,
            "user": user,
            "endpoint_id": endpoint_id,
            "identity": identity,
            "env": env,
        }
        reply, _ = self._request(message, fds)
        if reply.get("ok"):
            return int(reply["pid"])
        return SpawnRefused(
            str(reply.get("step")), str(reply.get("admin_message")), str(reply.get("user_message"))
        )

    # ---- events --------------------------------------------------------
    def events(self) -> list[Exited]:
        """Every exit reported so far, without blocking."""
        try:
            while select.select([self.sock], [], [], 0)[0]:
                message, got = channel.receive(self.sock)
                channel.close_all(got)
                if message.get("event") == "exited":
                    self._events.append(_exited(message))
        except (channel.ChannelClosed, ConnectionError) as e:
            raise MonitorGone(str(e)) from None
        found, self._events = self._events, []
        return found


def _exited(message: dict) -> Exited:
    return Exited(
        name=str(message["name"]),
        pid=int(message["pid"]),
        rc=message.get("rc"),
        signal=message.get("signal"),
        ran_s=float(message.get("ran_s") or 0.0),
        stop_requested=bool(message.get("stop_requested")),
    )


def _signature(status: os.stat_result) -> tuple[int, int, int, int]:
    if not stat.S_ISREG(status.st_mode):
        raise MonitorRefused("not a regular file")
    return (status.st_ino, status.st_ctime_ns, status.st_mtime_ns, status.st_size)
