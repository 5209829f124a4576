"""Messagepack protocol v1: the envelope and the messages inside it.

On the wire a message is the byte ``0x01`` followed by compact UTF-8 JSON
``{"message_type": ..., "data": {...}}``. The classes mirror those of
globus-compute-common 1.0 field for field, so either side can read the other's
bytes; they are plain dataclasses so a user endpoint does not pay for pydantic.

Reading is strict about what matters and lenient about what does not: an unknown
message type or a missing required field raises :class:`MessageError` naming the
field; unknown extra fields are ignored.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing as t
import uuid
from collections.abc import Callable

from wire.errors import MessageError

VERSION_BYTE = b"\x01"


class TaskState(enum.StrEnum):
    """A task's lifecycle states, as the official components name them."""

    RECEIVED = "received"
    WAITING_FOR_EP = "waiting-for-ep"
    WAITING_FOR_NODES = "waiting-for-nodes"
    WAITING_FOR_LAUNCH = "waiting-for-launch"
    EXEC_START = "execution-start"
    EXEC_END = "execution-end"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    RESULT_RECEIVED = "result-received"
    RESULT_ENQUEUED = "result-enqueued"
    AP_RECEIVED = "action-provider-received"
    AP_TASK_SUBMITTED = "action-provider-task-submitted"
    AP_TASKGROUP_RUNNING = "action-provider-task-group-in-progress"
    AP_TASKGROUP_COMPLETED = "action-provider-task-group-completed"
    AP_TASKGROUP_ERROR = "action-provider-task-group-error"


class ActorName(enum.StrEnum):
    """Which component recorded a task transition."""

    WORKER = "worker"
    MANAGER = "manager"
    INTERCHANGE = "interchange"
    ENDPOINT = "endpoint"
    RESULT_PROCESSOR = "result-processor"
    WEB_SERVICE = "web-service"
    ACTION_PROVIDER = "action-provider"


Decoder = Callable[[t.Any, str], t.Any]


def _field(decode: Decoder, default: t.Any = dataclasses.MISSING, **kw: t.Any) -> t.Any:
    return dataclasses.field(default=default, metadata={"decode": decode}, **kw)


def _fail(path: str, what: str, value: t.Any) -> t.NoReturn:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise MessageError(f"{path}: expected {what}, got {shown}")


def _uuid(value: t.Any, path: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    _fail(path, "a UUID", value)


def _str(value: t.Any, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, "a string", value)
    return value


def _int(value: t.Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, "an integer", value)
    return value


def _dict(value: t.Any, path: str) -> dict:
    if not isinstance(value, dict):
        _fail(path, "an object", value)
    return value


def _optional(inner: Decoder) -> Decoder:
    return lambda value, path: None if value is None else inner(value, path)


def _list_of(inner: Decoder) -> Decoder:
    def decode(value: t.Any, path: str) -> list:
        if not isinstance(value, list):
            _fail(path, "a list", value)
        return [inner(item, f"{path}[{i}]") for i, item in enumerate(value)]

    return decode


def _enum(kind: type[enum.Enum]) -> Decoder:
    def decode(value: t.Any, path: str) -> enum.Enum:
        try:
            return kind(value)
        except ValueError:
            names = ", ".join(m.value for m in kind)
            _fail(path, f"one of {names}", value)

    return decode


def _nested(kind: type) -> Decoder:
    return lambda value, path: _from_dict(kind, _dict(value, path), path)


def _transitions_by_task(value: t.Any, path: str) -> dict:
    items = _dict(value, path).items()
    decode = _list_of(_nested(TaskTransition))
    return {str(k): decode(v, f"{path}.{k}") for k, v in items}


@dataclasses.dataclass(frozen=True)
class Message:
    """Base of every enveloped message; ``message_type`` names it on the wire."""

    message_type: t.ClassVar[str] = ""


@dataclasses.dataclass(frozen=True)
class ResultErrorDetails:
    """Why a result is an error: a machine code and a message for the user."""

    code: str = _field(_str)
    user_message: str = _field(_str)


@dataclasses.dataclass(frozen=True)
class TaskTransition(Message):
    """One step of a task's lifecycle (``timestamp`` in nanoseconds)."""

    message_type: t.ClassVar[str] = "task_transition"
    timestamp: int = _field(_int)
    state: TaskState = _field(_enum(TaskState))
    actor: ActorName = _field(_enum(ActorName))


@dataclasses.dataclass(frozen=True)
class Task(Message):
    """A function invocation: ``task_buffer`` packs function, args and kwargs."""

    message_type: t.ClassVar[str] = "task"
    task_id: uuid.UUID = _field(_uuid)
    container_id: uuid.UUID | None = _field(_optional(_uuid), None)
    container: dict | None = _field(_optional(_dict), None)
    task_buffer: str = _field(_str, kw_only=True)


@dataclasses.dataclass(frozen=True)
class Result(Message):
    """What came of a task: serialized data, or a traceback plus error details."""

    message_type: t.ClassVar[str] = "result"
    task_id: uuid.UUID = _field(_uuid)
    data: str = _field(_str)
    details: dict | None = _field(_optional(_dict), None)
    error_details: ResultErrorDetails | None = _field(_optional(_nested(ResultErrorDetails)), None)
    task_statuses: list[TaskTransition] | None = _field(
        _optional(_list_of(_nested(TaskTransition))), None
    )

    @property
    def is_error(self) -> bool:
        return self.error_details is not None


@dataclasses.dataclass(frozen=True)
class EPStatusReport(Message):
    """A heartbeat or status report; ``global_state`` is free-form."""

    message_type: t.ClassVar[str] = "ep_status_report"
    endpoint_id: uuid.UUID = _field(_uuid)
    global_state: dict = _field(_dict)
    task_statuses: dict[str, list[TaskTransition]] = _field(
        _transitions_by_task, dataclasses.MISSING, kw_only=True
    )


@dataclasses.dataclass(frozen=True)
class ManagerStatusReport(Message):
    """Per-task transitions reported by a worker manager (unused by 4.19)."""

    message_type: t.ClassVar[str] = "manager_status_report"
    task_statuses: dict[str, list[TaskTransition]] = _field(_transitions_by_task)


@dataclasses.dataclass(frozen=True)
class TaskCancel(Message):
    """A request to cancel a task (defined by the protocol, unused by 4.19)."""

    message_type: t.ClassVar[str] = "task_cancel"
    task_id: uuid.UUID = _field(_uuid)


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.message_type: cls
    for cls in (
        Task,
        Result,
        EPStatusReport,
        ManagerStatusReport,
        TaskTransition,
        TaskCancel,
    )
}

# Names accepted on read in place of the field name (pydantic aliases upstream).
_READ_ALIASES = {(EPStatusReport, "global_state"): "ep_status_report"}


def _from_dict(kind: type, data: dict, path: str) -> t.Any:
    values = {}
    for f in dataclasses.fields(kind):
        alias = _READ_ALIASES.get((kind, f.name))
        key = f.name if f.name in data or alias not in data else alias
        if key in data:
            values[f.name] = f.metadata["decode"](data[key], f"{path}.{f.name}")
        elif f.default is dataclasses.MISSING:
            raise MessageError(f"{path}: missing required field '{f.name}'")
    return kind(**values)


def _to_wire(value: t.Any) -> t.Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_wire(v) for v in value]
    return value


def to_dict(message: t.Any) -> dict:
    """The JSON-ready form of a message (UUIDs and enums as strings)."""
    return _to_wire(message)


def pack(message: Message) -> bytes:
    """Encode ``message`` in the v1 envelope."""
    envelope = {"message_type": message.message_type, "data": to_dict(message)}
    return VERSION_BYTE + json.dumps(envelope, separators=(",", ":")).encode()


def unpack(raw: bytes | str) -> Message:
    """Decode a v1 envelope; raises :class:`MessageError` on anything malformed."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not raw:
        raise MessageError("empty message")
    if raw[:1] != VERSION_BYTE:
        raise MessageError(f"unrecognized protocol version byte {raw[:1]!r}")
    try:
        envelope = json.loads(raw[1:])
    except (ValueError, RecursionError) as e:
        raise MessageError(f"message body is not valid JSON: {e}") from None
    if not isinstance(envelope, dict):
        _fail("envelope", "an object", envelope)
    message_type = envelope.get("message_type")
    kind = MESSAGE_TYPES.get(message_type) if isinstance(message_type, str) else None
    if kind is None:
        known = ", ".join(sorted(MESSAGE_TYPES))
        _fail("envelope.message_type", f"one of {known}", message_type)
    if "data" not in envelope:
        raise MessageError("envelope: missing required field 'data'")
    return _from_dict(kind, _dict(envelope["data"], "data"), message_type)


def unpack_as(raw: bytes | str, kind: type[Message]) -> t.Any:
    """Decode and insist on one message type (e.g. a task queue holds only Tasks)."""
    message = unpack(raw)
    if not isinstance(message, kind):
        raise MessageError(
            f"expected a '{kind.message_type}' message, got '{message.message_type}'"
        )
    return message
