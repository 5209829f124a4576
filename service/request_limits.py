"""What every request body must be before any route sees it.

- At most ``MAX_BODY_BYTES`` (413 otherwise, also for a chunked body that
  only turns out too big while it streams in).
- A JSON body must be UTF-8 JSON, nest at most ``MAX_DEPTH`` levels and hold
  no NUL character in any string or key: PostgreSQL cannot store one, and
  everything here is stored. Each refusal names where the problem is
  (``tasks.<function>[3]``), in the official error shape.

Deciding is pure (:func:`json_problem`); :class:`RequestLimits` is the ASGI
edge that buffers the body, asks, and replays the body to the app.
"""

from __future__ import annotations

import json
import logging
import typing as t

from service.errors import body as error_body

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 128 << 20
MAX_DEPTH = 64


def _shown(path: str) -> str:
    if not path:
        return "the request body"
    return path if len(path) <= 120 else f"{path[:60]}...{path[-40:]}"


def _walk(value: t.Any, path: str, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"{_shown(path)} nests more than {MAX_DEPTH} levels deep"
    if isinstance(value, str):
        return f"{_shown(path)} holds a NUL character" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return f"a key in {_shown(path)} holds a NUL character"
            problem = _walk(item, where, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = _walk(item, f"{path}[{index}]", depth + 1)
            if problem:
                return problem
    return None


def json_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not a JSON body we accept, or None."""
    if not raw.strip():
        return None  # FastAPI itself says what is missing
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return f"the request body is not UTF-8 (byte {e.start})"
    except RecursionError:
        return f"the request body nests more than {MAX_DEPTH} levels deep"
    except ValueError:
        return None  # not JSON at all: FastAPI answers that with the field it expected
    return _walk(value, "", 0)


class RequestLimits:
    """ASGI middleware: refuse oversized and unstorable bodies before routing."""

    def __init__(self, app: t.Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: t.Callable, send: t.Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode() or "0"
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _refuse(scope, send, 413, _too_big())
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _refuse(scope, send, 413, _too_big())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        if b"json" in headers.get(b"content-type", b""):
            problem = json_problem(raw)
            if problem:
                await _refuse(scope, send, 400, f"invalid request: {problem}")
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(scope, replay, send)


def _too_big() -> str:
    return (
        f"the request body is larger than {MAX_BODY_BYTES >> 20} MiB; send fewer or smaller"
        " tasks per request"
    )


async def _refuse(scope: dict, send: t.Callable, status: int, reason: str) -> None:
    client = scope.get("client") or ("?", 0)
    log.info("refused %s %s from %s: %s", scope["method"], scope["path"], client[0], reason)
    payload = json.dumps(error_body(status, reason)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
