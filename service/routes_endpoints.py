"""Endpoint registration, listing, status, allowed functions and deletion.

Registration answers with the 4.19 core-endpoint shape (command queue and
heartbeat queue info), on a broker account of the manager's own that is
rotated at every registration (:mod:`service.broker_provisioning`), and
declares the endpoint's command queue. Start commands expire (an endpoint
refuses stale ones anyway), so a (re)registering endpoint is sent a fresh start
command, with fresh credentials, for every user endpoint that still has pending
tasks: work submitted while it was down is not stranded. Re-registering under a
known id keeps it; an id owned by someone else is refused.

Who may see or change what is :mod:`service.access`.
"""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from service import access, auth, bodies, routing, schema, store
from service.broker import BrokerUnavailable
from service.broker_admin import BrokerAdminError
from service.context import CALLER, DB, SERVICE, Service
from service.errors import ApiError

log = logging.getLogger(__name__)
router = APIRouter(tags=["endpoints"])
DEFAULT_HEARTBEAT_S = 30.0
MISSED_HEARTBEATS = 3
DELETED = "the endpoint was deleted before this task ran"


def is_online(last: float | None, period: float | None, now: float) -> bool:
    """Online if a heartbeat came within ~3 periods and it was not a goodbye (period 0)."""
    if last is None or period == 0:
        return False
    return now - last <= MISSED_HEARTBEATS * (period or DEFAULT_HEARTBEAT_S)


def visible_endpoint(s: Session, who: auth.Caller, endpoint_id: str) -> schema.Endpoint:
    ep = s.get(schema.Endpoint, endpoint_id)
    if ep is None or not access.can_see(ep, who.identities):
        raise ApiError(404, f"endpoint {endpoint_id} not found")
    return ep


def managed_endpoint(s: Session, who: auth.Caller, endpoint_id: str) -> schema.Endpoint:
    ep = visible_endpoint(s, who, endpoint_id)
    if not access.can_manage(ep, who.identities):
        raise ApiError(403, f"only the owner and admins of endpoint {endpoint_id} may do this")
    return ep


def _policy_id(s: Session, requested: uuid.UUID | None) -> str | None:
    if requested is None:
        return None
    if s.get(schema.AuthPolicy, str(requested)) is None:
        raise ApiError(
            400,
            f"authentication policy {requested} does not exist on this service;"
            " create it with 'compute-service policy add' and use the id it prints",
        )
    return str(requested)


def _register(
    endpoint_id: str, body: bodies.EndpointRegistration, who: auth.Caller, s: Session, svc: Service
) -> dict:
    ep = s.get(schema.Endpoint, endpoint_id)
    if ep is not None and ep.owner_id != who.identity_id:
        raise ApiError(403, f"endpoint {endpoint_id} is registered to another identity")
    if ep is None:
        ep = schema.Endpoint(id=endpoint_id, owner_id=who.identity_id, broker_generation=0)
        s.add(ep)
    ep.name = body.endpoint_name
    ep.display_name = body.display_name
    ep.public = body.public
    ep.multi_user = body.multi_user
    ep.high_assurance = body.high_assurance
    ep.metadata_ = body.metadata
    ep.allowed_functions = [str(f) for f in body.allowed_functions]
    ep.admins = [str(a) for a in body.admins]
    ep.authentication_policy = _policy_id(s, body.authentication_policy)
    s.flush()
    try:
        answer = svc.provisioner.register_manager(s, ep)
        waiting = store.user_endpoints_with_pending_tasks(s, endpoint_id)
        commands = [
            routing.start_command_for(uep, svc.provisioner.user_endpoint_creds(ep, uep))
            for uep in waiting
        ]
        svc.publisher.declare_command_queue(endpoint_id)
        if commands:
            properties = routing.command_properties(svc.topology.service_user)
            svc.publisher.send_commands(endpoint_id, commands, properties)
    except (BrokerUnavailable, BrokerAdminError) as e:
        raise ApiError(503, f"the message broker is unavailable; try again later ({e})") from None
    return answer


@router.post("/v3/endpoints")
def register_endpoint(
    body: bodies.EndpointRegistration,
    who: auth.Caller = CALLER,
    s: Session = DB,
    svc: Service = SERVICE,
) -> dict:
    return _register(str(uuid.uuid4()), body, who, s, svc)


@router.put("/v3/endpoints/{endpoint_id}")
def update_endpoint(
    endpoint_id: uuid.UUID,
    body: bodies.EndpointRegistration,
    who: auth.Caller = CALLER,
    s: Session = DB,
    svc: Service = SERVICE,
) -> dict:
    return _register(str(endpoint_id), body, who, s, svc)


def endpoint_doc(ep: schema.Endpoint) -> dict:
    return {
        "uuid": ep.id,
        "name": ep.name,
        "display_name": ep.display_name or ep.name,
        "owner": ep.owner_id,
        "public": ep.public,
        "multi_user": ep.multi_user,
        "high_assurance": ep.high_assurance,
        "allowed_functions": ep.allowed_functions,
        "admins": ep.admins or [],
        "authentication_policy": ep.authentication_policy,
        "metadata": ep.metadata_,
    }


@router.get("/v2/endpoints")
def list_endpoints(role: str = "any", who: auth.Caller = CALLER, s: Session = DB) -> list[dict]:
    if role not in ("any", "owner"):
        raise ApiError(400, "role must be 'any' or 'owner'")
    found = store.all_endpoints(s)
    if role == "owner":
        return [endpoint_doc(ep) for ep in found if ep.owner_id == who.identity_id]
    return [endpoint_doc(ep) for ep in found if access.can_see(ep, who.identities)]


@router.get("/v2/endpoints/{endpoint_id}")
def get_endpoint(endpoint_id: uuid.UUID, who: auth.Caller = CALLER, s: Session = DB) -> dict:
    return endpoint_doc(visible_endpoint(s, who, str(endpoint_id)))


@router.get("/v2/endpoints/{endpoint_id}/status")
def endpoint_status(endpoint_id: uuid.UUID, who: auth.Caller = CALLER, s: Session = DB) -> dict:
    ep = visible_endpoint(s, who, str(endpoint_id))
    online = is_online(ep.last_heartbeat, ep.heartbeat_period, time.time())
    state = ep.last_state or {}
    return {
        "status": "online" if online else "offline",
        "last_heartbeat": ep.last_heartbeat,
        "details": {k: v for k, v in state.items() if k != "error"},
    }


def allowed_functions_doc(ep: schema.Endpoint) -> dict:
    """The official ``AllowedFunctionsResponse``."""
    functions = [str(f) for f in ep.allowed_functions or ()]
    return {"endpoint_id": ep.id, "restricted": bool(functions), "functions": functions}


class AllowedFunctions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    functions: list[uuid.UUID] = Field(max_length=10000)


@router.get("/v3/endpoints/{endpoint_id}/allowed_functions")
def get_allowed_functions(
    endpoint_id: uuid.UUID, who: auth.Caller = CALLER, s: Session = DB
) -> dict:
    return allowed_functions_doc(visible_endpoint(s, who, str(endpoint_id)))


@router.put("/v3/endpoints/{endpoint_id}/allowed_functions")
def put_allowed_functions(
    endpoint_id: uuid.UUID, body: AllowedFunctions, who: auth.Caller = CALLER, s: Session = DB
) -> dict:
    """Replace the list (empty: any function); the manager's next registration sets it again."""
    ep = managed_endpoint(s, who, str(endpoint_id))
    ep.allowed_functions = list(dict.fromkeys(str(f) for f in body.functions))
    return allowed_functions_doc(ep)


@router.delete("/v2/endpoints/{endpoint_id}")
def delete_endpoint(
    endpoint_id: uuid.UUID, who: auth.Caller = CALLER, svc: Service = SERVICE
) -> dict:
    """Forget the endpoint, retire its broker accounts and queues, fail its waiting tasks.

    The database is committed first; the submitters of waiting tasks are told
    afterwards (a failed task is on record even if that message is lost).
    """
    topo = svc.topology
    try:
        with svc.sessions.begin() as s:
            ep = managed_endpoint(s, who, str(endpoint_id))
            queues = [topo.command_queue(ep.id)]
            failed = []
            for task in store.pending_tasks_of_endpoint(s, ep.id):
                if store.finish_task(s, task.id, status="failed", exception=DELETED):
                    queue = topo.sdk_queue(task.owner_id, task.task_group_id)
                    failed.append(
                        (queue, routing.error_result(task.id, DELETED, "EndpointDeleted"))
                    )
            svc.provisioner.retire_endpoint(s, ep)
            for uep in s.query(schema.UserEndpoint).filter_by(endpoint_id=ep.id):
                queues.append(topo.task_queue(uep.id))
                s.delete(uep)
            s.delete(ep)
    except BrokerAdminError as e:
        raise ApiError(503, f"the message broker is unavailable; try again later ({e})") from None
    try:
        svc.publisher.send_results(failed)
        svc.publisher.delete_queues(queues)
    except BrokerUnavailable as e:
        log.error(
            "endpoint %s deleted, but its queues and waiting tasks' errors: %s", endpoint_id, e
        )
    return {"result": 302, "endpoint_id": str(endpoint_id)}
