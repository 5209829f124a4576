"""The Globus Flows action provider's decisions: input, task payloads, status and who may see it.

Pure functions over data; the routes in ``routes_actions`` read and write the
database and submit through the same path as the SDK. The documents follow the
Action Provider interface (ActionRequest in, ActionStatus out) and the hosted
Compute action provider's V3 input and output: ``details.result`` lists the
outputs in input order, ``details.results`` pairs each with its ``task_id``.

Task results come back as JSON: the provider asks the endpoint for the
``JSONData`` result serializer, and decodes nothing else. The service never
unpickles what an endpoint sent (that would run the endpoint's code in the
service), so a result that is not JSON fails its task with a message saying so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import typing as t
import uuid

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service import bodies, schema
from wire import serializer

ACTIVE, INACTIVE, SUCCEEDED, FAILED = "ACTIVE", "INACTIVE", "SUCCEEDED", "FAILED"
JSON_RESULTS = "globus_compute_sdk.serialize.JSONData"
MAX_TASKS_PER_ACTION = 1000
MAX_PRINCIPALS = 100
DEFAULT_RELEASE_AFTER_S = 30 * 24 * 3600
PRINCIPAL_URN = (
    r"^urn:globus:(auth:identity|groups:id):"
    r"[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}$"
)
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_TERMINAL = ("success", "failed")


class ActionTask(BaseModel):
    """One call of a registered function, with JSON args and kwargs."""

    model_config = ConfigDict(extra="forbid")
    function_id: uuid.UUID
    args: list[t.Any] = Field(default_factory=list)
    kwargs: dict[str, t.Any] = Field(default_factory=dict)


class ComputeActionBody(BaseModel):
    """Run registered functions on a Globus Compute endpoint (the hosted provider's V3 input)."""

    model_config = ConfigDict(extra="forbid", title="Globus Compute action (V3)")
    endpoint_id: uuid.UUID
    tasks: list[ActionTask] = Field(min_length=1, max_length=MAX_TASKS_PER_ACTION)
    task_group_id: uuid.UUID | None = None
    user_endpoint_config: dict[str, t.Any] | None = None
    resource_specification: dict[str, t.Any] | None = None
    create_queue: bool = Field(
        default=False, description="Accepted for compatibility; results are read with /status."
    )


class V2Call(BaseModel):
    """One call in the V2 input: ``payload`` is the older spelling of ``kwargs``."""

    model_config = ConfigDict(extra="forbid")
    endpoint: uuid.UUID
    function: uuid.UUID
    args: t.Any = None
    kwargs: dict[str, t.Any] | None = None
    payload: dict[str, t.Any] | None = None

    @model_validator(mode="after")
    def _one_kwargs(self) -> V2Call:
        if self.kwargs is not None and self.payload is not None:
            raise ValueError("give kwargs or payload (its older name), not both")
        return self

    def as_v3(self) -> ActionTask:
        args = [] if self.args is None else self.args
        return ActionTask(
            function_id=self.function,
            args=args if isinstance(args, list) else [args],
            kwargs=self.kwargs if self.kwargs is not None else (self.payload or {}),
        )


class ComputeActionBodyV2(BaseModel):
    """Run registered functions on a Globus Compute endpoint (the hosted provider's V2 input):
    one call in the body, a list in ``tasks``, or both; here every call names one endpoint."""

    model_config = ConfigDict(extra="forbid", title="Globus Compute action (V2)")
    endpoint: uuid.UUID | None = None
    function: uuid.UUID | None = None
    args: t.Any = None
    kwargs: dict[str, t.Any] | None = None
    payload: dict[str, t.Any] | None = None
    tasks: list[V2Call] = Field(default_factory=list, max_length=MAX_TASKS_PER_ACTION)

    @model_validator(mode="after")
    def _calls(self) -> ComputeActionBodyV2:
        if (self.endpoint is None) != (self.function is None):
            raise ValueError("endpoint and function go together")
        calls = self.calls()
        if not calls:
            raise ValueError("no call: give endpoint and function, or a list of tasks")
        if len(calls) > MAX_TASKS_PER_ACTION:
            raise ValueError(f"at most {MAX_TASKS_PER_ACTION} calls in one action")
        if len({c.endpoint for c in calls}) > 1:
            raise ValueError(
                "every call of one action must name the same endpoint here;"
                " run one action per endpoint, or use the V3 input"
            )
        return self

    def calls(self) -> list[V2Call]:
        if self.endpoint is None or self.function is None:
            return list(self.tasks)
        first = V2Call(
            endpoint=self.endpoint,
            function=self.function,
            args=self.args,
            kwargs=self.kwargs,
            payload=self.payload,
        )
        return [first, *self.tasks]

    def as_v3(self) -> ComputeActionBody:
        calls = self.calls()
        return ComputeActionBody(endpoint_id=calls[0].endpoint, tasks=[c.as_v3() for c in calls])


class ActionRequest(BaseModel):
    """The Action Provider interface's run request."""

    model_config = ConfigDict(extra="ignore")
    request_id: str = Field(min_length=1, max_length=256)
    body: ComputeActionBody
    label: str | None = Field(default=None, min_length=1, max_length=64)
    monitor_by: list[t.Annotated[str, Field(pattern=PRINCIPAL_URN)]] = Field(
        default_factory=list, max_length=MAX_PRINCIPALS
    )
    manage_by: list[t.Annotated[str, Field(pattern=PRINCIPAL_URN)]] = Field(
        default_factory=list, max_length=MAX_PRINCIPALS
    )
    deadline: dt.datetime | None = None
    release_after: str | None = None
    allowed_clients: list[str] = Field(default_factory=list, max_length=MAX_PRINCIPALS)

    @field_validator("release_after")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            release_after_seconds(value)
        return value


class ActionRequestV2(ActionRequest):
    body: ComputeActionBodyV2


def release_after_seconds(value: str | None) -> int:
    """An ISO 8601 duration in days, hours, minutes and seconds; at most 30 days."""
    if value is None:
        return DEFAULT_RELEASE_AFTER_S
    match = _DURATION.match(value)
    if match is None or value in ("P", "PT") or value.endswith("T"):
        raise ValueError(
            f"release_after {value!r}: give an ISO 8601 duration of days, hours, minutes"
            " and seconds, such as P7D or PT12H"
        )
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    return min(total, DEFAULT_RELEASE_AFTER_S)


def iso_duration(seconds: int) -> str:
    return f"P{seconds // 86400}D" if seconds % 86400 == 0 else f"PT{seconds}S"


def request_digest(request: ActionRequest) -> str:
    """What a retry must repeat: the same request id with other content is another request."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def task_payload(task: ActionTask) -> str:
    """``pack_buffers([args, kwargs])`` with the SDK's default data serializer, as ``submit`` does."""
    return serializer.pack_buffers(
        [serializer.serialize(tuple(task.args)), serializer.serialize(task.kwargs)]
    )


def submission_for(body: ComputeActionBody) -> tuple[bodies.Submission, list[tuple[str, int]]]:
    """The submit body for ``body`` and where each input task lands in its answer.

    A submission groups payloads by function; the k-th call of a function in the
    input is the k-th task id the submit returns for it.
    """
    grouped: dict[str, list[str]] = {}
    positions = []
    for task in body.tasks:
        fid = str(task.function_id)
        positions.append((fid, len(grouped.setdefault(fid, []))))
        grouped[fid].append(task_payload(task))
    submission = bodies.Submission(
        tasks=grouped,
        task_group_id=body.task_group_id,
        create_queue=False,
        user_endpoint_config=body.user_endpoint_config,
        resource_specification=body.resource_specification,
        result_serializers=[JSON_RESULTS],
    )
    return submission, positions


def ordered_task_ids(positions: list[tuple[str, int]], ids: dict[str, list[str]]) -> list[str]:
    return [ids[fid][k] for fid, k in positions]


def principal(identity_id: str) -> str:
    return f"urn:globus:auth:identity:{identity_id}"


def may_monitor(action: schema.Action, principals: set[str]) -> bool:
    """The creator, a monitor or a manager (who may stop it may also look at it)."""
    allowed = {principal(action.creator_id), *action.monitor_by, *action.manage_by}
    return bool(allowed & principals)


def may_manage(action: schema.Action, principals: set[str]) -> bool:
    return bool({principal(action.creator_id), *action.manage_by} & principals)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """An action's state as its tasks tell it."""

    status: str
    details: dict
    display_status: str

    @property
    def complete(self) -> bool:
        return self.status in (SUCCEEDED, FAILED)


def json_output(result: str | None) -> t.Any:
    """Decode a ``JSONData`` result; anything else raises ``ValueError``."""
    if not result or not result.startswith("11\n"):
        raise ValueError(
            "the task's result is not JSON data; the action provider returns only results"
            " the JSONData serializer can encode"
        )
    return json.loads(result[3:])


def _task_entry(task: schema.Task | None, task_id: str) -> tuple[dict, str | None]:
    """A finished task's ``results`` entry and its error, if it failed."""
    if task is None:
        return {"task_id": task_id, "exception": "the task's record is gone"}, "missing task"
    if task.status == "success":
        try:
            return {"task_id": task_id, "output": json_output(task.result)}, None
        except ValueError as e:
            return {"task_id": task_id, "exception": str(e)}, str(e)
    error = task.exception or "the task failed without an error message"
    return {"task_id": task_id, "exception": error}, error


def outcome(
    action: schema.Action, tasks: dict[str, schema.Task], endpoint_online: bool = True
) -> Outcome:
    """ACTIVE until every task finished (INACTIVE while the endpoint is offline: nothing
    progresses until it is back); then SUCCEEDED with the outputs, or FAILED with every
    task's output or error (the first error is the failure's description)."""
    ordered = [tasks.get(task_id) for task_id in action.task_ids]
    waiting = sum(1 for task in ordered if task is not None and task.status not in _TERMINAL)
    total = len(ordered)
    if waiting:
        details = {
            "task_group_id": action.task_group_id,
            "task_ids": list(action.task_ids),
            "completed_tasks": total - waiting,
            "total_tasks": total,
        }
        if endpoint_online:
            return Outcome(ACTIVE, details, f"{total - waiting} of {total} tasks done")
        details |= {
            "code": "EndpointOffline",
            "description": "the endpoint is offline; the tasks wait until it is back",
        }
        return Outcome(INACTIVE, details, "waiting for the endpoint to come online")
    pairs = [_task_entry(task, tid) for task, tid in zip(ordered, action.task_ids, strict=True)]
    entries = [entry for entry, _ in pairs]
    failures = [error for _, error in pairs if error is not None]
    details = {"result": [e.get("output") for e in entries], "results": entries}
    if not failures:
        return Outcome(SUCCEEDED, details, f"{total} of {total} tasks succeeded")
    code = "ActionCanceled" if action.cancelled else "TaskExecutionFailed"
    details = {"code": code, "description": failures[0], **details}
    shown = "cancelled" if action.cancelled else f"{len(failures)} of {total} tasks failed"
    return Outcome(FAILED, details, shown)


def _iso(moment: dt.datetime) -> str:
    """SQLite hands back naive datetimes; every time stored here is UTC."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).isoformat()


def status_doc(action: schema.Action, state: Outcome) -> dict:
    """The ActionStatus document."""
    doc = {
        "action_id": action.id,
        "status": state.status,
        "display_status": state.display_status,
        "creator_id": principal(action.creator_id),
        "monitor_by": list(action.monitor_by),
        "manage_by": list(action.manage_by),
        "start_time": _iso(action.start_time),
        "release_after": iso_duration(action.release_after_s),
        "details": state.details,
    }
    if action.label:
        doc["label"] = action.label
    if action.completion_time is not None:
        doc["completion_time"] = _iso(action.completion_time)
    return doc


def introspection(scope: str, admin_contact: str, body: type[BaseModel]) -> dict:
    """What ``GET /actions/v3/`` (or ``v2``) answers: the provider and its input schema."""
    return {
        "types": ["Action"],
        "api_version": "1.0",
        "globus_auth_scope": scope,
        "title": "Globus Compute (self-hosted)",
        "subtitle": "Run registered functions on Globus Compute endpoints",
        "description": (
            "Runs each task's function with JSON args and kwargs on the endpoint, as the"
            " caller's identity; details.result lists the JSON outputs in input order."
        ),
        "keywords": ["compute", "function"],
        "visible_to": ["public"],
        "runnable_by": ["all_authenticated_users"],
        "administered_by": [],
        "admin_contact": admin_contact,
        "synchronous": False,
        "log_supported": False,
        "maximum_deadline": iso_duration(DEFAULT_RELEASE_AFTER_S),
        "input_schema": body.model_json_schema(),
    }
