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

    Wrong secrets are limited per client id and per address
    (:mod:`service.login_limits`), in :func:`exchange`.
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
    address = request.client.host if request.client else "?"
    try:
        issued = await exchange(svc, credentials, field.get("scope", ""), address)
    except TooManyFailures as e:
        return _too_many(e.wait)
    except auth.AuthError as e:
        kind = "invalid_client" if e.status == 401 else "invalid_scope"
        return _oauth_error(e.status, kind, str(e))
    first, *others = (i.as_response() for i in issued)
    return JSONResponse({**first, "other_tokens": others})


class TooManyFailures(Exception):
    """Too many wrong secrets for this client id or from this address; ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"too many failed attempts; try again in {int(wait + 0.999)} s")
        self.wait = wait


async def exchange(
    svc: Service, credentials: tuple[str, str], scope: str, address: str
) -> list[auth.Issued]:
    """Client credentials -> tokens, under the login limits; the one check every sign-in uses.

    The secret check (scrypt) and the database run on a worker thread: a slow
    hash must not hold up every other request on the event loop. Raises
    :class:`TooManyFailures` or :class:`auth.AuthError`.
    """
    client_id = credentials[0][:64]
    wait = svc.logins.retry_after(client_id, address)
    if wait is not None:
        log.warning(
            "token request from %s for client %s refused: too many failures", address, client_id
        )
        raise TooManyFailures(wait)
    try:
        issued = await run_in_threadpool(_issue, svc, credentials, scope)
    except auth.AuthError as e:
        if e.status == 401:
            _count_failure(svc, client_id, address)
        log.info("token request refused for client %s: %s", client_id, e)
        raise
    svc.logins.succeeded(client_id)
    return issued


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
