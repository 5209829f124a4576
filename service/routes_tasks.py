"""Submitting tasks and reading their status.

A submission is journaled (task group, user endpoint, tasks) and committed
*before* anything is published, so a result can never arrive for a task the
database does not know. Then the start command goes to the endpoint's command
queue (on every submit: it is idempotent and refreshes credentials) and the
tasks to the user endpoint's task queue. If the broker is down the tasks are
marked failed with that reason and the submitter gets a 503.
"""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import APIRouter
from sqlalchemy.orm import Session

from service import auth, bodies, routing, schema, store
from service.broker import BrokerUnavailable
from service.context import CALLER, DB, SERVICE, Service
from service.errors import ApiError
from service.routes_endpoints import visible_endpoint
from service.routes_functions import visible_function
from wire import serializer
from wire.errors import SerializationError

log = logging.getLogger(__name__)
router = APIRouter(tags=["tasks"])


def check_payload(function_id: str, index: int, payload: str) -> None:
    """A task payload is ``pack_buffers([args, kwargs])``; say exactly what is wrong."""
    where = f"tasks.{function_id}[{index}]"
    try:
        buffers = serializer.unpack_buffers(payload)
    except SerializationError as e:
        raise ApiError(400, f"{where}: not a packed (args, kwargs) payload: {e}") from None
    if len(buffers) != 2:
        raise ApiError(400, f"{where}: expected 2 buffers (args, kwargs), got {len(buffers)}")


def _task_group(s: Session, who: auth.Caller, requested: uuid.UUID | None) -> schema.TaskGroup:
    tg_id = str(requested or uuid.uuid4())
    group = s.get(schema.TaskGroup, tg_id)
    if group is None:
        group = schema.TaskGroup(id=tg_id, owner_id=who.identity_id)
        s.add(group)
    elif group.owner_id != who.identity_id:
        raise ApiError(404, f"task group {tg_id} not found")
    return group


def _user_endpoint(
    s: Session, ep: schema.Endpoint, who: auth.Caller, body: bodies.Submission
) -> schema.UserEndpoint:
    user_opts = body.user_endpoint_config
    uep_id = routing.user_endpoint_id(ep.id, who.identity_id, user_opts)
    uep = s.get(schema.UserEndpoint, uep_id)
    if uep is None:
        uep = schema.UserEndpoint(
            id=uep_id,
            endpoint_id=ep.id,
            identity_id=who.identity_id,
            name=routing.user_endpoint_name(uep_id),
            user_opts=user_opts or {},
        )
        s.add(uep)
    uep.identity_set = list(who.identities)
    uep.user_runtime = body.user_runtime or {}
    return uep


def _journal(
    s: Session, endpoint_id: str, body: bodies.Submission, who: auth.Caller
) -> tuple[str, schema.UserEndpoint, dict[str, list[str]], list[tuple[bytes, dict]]]:
    ep = visible_endpoint(s, who, endpoint_id)
    functions = {str(fid): visible_function(s, who, str(fid)) for fid in body.tasks}
    for fid in functions:
        if ep.allowed_functions and fid not in ep.allowed_functions:
            raise ApiError(403, f"function {fid} is not allowed on endpoint {ep.id}")
    for fid, payloads in body.tasks.items():
        for i, payload in enumerate(payloads):
            check_payload(str(fid), i, payload)
    group = _task_group(s, who, body.task_group_id)
    uep = _user_endpoint(s, ep, who, body)
    s.flush()  # parents first: without relationships the unit of work does not order them
    ids: dict[str, list[str]] = {}
    messages = []
    now = time.time()
    for fid, payloads in body.tasks.items():
        fn = functions[str(fid)]
        for payload in payloads:
            task_id = str(uuid.uuid4())
            s.add(
                schema.Task(
                    id=task_id,
                    task_group_id=group.id,
                    owner_id=who.identity_id,
                    function_id=fn.id,
                    endpoint_id=ep.id,
                    user_endpoint_id=uep.id,
                    status=store.PENDING,
                    created_t=now,
                )
            )
            ids.setdefault(str(fid), []).append(task_id)
            messages.append(
                routing.task_message(
                    task_id=task_id,
                    function_id=fn.id,
                    function_code=fn.code,
                    payload=payload,
                    resource_specification=body.resource_specification,
                    result_serializers=body.result_serializers,
                )
            )
    return group.id, uep, ids, messages


@router.post("/v3/endpoints/{endpoint_id}/submit")
def submit(
    endpoint_id: uuid.UUID,
    body: bodies.Submission,
    who: auth.Caller = CALLER,
    svc: Service = SERVICE,
) -> dict:
    with svc.sessions.begin() as s:
        tg_id, uep, ids, messages = _journal(s, str(endpoint_id), body, who)
    try:
        svc.publisher.submit(
            endpoint_id=str(endpoint_id),
            user_endpoint_id=uep.id,
            command=routing.start_command_for(svc.topology, uep),
            command_properties=routing.command_properties(),
            task_group_id=tg_id if body.create_queue else None,
            tasks=messages,
        )
    except BrokerUnavailable as e:
        _fail_unsent(svc, [t for group in ids.values() for t in group], str(e))
        raise ApiError(503, str(e)) from None
    log.info(
        "%s submitted %d task(s) to %s via user endpoint %s",
        who.username,
        len(messages),
        endpoint_id,
        uep.name,
    )
    return {
        "request_id": str(uuid.uuid4()),
        "task_group_id": tg_id,
        "endpoint_id": str(endpoint_id),
        "tasks": ids,
    }


def _fail_unsent(svc: Service, task_ids: list[str], reason: str) -> None:
    with svc.sessions.begin() as s:
        for task_id in task_ids:
            store.finish_task(s, task_id, status="failed", exception=f"not sent: {reason}")


@router.get("/v2/get_amqp_result_connection_url")
def result_connection(_who: auth.Caller = CALLER, svc: Service = SERVICE) -> dict:
    return {
        "connection_url": svc.topology.url,
        "queue_prefix": svc.topology.sdk_queue_prefix,
    }


def task_doc(task: schema.Task) -> dict:
    """A task as ``Client.get_task`` and ``batch_status`` read it (PROTOCOL §1.2)."""
    doc = {
        "task_id": task.id,
        "task_group_id": task.task_group_id,
        "function_id": task.function_id,
        "endpoint_id": task.endpoint_id,
        "status": task.status,
        "created_t": str(task.created_t),
    }
    if task.completion_t is not None:
        doc["completion_t"] = str(task.completion_t)
        doc["details"] = task.details or {}
        if task.status == "success":
            doc["result"] = task.result
        else:
            doc["exception"] = task.exception or "the task failed without an error message"
    return doc


@router.get("/v2/tasks/{task_id}")
def get_task(task_id: uuid.UUID, who: auth.Caller = CALLER, s: Session = DB) -> dict:
    found = store.owned_tasks(s, who.identity_id, [str(task_id)])
    if not found:
        raise ApiError(404, f"task {task_id} not found")
    return task_doc(found[0])


@router.post("/v2/batch_status")
def batch_status(body: bodies.BatchStatus, who: auth.Caller = CALLER, s: Session = DB) -> dict:
    found = store.owned_tasks(s, who.identity_id, [str(t) for t in body.task_ids])
    return {"response": "batch", "results": {t.id: task_doc(t) for t in found}}


@router.get("/v2/taskgroup/{task_group_id}")
def get_task_group(task_group_id: uuid.UUID, who: auth.Caller = CALLER, s: Session = DB) -> dict:
    group = s.get(schema.TaskGroup, str(task_group_id))
    if group is None or group.owner_id != who.identity_id:
        raise ApiError(404, f"task group {task_group_id} not found")
    tasks = store.tasks_of_group(s, group.id)
    return {"taskgroup_id": group.id, "tasks": [{"id": t.id, **task_doc(t)} for t in tasks]}
