"""One call made in a short-lived forked child, its JSON-able answer sent back.

The manager lives for weeks but talks HTTP only at start, to register. The
HTTP stack (globus-sdk, requests, cryptography, jwt) is about half of what the
manager would hold in memory for the rest of its life, so the registration
runs in a child that imports it, answers through a pipe and exits. The parent
never imports any of it; what comes back is plain JSON, checked by the pure
code of :mod:`mep.registration`.

The child is a copy of the manager (same account, same code, no exec), so it
is as trusted as the caller; a registration refusal crosses the pipe as its
exit code and message, anything else as a failure the admin can read.
"""

from __future__ import annotations

import json
import os
import typing as t

from mep.registration import EX_SOFTWARE, RegistrationError


def call_in_child(call: t.Callable[[], t.Any]) -> t.Any:
    """``call()`` run in a forked child; its result, or its RegistrationError re-raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _answer(call, write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    _, status = os.waitpid(pid, 0)
    return _outcome(raw, status)


def _answer(call: t.Callable[[], t.Any], fd: int) -> t.NoReturn:
    """In the child: write ``{"value"|"refused"|"failed": ...}`` and exit, whatever happens."""
    try:
        try:
            payload = json.dumps({"value": call()})
        except RegistrationError as e:
            payload = json.dumps({"refused": [e.exit_code, str(e)]})
        except BaseException as e:  # any failure is reported to the parent, never lost
            payload = json.dumps({"failed": f"{type(e).__name__}: {e}"})
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(payload.encode())
    finally:
        os._exit(0)


def _outcome(raw: bytes, status: int) -> t.Any:
    """The parent's reading of the child's answer (pure)."""
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if not isinstance(document, dict) or len(document) != 1:
        raise RegistrationError(
            EX_SOFTWARE, f"the registration process gave no answer (wait status {status})"
        )
    if "value" in document:
        return document["value"]
    if "refused" in document:
        code, message = document["refused"]
        raise RegistrationError(int(code), str(message))
    raise RegistrationError(EX_SOFTWARE, f"the registration failed: {document.get('failed')}")
