"""Reading a start command off the wire, before any decision is made.

The service sends ``cmd_start_endpoint`` as JSON with AMQP properties. This
module turns (properties, body) into a :class:`StartCommand`, or a
:class:`Rejection` that says which check failed, in the official order:
content type, timestamp skew, required identity fields, command name, kwargs
shape. Where the body names a heartbeat queue, rejections carry it so the
submitter hears why (the manager has no other way to reach them).
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing as t
import uuid

from wire.errors import QueueInfoError
from wire.queue_info import AmqpCreds

MAX_SKEW_S = 180
COMMAND_NAME = re.compile(r"cmd_[A-Za-z][0-9A-Za-z_]{0,99}")
KNOWN_COMMANDS = frozenset({"cmd_start_endpoint"})
ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
IDENTITY_FIELDS = ("globus_effective_identity", "globus_identity_set", "globus_username")


@dataclasses.dataclass(frozen=True)
class Properties:
    """The AMQP properties the manager reads (``user_id`` as RabbitMQ validated it)."""

    content_type: str | None
    timestamp: t.Any
    headers: dict = dataclasses.field(default_factory=dict)
    user_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A command the manager will not act on, said twice: to the user and the admin.

    ``endpoint_id`` is the user endpoint whose submitter is told; None: nobody
    (the command was unreadable, or not from the service).
    """

    check: str
    user_message: str
    admin_message: str
    endpoint_id: uuid.UUID | None = None


@dataclasses.dataclass(frozen=True)
class StartCommand:
    """A well-formed ``cmd_start_endpoint``; identity not yet mapped."""

    name: str
    amqp_creds: AmqpCreds
    identity_set: tuple[dict, ...]
    effective_identity: str
    username: str
    user_opts: dict
    user_runtime: dict

    @property
    def endpoint_id(self) -> uuid.UUID:
        return self.amqp_creds.endpoint_id


def _who(body: dict) -> str:
    return (
        f"Globus effective identity: {body.get('globus_effective_identity')!r}; "
        f"Globus username: {body.get('globus_username')!r}"
    )


def _named_endpoint(body: t.Any) -> uuid.UUID | None:
    """The user endpoint a body names, if it names one (whose submitter hears a refusal)."""
    try:
        return uuid.UUID(str(body["kwargs"]["amqp_creds"]["endpoint_id"]))
    except (KeyError, TypeError, ValueError):
        return None


def _check_sender(props: Properties, sender: str | None) -> Rejection | None:
    if sender is None or props.user_id == sender:
        return None
    return Rejection(
        "sender",
        "",
        f"dropping a command not sent by the service: user_id {props.user_id!r},"
        f" expected {sender!r} (someone else can write to this command queue;"
        " check the broker's permissions)",
    )


def _check_timestamp(timestamp: t.Any, now: float) -> str | None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        return f"timestamp property missing or not an integer ({timestamp!r})"
    skew = abs(now - timestamp)
    if skew > MAX_SKEW_S:
        return f"command too old or clocks skewed: {skew:.0f} s apart (limit {MAX_SKEW_S} s)"
    return None


def _check_kwargs(kwargs: t.Any) -> tuple[str, AmqpCreds] | str:
    if not isinstance(kwargs, dict):
        return "kwargs is not an object"
    name = kwargs.get("name")
    if not isinstance(name, str) or not ENDPOINT_NAME.fullmatch(name):
        return (
            f"invalid user endpoint name {name!r} (allowed: [A-Za-z0-9._-], 1-128, no leading dot)"
        )
    for key in ("user_opts", "user_runtime"):
        if kwargs.get(key) is not None and not isinstance(kwargs[key], dict):
            return f"kwargs.{key} is not an object"
    try:
        return name, AmqpCreds.from_dict(kwargs.get("amqp_creds"), "kwargs.amqp_creds")
    except QueueInfoError as e:
        return str(e)


def _identity_set(body: dict) -> tuple[dict, ...] | str:
    missing = [f for f in IDENTITY_FIELDS if f not in body]
    if missing:
        return f"missing required field(s) {missing}"
    identities = body["globus_identity_set"]
    if not isinstance(identities, list) or not identities:
        return "globus_identity_set is not a non-empty list"
    if not all(isinstance(i, dict) for i in identities):
        return "globus_identity_set holds something other than identity objects"
    return tuple(identities)


def parse_command(
    props: Properties, body: bytes, now: float, sender: str | None = None
) -> StartCommand | Rejection:
    """Validate a raw command; the first failing check wins: sender, then the official order."""
    foreign = _check_sender(props, sender)
    if foreign is not None:
        return foreign
    if props.content_type != "application/json":
        return Rejection(
            "content_type",
            "the service sent a command this endpoint cannot read",
            f"ignoring command with content_type {props.content_type!r}; expecting application/json",
        )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        return Rejection(
            "json", "the service sent an unreadable command", f"command body is not JSON: {e}"
        )
    if not isinstance(data, dict):
        return Rejection(
            "json", "the service sent an unreadable command", "command body is not a JSON object"
        )
    endpoint_id = _named_endpoint(data)

    def reject(check: str, user: str, admin: str) -> Rejection:
        return Rejection(check, user, f"{admin} ({_who(data)})", endpoint_id)

    stale = _check_timestamp(props.timestamp, now)
    if stale:
        return reject("timestamp", f"Ignoring command from server: {stale}", stale)
    identities = _identity_set(data)
    if isinstance(identities, str):
        return reject("identity_fields", "Invalid server command: " + identities, identities)
    command = data.get("command")
    if (
        not isinstance(command, str)
        or not COMMAND_NAME.fullmatch(command)
        or command not in KNOWN_COMMANDS
    ):
        return reject(
            "command", "Unknown or invalid command", f"unknown or invalid command {command!r}"
        )
    shape = _check_kwargs(data.get("kwargs", {}))
    if isinstance(shape, str):
        return reject("kwargs", "Invalid server command: " + shape, shape)
    name, creds = shape
    kwargs = data["kwargs"]
    return StartCommand(
        name=name,
        amqp_creds=creds,
        identity_set=identities,
        effective_identity=str(data["globus_effective_identity"]),
        username=str(data["globus_username"]),
        user_opts=kwargs.get("user_opts") or {},
        user_runtime=kwargs.get("user_runtime") or {},
    )
