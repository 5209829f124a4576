"""One call made in a short-lived forked child, its JSON-able answer sent back.

The manager lives for weeks, yet some of its work needs a large library once
or rarely: the HTTP stack (globus-sdk, requests, jwt) to register at start,
cryptography to seal a user endpoint's broker credentials at each start or
refresh. Held in the manager, each would cost memory for the rest of its life;
so the call runs in a child that imports what it needs, answers through a pipe
and exits. The parent never imports any of it and gets plain JSON back. A user
endpoint renders its config this way too (:mod:`uep.launch`): Jinja and
jsonschema never load in it, nor in the interchange forked from it.

The child is a copy of its caller (same account, same code, no exec), so it
is as trusted as the caller. A caller that needs to pass a refusal back (a
registration's exit code, say) returns it as a value; anything the call raises
comes back as :class:`ChildCallFailed`, with its type and message.

The child dies with its caller: a registration stuck on the network, or a
render, must not outlive a manager or user endpoint killed while it waits.
Linux sends the parent-death signal (``PR_SET_PDEATHSIG``, which Python's
standard library does not expose) when the thread that forked the child ends,
and that thread is blocked here until the child is reaped. The root monitor
arms the same signal for what it spawns in its own code
(:mod:`mep.monitor.spawn`), since it imports nothing from this package.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import typing as t

PR_SET_PDEATHSIG = 1


class ChildCallFailed(Exception):
    """The call raised in the child, or the child died without answering."""


def call_in_child(call: t.Callable[[], t.Any]) -> t.Any:
    """``call()`` run in a forked child; its result, or :class:`ChildCallFailed`."""
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _answer(call, write_end, parent)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    _, status = os.waitpid(pid, 0)
    return _outcome(raw, status)


def _answer(call: t.Callable[[], t.Any], fd: int, parent: int) -> t.NoReturn:
    """In the child: write ``{"value"|"failed": ...}`` and exit, whatever happens."""
    try:
        try:
            _die_with_caller(parent)
            payload = json.dumps({"value": call()})
        except BaseException as e:  # any failure is reported to the parent, never lost
            payload = json.dumps({"failed": f"{type(e).__name__}: {e}"})
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(payload.encode())
    finally:
        os._exit(0)


def _die_with_caller(parent: int) -> None:
    """In the child: SIGKILL when the caller ends; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(1)


def _outcome(raw: bytes, status: int) -> t.Any:
    """The parent's reading of the child's answer (pure)."""
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if not isinstance(document, dict) or len(document) != 1:
        raise ChildCallFailed(f"the child process gave no answer (wait status {status})")
    if "value" in document:
        return document["value"]
    raise ChildCallFailed(str(document.get("failed")))
