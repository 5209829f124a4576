"""The Globus Flows action provider at ``/actions/v3``: introspect, run, status, cancel, release.

``/actions/v2`` takes the hosted provider's V2 input (``endpoint``, ``function``,
``payload``...) and turns it into the V3 shape; both share actions and routes.

A run submits its tasks through ``routes_tasks.submit_tasks``, the path the
SDK's submit takes, as the caller's own identity: the endpoint must be visible,
its authentication policy satisfied, every function allowed, and the endpoint's
identity mapping decides the local account. The action row is journaled in the
same transaction as the tasks, so a retried run (same ``request_id``) finds it
and submits nothing new; a concurrent twin loses on the unique key and gets the
winner's action.

Who may do what: the creator, and the ``monitor_by`` / ``manage_by`` principals
of the request. Someone who may not see an action gets 404, as if it did not
exist; someone who may see but not manage it gets 403 on cancel and release.
Cancelling fails every task that has no result yet (their late results are
ignored) and drops those not handed to the broker yet; releasing forgets a
finished action (its tasks stay readable with the task routes) and is refused
with 409 while it runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import typing as t
import uuid

from fastapi import APIRouter, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import actions, auth, schema, store
from service.context import CALLER, SERVICE, Service
from service.errors import ApiError
from service.routes_endpoints import is_online
from service.routes_tasks import submit_tasks

log = logging.getLogger(__name__)
ADMIN_CONTACT = "the administrator of this compute service"
V3 = APIRouter(prefix="/actions/v3", tags=["actions"])
V2 = APIRouter(prefix="/actions/v2", tags=["actions"])


@V3.get("")
@V3.get("/", include_in_schema=False)
def introspect() -> dict:
    """Public, like the hosted provider's: Flows reads the scope and input schema here."""
    return actions.introspection(auth.COMPUTE_SCOPE, ADMIN_CONTACT, actions.ComputeActionBody)


@V2.get("")
@V2.get("/", include_in_schema=False)
def introspect_v2() -> dict:
    return actions.introspection(auth.COMPUTE_SCOPE, ADMIN_CONTACT, actions.ComputeActionBodyV2)


def _principals(who: auth.Caller) -> set[str]:
    return {actions.principal(identity["id"]) for identity in who.identities}


def _find(s: Session, who: auth.Caller, request_id: str) -> schema.Action | None:
    query = select(schema.Action).where(
        schema.Action.creator_id == who.identity_id, schema.Action.request_id == request_id
    )
    return s.scalars(query).first()


def _current(s: Session, action: schema.Action) -> actions.Outcome:
    """The action's state from its tasks; the first time it is seen complete is kept."""
    tasks = {t.id: t for t in store.owned_tasks(s, action.creator_id, list(action.task_ids))}
    state = actions.outcome(action, tasks, _endpoint_online(s, tasks.values()))
    if state.complete and action.completion_time is None:
        action.completion_time = schema.utcnow()
        action.release_at = action.completion_time + dt.timedelta(seconds=action.release_after_s)
    return state


def _endpoint_online(s: Session, tasks: t.Iterable[schema.Task]) -> bool:
    """Whether the endpoint the tasks went to heartbeats (an action names one endpoint)."""
    endpoint_ids = {task.endpoint_id for task in tasks}
    endpoint = s.get(schema.Endpoint, endpoint_ids.pop()) if len(endpoint_ids) == 1 else None
    if endpoint is None:
        return False
    return is_online(endpoint.last_heartbeat, endpoint.heartbeat_period, time.time())


def _replay(
    svc: Service, who: auth.Caller, request: actions.ActionRequest, digest: str
) -> dict | None:
    """The status of the action this request already started, if it did."""
    with svc.sessions.begin() as s:
        found = _find(s, who, request.request_id)
        if found is None:
            return None
        if found.request_digest != digest:
            raise ApiError(
                409,
                f"request_id {request.request_id!r} was already used for a different request;"
                " use a new request_id for a new action",
            )
        return actions.status_doc(found, _current(s, found))


@V3.post("/run", status_code=202)
def run(
    request: actions.ActionRequest,
    response: Response,
    who: auth.Caller = CALLER,
    svc: Service = SERVICE,
) -> dict:
    return _start(request, request.body, response, who, svc)


@V2.post("/run", status_code=202)
def run_v2(
    request: actions.ActionRequestV2,
    response: Response,
    who: auth.Caller = CALLER,
    svc: Service = SERVICE,
) -> dict:
    return _start(request, request.body.as_v3(), response, who, svc)


def _start(
    request: actions.ActionRequest,
    body: actions.ComputeActionBody,
    response: Response,
    who: auth.Caller,
    svc: Service,
) -> dict:
    """Start the action ``request`` asks for (``body`` in the V3 shape), or find it again."""
    digest = actions.request_digest(request)
    replayed = _replay(svc, who, request, digest)
    if replayed is not None:
        response.status_code = 200
        return replayed
    submission, positions = actions.submission_for(body)
    action_id = str(uuid.uuid4())

    def journal(s: Session, group: schema.TaskGroup, ids: dict[str, list[str]]) -> None:
        s.add(
            schema.Action(
                id=action_id,
                creator_id=who.identity_id,
                request_id=request.request_id,
                request_digest=digest,
                label=request.label,
                monitor_by=list(dict.fromkeys(request.monitor_by)),
                manage_by=list(dict.fromkeys(request.manage_by)),
                task_group_id=group.id,
                task_ids=actions.ordered_task_ids(positions, ids),
                release_after_s=actions.release_after_seconds(request.release_after),
            )
        )

    try:
        submit_tasks(svc, who, str(body.endpoint_id), submission, journal)
    except IntegrityError:
        replayed = _replay(svc, who, request, digest)
        if replayed is None:
            raise
        response.status_code = 200
        return replayed
    log.info("%s started action %s (request %s)", who.username, action_id, request.request_id)
    with svc.sessions.begin() as s:
        action = s.get(schema.Action, action_id)
        return actions.status_doc(action, _current(s, action))


def _visible(s: Session, who: auth.Caller, action_id: str) -> schema.Action:
    try:
        uuid.UUID(action_id)
    except ValueError:
        raise ApiError(404, f"action {action_id} not found") from None
    action = s.get(schema.Action, action_id)
    if action is None or not actions.may_monitor(action, _principals(who)):
        raise ApiError(404, f"action {action_id} not found")
    return action


def _managed(s: Session, who: auth.Caller, action_id: str, verb: str) -> schema.Action:
    action = _visible(s, who, action_id)
    if not actions.may_manage(action, _principals(who)):
        log.info("%s may see action %s but not %s it", who.username, action_id, verb)
        raise ApiError(
            403, f"you may see action {action_id} but not {verb} it: you are not in its manage_by"
        )
    return action


def status(action_id: str, who: auth.Caller = CALLER, svc: Service = SERVICE) -> dict:
    with svc.sessions.begin() as s:
        action = _visible(s, who, action_id)
        return actions.status_doc(action, _current(s, action))


def cancel(action_id: str, who: auth.Caller = CALLER, svc: Service = SERVICE) -> dict:
    """Fail every task without a result yet; a finished action is returned as it is."""
    with svc.sessions.begin() as s:
        action = _managed(s, who, action_id, "cancel")
        state = _current(s, action)
        if state.complete:
            return actions.status_doc(action, state)
        reason = f"cancelled by {who.username} before it finished"
        stopped = [
            task_id
            for task_id in action.task_ids
            if store.finish_task(s, task_id, status="failed", exception=reason)
        ]
        store.sent(s, stopped)  # those still in the outbox are never published
        action.cancelled = True
        log.info(
            "%s cancelled action %s: %d task(s) stopped", who.username, action_id, len(stopped)
        )
    with svc.sessions.begin() as s:
        action = s.get(schema.Action, action_id)
        return actions.status_doc(action, _current(s, action))


def release(action_id: str, who: auth.Caller = CALLER, svc: Service = SERVICE) -> dict:
    """Forget a finished action and answer its last status; a running one is refused."""
    with svc.sessions.begin() as s:
        action = _managed(s, who, action_id, "release")
        state = _current(s, action)
        if not state.complete:
            raise ApiError(
                409,
                f"action {action_id} is still {state.status}; wait for it to finish or cancel"
                " it before releasing it",
            )
        doc = actions.status_doc(action, state)
        s.delete(action)
    log.info("%s released action %s", who.username, action_id)
    return doc


for _version in (V3, V2):
    _version.add_api_route("/{action_id}/status", status, methods=["GET"])
    _version.add_api_route("/{action_id}/cancel", cancel, methods=["POST"])
    _version.add_api_route("/{action_id}/release", release, methods=["POST"])
router = APIRouter()
router.include_router(V3)
router.include_router(V2)
