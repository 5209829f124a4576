"""Error bodies in the official service's shape, for every failure we answer.

The SDK turns any non-2xx into ``globus_sdk.ComputeAPIError`` and shows
``code``/``reason``/``http_status_code`` (the OpenAPI ``ErrorResponse``). 401
and 403 bodies deliberately carry no ``authorization_parameters``: with that key
the SDK would think Globus Auth wants a fresh login and start one.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    422: "UNPROCESSABLE_ENTITY",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


class ApiError(Exception):
    """A failure to report to the caller with a status and a message they can act on."""

    def __init__(self, status: int, reason: str, code: str | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code or _CODES.get(status, "ERROR")


def body(status: int, reason: str, code: str | None = None) -> dict:
    return {
        "code": code or _CODES.get(status, "ERROR"),
        "reason": reason,
        "detail": reason,
        "http_status_code": status,
        "status": "Failed",
        "error_args": [],
    }


def respond(status: int, reason: str, code: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="compute"'} if status == 401 else None
    return JSONResponse(body(status, reason, code), status_code=status, headers=headers)


def describe_validation(exc: RequestValidationError) -> str:
    """One readable line per problem: ``tasks.<fid>: Input should be a valid list``."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        loc = loc[1:] if loc[:1] == ["body"] else loc  # where it was; a field may be named body
        where = ".".join(loc) or "request body"
        lines.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(lines)


def install(app: FastAPI) -> None:
    """Route every error FastAPI or our code raises through :func:`body`."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return respond(exc.status, exc.reason, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(422, describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return respond(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return respond(500, f"internal error ({type(exc).__name__}); see the service log")
