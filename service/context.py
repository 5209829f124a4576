"""What every request handler needs: settings, database, broker, and the caller.

Handlers receive these through FastAPI dependencies so the routes stay free of
globals and a test can build an app against its own database and vhost.
"""

from __future__ import annotations

import dataclasses
import typing as t

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from service import auth
from service.broker import Publisher
from service.broker_provisioning import Provisioner
from service.errors import ApiError
from service.login_limits import LoginLimits
from service.routing import Topology


@dataclasses.dataclass(frozen=True)
class Settings:
    """How one service instance runs."""

    db_url: str
    amqp_url: str
    amqp_prefix: str = ""
    token_ttl_s: int = auth.DEFAULT_TOKEN_TTL_S
    broker_api_url: str | None = None
    start_timeout_s: float = 3600.0
    login_failures_per_client: int = 10
    login_failures_per_address: int = 100
    login_failure_window_s: float = 300.0


@dataclasses.dataclass
class Service:
    """The live parts of a running service, shared by all handlers."""

    settings: Settings
    sessions: sessionmaker[Session]
    topology: Topology
    publisher: Publisher
    provisioner: Provisioner
    logins: LoginLimits


def service(request: Request) -> Service:
    return request.app.state.service


SERVICE = Depends(service)


def db(svc: Service = SERVICE) -> t.Iterator[Session]:
    """A session committed when the handler returns normally, rolled back otherwise.

    Not one ``begin()`` block: :func:`any_caller` commits its read early, and
    the handler's own work begins a new transaction on the same session.
    """
    with svc.sessions() as s:
        yield s
        s.commit()


DB = Depends(db, scope="function")


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <access token>'")
    return token.strip()


def any_caller(request: Request, s: Session = DB) -> auth.Caller:
    """The caller behind any token this service issued (userinfo accepts both kinds).

    The lookup's transaction ends here, which gives its connection back to the
    pool: a submit then opens sessions of its own, and a request holding one
    connection while it waits for a second deadlocks the pool once as many
    requests as it has connections do the same. Twenty researchers submitting
    at once stalled for the pool's 30 s timeout and got 500s.
    """
    try:
        caller = auth.caller_for_token(s, bearer_token(request))
    except auth.AuthError as e:
        raise ApiError(e.status, str(e)) from None
    s.commit()
    return caller


ANY_CALLER = Depends(any_caller)


def caller(who: auth.Caller = ANY_CALLER) -> auth.Caller:
    """The caller of a compute route: the token must be for the compute service."""
    if who.resource_server != auth.COMPUTE_RESOURCE_SERVER:
        raise ApiError(
            403, "this token is not valid for the compute service; request the compute scope"
        )
    return who


CALLER = Depends(caller)
