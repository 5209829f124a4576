"""Endpoint registration, listing, status and deletion.

Registration answers with the 4.19 core-endpoint shape (command queue and
heartbeat queue info) and declares the endpoint's command queue. Start
commands expire (an endpoint refuses stale ones anyway), so a (re)registering
endpoint is sent a fresh start command for every user endpoint that still has
pending tasks: work submitted while it was down is not stranded. Re-registering
under a known id keeps it; an id owned by someone else is refused. An endpoint
is visible to its owner and, if public, to everyone; only the owner may change
or delete it.
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter
from sqlalchemy.orm import Session

from service import auth, bodies, routing, schema, store
from service.broker import BrokerUnavailable
from service.context import CALLER, DB, SERVICE, Service
from service.errors import ApiError

router = APIRouter(tags=["endpoints"])
DEFAULT_HEARTBEAT_S = 30.0
MISSED_HEARTBEATS = 3


def is_online(last: float | None, period: float | None, now: float) -> bool:
    """Online if a heartbeat came within ~3 periods and it was not a goodbye (period 0)."""
    if last is None or period == 0:
        return False
    return now - last <= MISSED_HEARTBEATS * (period or DEFAULT_HEARTBEAT_S)


def visible_endpoint(s: Session, who: auth.Caller, endpoint_id: str) -> schema.Endpoint:
    ep = s.get(schema.Endpoint, endpoint_id)
    if ep is None or not (ep.public or ep.owner_id == who.identity_id):
        raise ApiError(404, f"endpoint {endpoint_id} not found")
    return ep


def owned_endpoint(s: Session, who: auth.Caller, endpoint_id: str) -> schema.Endpoint:
    ep = visible_endpoint(s, who, endpoint_id)
    if ep.owner_id != who.identity_id:
        raise ApiError(403, f"endpoint {endpoint_id} belongs to another identity")
    return ep


def _register(
    endpoint_id: str, body: bodies.EndpointRegistration, who: auth.Caller, s: Session, svc: Service
) -> dict:
    ep = s.get(schema.Endpoint, endpoint_id)
    if ep is not None and ep.owner_id != who.identity_id:
        raise ApiError(403, f"endpoint {endpoint_id} is registered to another identity")
    if ep is None:
        ep = schema.Endpoint(id=endpoint_id, owner_id=who.identity_id)
        s.add(ep)
    ep.name = body.endpoint_name
    ep.display_name = body.display_name
    ep.public = body.public
    ep.multi_user = body.multi_user
    ep.high_assurance = body.high_assurance
    ep.metadata_ = body.metadata
    ep.allowed_functions = [str(f) for f in body.allowed_functions]
    s.flush()
    waiting = store.user_endpoints_with_pending_tasks(s, endpoint_id)
    commands = [routing.start_command_for(svc.topology, uep) for uep in waiting]
    try:
        svc.publisher.declare_command_queue(endpoint_id)
        if commands:
            svc.publisher.send_commands(endpoint_id, commands, routing.command_properties())
    except BrokerUnavailable as e:
        raise ApiError(503, str(e)) from None
    return svc.topology.registration(endpoint_id)


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
        "metadata": ep.metadata_,
    }


@router.get("/v2/endpoints")
def list_endpoints(role: str = "any", who: auth.Caller = CALLER, s: Session = DB) -> list[dict]:
    if role not in ("any", "owner"):
        raise ApiError(400, "role must be 'any' or 'owner'")
    return [endpoint_doc(ep) for ep in store.visible_endpoints(s, who.identity_id, role == "owner")]


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


@router.delete("/v2/endpoints/{endpoint_id}")
def delete_endpoint(endpoint_id: uuid.UUID, who: auth.Caller = CALLER, s: Session = DB) -> dict:
    ep = owned_endpoint(s, who, str(endpoint_id))
    for uep in s.query(schema.UserEndpoint).filter_by(endpoint_id=ep.id):
        s.delete(uep)
    s.delete(ep)
    return {"result": 302, "endpoint_id": ep.id}
