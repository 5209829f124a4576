"""Function registration: stored in the executable form endpoints expect.

``serialized: true`` code must be one packed buffer holding a code strategy;
``serialized: false`` is raw source, turned here into the pure-source strategy
(``st``) as SDK 4.15 used to do client-side. A function is visible to its owner
and, if public, to everyone.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlalchemy.orm import Session

from service import auth, bodies, schema
from service.context import CALLER, DB
from service.errors import ApiError
from wire import serializer
from wire.errors import SerializationError

router = APIRouter(tags=["functions"])


def executable_code(body: bodies.FunctionRegistration) -> tuple[str, str]:
    """The packed code buffer to store and its serde identifier, or a 400 saying why."""
    if not body.serialized:
        if not body.function_name.isidentifier():
            raise ApiError(400, "function_name must be the Python name the source defines")
        return serializer.pack_buffers([f"st\n{body.function_name}:{body.function_code}"]), "st"
    try:
        buffers = serializer.unpack_buffers(body.function_code)
    except SerializationError as e:
        raise ApiError(400, f"function_code is not a packed buffer: {e}") from None
    if len(buffers) != 1:
        raise ApiError(400, f"function_code must hold exactly 1 buffer, got {len(buffers)}")
    strategy = serializer.STRATEGIES.get(buffers[0][:3])
    if strategy is None or not strategy.for_code:
        raise ApiError(400, f"function_code uses no known code serializer ({buffers[0][:2]!r})")
    return body.function_code, buffers[0][:2]


def visible_function(s: Session, who: auth.Caller, function_id: str) -> schema.Function:
    """The function if the caller may run it; 404 otherwise (existence is not leaked)."""
    fn = s.get(schema.Function, function_id)
    if fn is None or not (fn.public or fn.owner_id == who.identity_id):
        raise ApiError(404, f"function {function_id} not found")
    return fn


@router.post("/v3/functions")
@router.post("/v2/functions")
def register_function(
    body: bodies.FunctionRegistration,
    who: auth.Caller = CALLER,
    s: Session = DB,
) -> dict:
    code, serde = executable_code(body)
    fn = schema.Function(
        id=str(uuid.uuid4()),
        owner_id=who.identity_id,
        name=body.function_name,
        code=code,
        description=body.description,
        public=body.public,
        meta={**body.meta, "serde_identifier": body.meta.get("serde_identifier", serde)},
    )
    s.add(fn)
    return {"function_uuid": fn.id}


@router.get("/v2/functions/{function_id}")
def get_function(function_id: uuid.UUID, who: auth.Caller = CALLER, s: Session = DB) -> dict:
    fn = visible_function(s, who, str(function_id))
    return {
        "function_uuid": fn.id,
        "function_name": fn.name,
        "function_code": fn.code,
        "description": fn.description,
        "public": fn.public,
        "owner": fn.owner_id,
        "meta": fn.meta,
    }


@router.delete("/v2/functions/{function_id}")
def delete_function(function_id: uuid.UUID, who: auth.Caller = CALLER, s: Session = DB) -> dict:
    fn = visible_function(s, who, str(function_id))
    if fn.owner_id != who.identity_id:
        raise ApiError(403, "only the function's owner may delete it")
    s.delete(fn)
    return {"result": 302, "function_uuid": fn.id}
