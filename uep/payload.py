"""The launch payload a manager writes on the user endpoint's stdin.

One JSON object: ``amqp_creds``, ``ep_info``, and either ``render`` (the
template, options and identity to render as this user, from our manager) or
``config`` (an already rendered YAML, the 4.19 form); optionally
``allowed_functions``, ``audit_fd``, ``note_fd`` (where to say why a start was
refused) and the 4.19 credential refresh pair ``mem_fd`` + ``enckey`` (a
Fernet-encrypted ``{"amqp_creds": ...}`` the endpoint re-reads before every
connection, so rotated credentials take effect).
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing as t

from templates.render_request import RenderRequest, RenderRequestError
from wire.queue_info import AmqpCreds


class PayloadError(ValueError):
    """The payload is unusable; the message says which field and why."""


@dataclasses.dataclass(frozen=True)
class LaunchPayload:
    config_text: str | None
    ep_info: dict
    render: RenderRequest | None = None
    note_fd: int | None = None
    amqp_creds: AmqpCreds | None = None
    allowed_functions: tuple[str, ...] | None = None
    audit_fd: int | None = None
    mem_fd: int | None = None
    enckey: str | None = None


def _optional_int(data: dict, key: str) -> int | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise PayloadError(f"{key}: expected a file descriptor number, got {value!r}")
    return value


def parse_payload(raw: bytes | str) -> LaunchPayload:
    """Validate the payload; raises PayloadError (never echoes credentials)."""
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise PayloadError(f"the launch payload on stdin is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise PayloadError("the launch payload on stdin must be a JSON object")
    config, render = data.get("config"), data.get("render")
    if (config is None) == (render is None):
        raise PayloadError("expected one of render (what to render) and config (rendered)")
    if config is not None and not isinstance(config, str):
        raise PayloadError("config: expected the rendered endpoint configuration (a string)")
    try:
        render = None if render is None else RenderRequest.from_document(render)
    except RenderRequestError as e:
        raise PayloadError(str(e)) from None
    ep_info = data.get("ep_info") or {}
    if not isinstance(ep_info, dict):
        raise PayloadError("ep_info: expected an object")
    allowed = data.get("allowed_functions")
    if allowed is not None:
        if not isinstance(allowed, list) or not all(isinstance(f, str) for f in allowed):
            raise PayloadError("allowed_functions: expected a list of function ids")
        allowed = tuple(allowed)
    mem_fd, enckey = _optional_int(data, "mem_fd"), data.get("enckey")
    if (mem_fd is None) != (enckey is None):
        raise PayloadError("mem_fd and enckey come together (credential refresh)")
    creds = data.get("amqp_creds")
    if creds is None and mem_fd is None:
        raise PayloadError("amqp_creds: missing (and no mem_fd to read them from)")
    return LaunchPayload(
        config_text=config,
        ep_info=ep_info,
        render=render,
        note_fd=_optional_int(data, "note_fd"),
        amqp_creds=None if creds is None else AmqpCreds.from_dict(creds),
        allowed_functions=allowed,
        audit_fd=_optional_int(data, "audit_fd"),
        mem_fd=mem_fd,
        enckey=enckey,
    )


def read_mem_creds(mem_fd: int, enckey: str) -> AmqpCreds:
    """Decrypt the manager's current credentials from the memfd (read from offset 0)."""
    from cryptography.fernet import Fernet, InvalidToken

    size = os.fstat(mem_fd).st_size
    token = os.pread(mem_fd, size, 0)
    try:
        document = json.loads(Fernet(enckey.encode()).decrypt(token))
    except (InvalidToken, ValueError) as e:
        raise PayloadError(f"cannot read credentials from mem_fd {mem_fd}: {e!r}") from None
    return AmqpCreds.from_dict(document.get("amqp_creds") if isinstance(document, dict) else None)


def credential_source(payload: LaunchPayload) -> t.Callable[[], AmqpCreds]:
    """A function giving the credentials to use for the next connection."""
    if payload.mem_fd is None:
        static = payload.amqp_creds
        return lambda: static

    def refreshed() -> AmqpCreds:
        try:
            return read_mem_creds(payload.mem_fd, payload.enckey)
        except (PayloadError, OSError):
            if payload.amqp_creds is None:
                raise
            return payload.amqp_creds

    return refreshed
