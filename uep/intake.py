"""What to do with one delivery from the task queue: pure decisions.

A delivery is run, answered at once with an error (not allowed, malformed),
acknowledged as a duplicate, or dropped when it cannot even be attributed to a
task. Whatever the verdict, the submitter learns it where possible and the
admin's log says why.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

from wire import WireError
from wire.messages import Task, unpack_as


@dataclasses.dataclass(frozen=True)
class Verdict:
    action: str  # "run" | "reject" | "drop"
    task_id: str | None = None
    function_id: str | None = None
    resource_spec: dict | None = None
    result_serializers: list[str] | None = None
    code: str = ""
    message: str = ""


def _task_id(headers: dict, body: bytes) -> str | None:
    raw = headers.get("task_uuid")
    if raw is None:
        try:
            return str(unpack_as(body, Task).task_id)
        except WireError:
            return None
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        return None


def _resource_spec(raw: object) -> dict:
    if raw is None or raw == "null":
        return {}
    spec = json.loads(raw) if isinstance(raw, str | bytes) else raw
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ValueError("resource_specification must be a JSON object")
    return spec


def judge(headers: dict | None, body: bytes, allowed_functions: frozenset[str] | None) -> Verdict:
    """Decide what a delivery deserves (no side effects)."""
    headers = headers or {}
    task_id = _task_id(headers, body)
    if task_id is None:
        return Verdict("drop", message="no usable task_uuid header nor Task body")
    function_id = headers.get("function_uuid")
    if not isinstance(function_id, str) or not function_id:
        return Verdict(
            "reject",
            task_id,
            code="CouldNotExecuteUserTaskError",
            message="Failed to start task: the task message has no function_uuid header",
        )
    if allowed_functions is not None and function_id not in allowed_functions:
        return Verdict(
            "reject",
            task_id,
            function_id,
            code="FUNCTION_NOT_ALLOWED",
            message=f"Function {function_id} is not permitted on this endpoint",
        )
    try:
        spec = _resource_spec(headers.get("resource_specification"))
    except ValueError as e:
        return Verdict(
            "reject",
            task_id,
            function_id,
            code="CouldNotExecuteUserTaskError",
            message=f"Failed to start task: invalid resource_specification: {e}",
        )
    serializers = headers.get("result_serializers")
    if serializers is not None and not (
        isinstance(serializers, list) and all(isinstance(s, str) for s in serializers)
    ):
        return Verdict(
            "reject",
            task_id,
            function_id,
            code="CouldNotExecuteUserTaskError",
            message="Failed to start task: result_serializers must be a list of names",
        )
    return Verdict("run", task_id, function_id, spec, serializers)
