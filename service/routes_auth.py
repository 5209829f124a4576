"""The two Globus Auth routes the SDK and endpoints call: token and userinfo.

Only the client-credentials grant exists here. The response lists one token
per resource server requested (the first in the top level, the rest in
``other_tokens``), which is what globus-sdk's token handling expects: asking
for only the compute scope yields exactly one token.
"""

from __future__ import annotations

import base64
import binascii
import logging
import urllib.parse

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service import auth, schema, store
from service.context import ANY_CALLER, DB, SERVICE, Service

log = logging.getLogger(__name__)
router = APIRouter(tags=["auth"])


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    body = {
        "error": error,
        "error_description": description,
        "errors": [{"code": error, "detail": description, "status": str(status)}],
    }
    return JSONResponse(body, status_code=status)


def basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (urllib.parse.unquote(client_id), urllib.parse.unquote(secret)) if sep else None


@router.post("/v2/oauth2/token")
async def token(request: Request, svc: Service = SERVICE) -> JSONResponse:
    """Trade client credentials for bearer tokens (client_credentials grant only).

    The secret check (scrypt) and the database run on a worker thread: a slow
    hash must not hold up every other request on the event loop. Wrong secrets
    are limited per client id and per address (:mod:`service.login_limits`).
    """
    form = urllib.parse.parse_qs((await request.body()).decode(errors="replace"))
    field = {k: v[0] for k, v in form.items()}
    credentials = basic_credentials(request.headers.get("authorization", ""))
    if credentials is None and "client_id" in field:
        credentials = (field["client_id"], field.get("client_secret", ""))
    if credentials is None:
        return _oauth_error(401, "invalid_client", "send client credentials with HTTP Basic auth")
    if field.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
    client_id, address = credentials[0][:64], request.client.host if request.client else "?"
    wait = svc.logins.retry_after(client_id, address)
    if wait is not None:
        log.warning(
            "token request from %s for client %s refused: too many failures", address, client_id
        )
        return _too_many(wait)
    try:
        issued = await run_in_threadpool(_issue, svc, credentials, field.get("scope", ""))
    except auth.AuthError as e:
        if e.status == 401:
            _count_failure(svc, client_id, address)
        log.info("token request refused for client %s: %s", client_id, e)
        kind = "invalid_client" if e.status == 401 else "invalid_scope"
        return _oauth_error(e.status, kind, str(e))
    svc.logins.succeeded(client_id)
    first, *others = (i.as_response() for i in issued)
    return JSONResponse({**first, "other_tokens": others})


def _issue(svc: Service, credentials: tuple[str, str], scope: str) -> list[auth.Issued]:
    with svc.sessions.begin() as s:
        client = auth.authenticate_client(s, *credentials)
        return auth.issue_tokens(s, client, scope, svc.settings.token_ttl_s)


def _count_failure(svc: Service, client_id: str, address: str) -> None:
    per_client, per_address = svc.logins.failed(client_id, address)
    limits = svc.logins
    if per_client == limits.clients.limit or per_address == limits.addresses.limit:
        log.warning(
            "client %s from %s: %d wrong secrets (%d from that address) in %.0f s;"
            " further attempts wait",
            client_id,
            address,
            per_client,
            per_address,
            limits.clients.window_s,
        )


def _too_many(wait: float) -> JSONResponse:
    seconds = int(wait + 0.999)
    response = _oauth_error(
        429, "too_many_requests", f"too many failed attempts; try again in {seconds} s"
    )
    response.headers["Retry-After"] = str(seconds)
    return response


@router.get("/v2/oauth2/userinfo")
def userinfo(who: auth.Caller = ANY_CALLER, s: Session = DB) -> dict:
    """The caller's identity and identity set, shaped like Globus Auth's userinfo."""
    primary = who.identities[0]
    client = s.get(schema.ApiClient, who.client_id)
    identities = [auth.identity_doc(i) for i in store.identity_set(s, client)] if client else []
    return {
        "sub": primary["sub"],
        "preferred_username": primary["username"],
        "name": primary["name"],
        "email": primary["email"],
        "organization": primary["organization"],
        "identity_provider": primary["identity_provider"],
        "identity_set": identities or list(who.identities),
    }
