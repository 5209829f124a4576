"""The socket between the monitor and the manager: one JSON object per packet, plus descriptors.

A ``SOCK_SEQPACKET`` socketpair keeps message boundaries, so a message is
exactly one packet: no length prefixes to trust, no partial reads to
reassemble. Descriptors travel beside it with ``SCM_RIGHTS`` and arrive
close-on-exec. A packet that is too large, carries too many descriptors, is
truncated, or is not a JSON object raises :class:`ChannelError`; whatever
descriptors it carried are closed first, so a bad message leaks nothing.

Used by both sides; stdlib only, since the monitor must not load more.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import typing as t

MAX_MESSAGE = 64 * 1024
MAX_FDS = 8


class ChannelClosed(Exception):
    """The other side has gone (end of stream)."""


class ChannelError(Exception):
    """A packet that is not a message of this protocol."""


def socketpair() -> tuple[socket.socket, socket.socket]:
    """(monitor's end, manager's end), both close-on-exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


def send(sock: socket.socket, message: dict[str, t.Any], fds: t.Sequence[int] = ()) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE or len(fds) > MAX_FDS:
        raise ChannelError(f"message too large ({len(data)} bytes, {len(fds)} descriptors)")
    socket.send_fds(sock, [data], list(fds))


def receive(sock: socket.socket) -> tuple[dict[str, t.Any], list[int]]:
    """The next message and its descriptors (the caller owns and must close them)."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE + 1, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
    try:
        if not data and not fds:
            raise ChannelClosed("the other side closed the channel")
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_MESSAGE:
            raise ChannelError("a truncated or oversized packet")
        return _decode(data), fds
    except BaseException:
        close_all(fds)
        raise


def _decode(data: bytes) -> dict[str, t.Any]:
    try:
        message = json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:
        raise ChannelError(f"not JSON: {type(e).__name__}") from None
    if not isinstance(message, dict):
        raise ChannelError("not a JSON object")
    return message


def _no_duplicates(pairs: list[tuple[str, t.Any]]) -> dict[str, t.Any]:
    """Refuse ``{"a": 1, "a": 2}``: two readers could disagree on which one counts."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a key appears twice")
    return result


def close_all(fds: t.Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def sealed_memfd(data: bytes, name: str = "compute-agent-payload") -> int:
    """``data`` in a sealed memory file: any size, no pipe buffer, no writer needed, unchangeable."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
