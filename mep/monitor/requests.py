"""The closed table of what the manager may ask the monitor, checked before anything is done.

The manager runs as an unprivileged account and speaks to the network, to
researchers' options and to the admin's templates: the monitor treats it as
compromised. A request is a JSON object with ``op`` and exactly the fields its
row names, each of its type and within its bounds, carrying exactly the number
of descriptors its row names, in a state where that op makes sense. Anything
else raises :class:`Violation` and the monitor ends the session (kills the
manager, stops every user endpoint): a manager that sends something outside
the table is broken or taken over, and must not be given a second try.

Pure: no I/O. The rows:

=============  ======================  ===========  =========================================
op             fields                  descriptors  when
=============  ======================  ===========  =========================================
read           file (one of FILES)     0            starting, serving
registered     endpoint_id, heartbeat  0            starting (then: serving)
spawn          name, user, endpoint_id 3            serving
               identity, env
status         connected               0            serving
=============  ======================  ===========  =========================================

``spawn`` carries the user endpoint's stdin payload (a sealed memfd), its
credential memfd and the write end of its note pipe, in that order. Who may be
spawned is decided by the monitor again (:mod:`mep.monitor.server`), whatever
the manager decided.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import typing as t
import uuid

# Where the descriptors a spawn carries land in the user endpoint (the manager
# writes these numbers into its launch payload): the credential memfd, the note
# pipe, and the monitor's audit pipe when the endpoint is audited.
CREDENTIALS_FD, NOTE_FD, AUDIT_FD = 3, 4, 5
FILES = ("config", "identity_mapping", "template", "schema", "environment", "endpoint_id")
SPAWN_FDS = 3
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"  # a user endpoint's PATH when none was given
MAX_ENV = 256
MAX_ENV_BYTES = 64 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,255}")


class State(enum.Enum):
    STARTING = "starting"  # the manager has not registered yet
    SERVING = "serving"


class Violation(Exception):
    """A message outside the table; the text says what, for the admin's log."""


@dataclasses.dataclass(frozen=True)
class Read:
    file: str


@dataclasses.dataclass(frozen=True)
class Registered:
    endpoint_id: str
    heartbeat_period: float


@dataclasses.dataclass(frozen=True)
class Spawn:
    name: str
    user: str
    endpoint_id: str
    identity: str | None
    env: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Status:
    connected: bool


Request = Read | Registered | Spawn | Status


def _one_of(choices: tuple[str, ...]) -> t.Callable[[t.Any], bool]:
    return lambda v: isinstance(v, str) and v in choices


def _uuid(value: t.Any) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value  # the canonical form only
    except ValueError:
        return False


def _period(value: t.Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= 86400
    )


def _endpoint_name(value: t.Any) -> bool:
    return isinstance(value, str) and bool(_ENDPOINT_NAME.fullmatch(value))


def _account_name(value: t.Any) -> bool:
    return isinstance(value, str) and bool(_ACCOUNT_NAME.fullmatch(value))


def _identity(value: t.Any) -> bool:
    return value is None or (
        isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable()
    )


def _environment(value: t.Any) -> bool:
    if not isinstance(value, dict) or len(value) > MAX_ENV:
        return False
    size = 0
    for key, text in value.items():
        if not (_ENV_NAME.fullmatch(key) and isinstance(text, str) and "\0" not in text):
            return False
        size += len(key) + len(text.encode("utf-8", "surrogatepass")) + 2
    return size <= MAX_ENV_BYTES


def _boolean(value: t.Any) -> bool:
    return isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class _Row:
    build: type
    fields: dict[str, t.Callable[[t.Any], bool]]
    fds: int
    states: frozenset[State]


_TABLE = {
    "read": _Row(Read, {"file": _one_of(FILES)}, 0, frozenset(State)),
    "registered": _Row(
        Registered,
        {"endpoint_id": _uuid, "heartbeat_period": _period},
        0,
        frozenset({State.STARTING}),
    ),
    "spawn": _Row(
        Spawn,
        {
            "name": _endpoint_name,
            "user": _account_name,
            "endpoint_id": _uuid,
            "identity": _identity,
            "env": _environment,
        },
        SPAWN_FDS,
        frozenset({State.SERVING}),
    ),
    "status": _Row(Status, {"connected": _boolean}, 0, frozenset({State.SERVING})),
}


def parse_request(message: dict[str, t.Any], fd_count: int, state: State) -> Request:
    """The request a message makes, if the table allows it now; else :class:`Violation`."""
    op = message.get("op")
    row = _TABLE.get(op) if isinstance(op, str) else None
    if row is None:
        raise Violation(f"unknown request {str(op)[:40]!r}")
    fields = {k: v for k, v in message.items() if k != "op"}
    if set(fields) != set(row.fields):
        raise Violation(f"{op}: fields {sorted(fields)[:10]}, expected {sorted(row.fields)}")
    bad = [name for name, check in row.fields.items() if not check(fields[name])]
    if bad:
        raise Violation(f"{op}: invalid {', '.join(bad)}")
    if fd_count != row.fds:
        raise Violation(f"{op}: {fd_count} descriptors, expected {row.fds}")
    if state not in row.states:
        raise Violation(f"{op}: not allowed while {state.value}")
    return row.build(**fields)


def next_state(state: State, request: Request) -> State:
    return State.SERVING if isinstance(request, Registered) else state
