"""Submitting tasks and reading their status.

A submission is checked (the endpoint is visible to the caller, its
authentication policy is satisfied, every function is allowed), then journaled
(task group, user endpoint, tasks, and each task's message in the outbox) and
committed *before* anything is published, so a result can never arrive for a
task the database does not know; the outbox rows go once the broker confirmed
the publish, and the housekeeper publishes again what a killed service left.
The user endpoint's broker account is made in the same transaction when its
generation lacks one. Then the start command goes to the endpoint's command
queue (on every submit: it is idempotent and refreshes credentials) and the
tasks to the user endpoint's task queue. If the broker is down the tasks are
marked failed with that reason and the submitter gets a 503.

The SDK's result connection uses the client's own broker account, which can
read only the result queues of the caller's identity (``tg.<identity>.*``).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable

from fastapi import APIRouter
from sqlalchemy.orm import Session

from service import access, auth, bodies, routing, schema, store
from service.broker import BrokerUnavailable
from service.broker_admin import BrokerAdminError
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


def _check_access(
    s: Session, ep: schema.Endpoint, who: auth.Caller, function_ids: list[str]
) -> None:
    denied = None
    if ep.authentication_policy:
        policy = s.get(schema.AuthPolicy, ep.authentication_policy)
        if policy is None:
            denied = access.Denied(
                403, "AUTH_POLICY_NOT_SATISFIED", "this endpoint names an unknown policy"
            )
        else:
            denied = access.policy_denial(policy, who.identities, time.time() - who.issued_at)
    denied = denied or access.function_denial(ep, function_ids)
    if denied is not None:
        log.info("submit by %s to %s refused: %s", who.username, ep.id, denied.message)
        raise ApiError(denied.status, denied.message, denied.code)


MAX_TASKS_PER_SUBMIT = 10_000


def new_task_ids(count: int) -> list[str]:
    """``count`` version-4 UUIDs from one read of the system's random source.

    ``uuid.uuid4()`` reads 16 bytes per call, and each read lets go of the GIL;
    with the forwarder busy in the same process, winning it back cost about 40 µs
    a task during a burst, against 1 µs alone.
    """
    random = os.urandom(16 * count)
    return [str(uuid.UUID(bytes=random[i : i + 16], version=4)) for i in range(0, 16 * count, 16)]


def _journal(
    s: Session, svc: Service, endpoint_id: str, body: bodies.Submission, who: auth.Caller
) -> tuple[
    schema.TaskGroup, schema.UserEndpoint, bytes, dict[str, list[str]], list[tuple[bytes, dict]]
]:
    count = sum(len(payloads) for payloads in body.tasks.values())
    if count > MAX_TASKS_PER_SUBMIT:
        raise ApiError(
            413,
            f"{count} tasks in one submit; at most {MAX_TASKS_PER_SUBMIT} are accepted,"
            " send the rest in further submits",
        )
    ep = visible_endpoint(s, who, endpoint_id)
    functions = {str(fid): visible_function(s, who, str(fid)) for fid in body.tasks}
    _check_access(s, ep, who, list(functions))
    for fid, payloads in body.tasks.items():
        for i, payload in enumerate(payloads):
            check_payload(str(fid), i, payload)
    group = _task_group(s, who, body.task_group_id)
    uep = _user_endpoint(s, ep, who, body)
    s.flush()  # parents first: without relationships the unit of work does not order them
    command = routing.start_command_for(uep, svc.provisioner.user_endpoint_creds(ep, uep))
    ids: dict[str, list[str]] = {}
    messages, task_rows, outbox_rows = [], [], []
    now = time.time()
    fresh_ids = iter(new_task_ids(count))
    for fid, payloads in body.tasks.items():
        fn = functions[str(fid)]
        for payload in payloads:
            task_id = next(fresh_ids)
            ids.setdefault(str(fid), []).append(task_id)
            message = routing.task_message(
                task_id=task_id,
                function_id=fn.id,
                function_code=fn.code,
                payload=payload,
                resource_specification=body.resource_specification,
                result_serializers=body.result_serializers,
            )
            messages.append(message)
            task_rows.append(
                {
                    "id": task_id,
                    "task_group_id": group.id,
                    "owner_id": who.identity_id,
                    "function_id": fn.id,
                    "endpoint_id": ep.id,
                    "user_endpoint_id": uep.id,
                    "status": store.PENDING,
                    "created_t": now,
                }
            )
            outbox_rows.append(
                {
                    "task_id": task_id,
                    "user_endpoint_id": uep.id,
                    "body": message[0],
                    "headers": message[1]["headers"],
                    "created_t": now,
                }
            )
    store.journal_tasks(s, task_rows, outbox_rows)
    return group, uep, command, ids, messages


Journaled = Callable[[Session, schema.TaskGroup, dict[str, list[str]]], None]


def submit_tasks(
    svc: Service,
    who: auth.Caller,
    endpoint_id: str,
    body: bodies.Submission,
    also_journal: Journaled | None = None,
) -> dict:
    """Check, journal and publish one submission; every way of submitting goes through here.

    ``also_journal`` adds rows of the caller's own (an action) to the transaction
    that journals the tasks, so both are committed or neither is.
    """
    try:
        with svc.sessions.begin() as s:
            group, uep, command, ids, messages = _journal(s, svc, endpoint_id, body, who)
            if also_journal is not None:
                also_journal(s, group, ids)
    except BrokerAdminError as e:
        log.error("submit to %s: cannot provision the user endpoint's account: %s", endpoint_id, e)
        raise ApiError(503, "the message broker is unavailable; try again later") from None
    try:
        svc.publisher.submit(
            endpoint_id=endpoint_id,
            user_endpoint_id=uep.id,
            command=command,
            command_properties=routing.command_properties(svc.topology.service_user),
            sdk_queue=svc.topology.sdk_queue(group.owner_id, group.id)
            if body.create_queue
            else None,
            tasks=messages,
        )
    except BrokerUnavailable as e:
        _fail_unsent(svc, [t for group in ids.values() for t in group], str(e))
        raise ApiError(503, str(e)) from None
    with svc.sessions.begin() as s:
        store.sent(s, [t for group in ids.values() for t in group])
    log.info(
        "%s submitted %d task(s) to %s via user endpoint %s",
        who.username,
        len(messages),
        endpoint_id,
        uep.name,
    )
    return {
        "request_id": str(uuid.uuid4()),
        "task_group_id": group.id,
        "endpoint_id": endpoint_id,
        "tasks": ids,
    }


@router.post("/v3/endpoints/{endpoint_id}/submit")
def submit(
    endpoint_id: uuid.UUID,
    body: bodies.Submission,
    who: auth.Caller = CALLER,
    svc: Service = SERVICE,
) -> dict:
    return submit_tasks(svc, who, str(endpoint_id), body)


def _fail_unsent(svc: Service, task_ids: list[str], reason: str) -> None:
    with svc.sessions.begin() as s:
        for task_id in task_ids:
            store.finish_task(s, task_id, status="failed", exception=f"not sent: {reason}")
        store.sent(s, task_ids)


@router.get("/v2/get_amqp_result_connection_url")
def result_connection(who: auth.Caller = CALLER, svc: Service = SERVICE) -> dict:
    """The caller's own result connection: it reads its identity's task groups and nothing else."""
    try:
        with svc.sessions.begin() as s:
            url = svc.provisioner.sdk_connection_url(s, who.client_id, who.identity_id)
    except BrokerAdminError as e:
        log.error("cannot provision the result account of client %s: %s", who.client_id, e)
        raise ApiError(503, "the message broker is unavailable; try again later") from None
    return {"connection_url": url, "queue_prefix": svc.topology.sdk_queue_prefix(who.identity_id)}


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
