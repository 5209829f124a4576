"""Wiring the web app into the service: its routes, static files, headers and sign-in redirect."""

from __future__ import annotations

import typing as t
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from service import errors
from service.webapp import routes, signin


class SecurityHeaders:
    """ASGI middleware: every ``/app`` response carries the CSP and its companions."""

    def __init__(self, app: t.Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: t.Callable, send: t.Callable) -> None:
        if scope["type"] != "http" or not _is_app_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.encode(), v.encode()) for k, v in signin.SECURITY_HEADERS.items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def _is_app_path(path: str) -> bool:
    return path == "/app" or path.startswith("/app/")


def _wants_json(request: Request) -> bool:
    return "authorization" in request.headers or request.url.path.endswith(".json")


async def _sign_in(request: Request, exc: routes.SignInRequired) -> Response:
    """Scripts get the service's 401; browsers are sent to the sign-in page.

    The cookie is deleted only if one came and was refused: a link from another
    site arrives without the SameSite=Strict cookie, and must not sign anyone out.
    """
    if _wants_json(request):
        return errors.respond(401, f"{exc}; send 'Authorization: Bearer <access token>'")
    response = RedirectResponse("/app/login", status_code=303)
    if signin.SESSION_COOKIE in request.cookies:  # refused: a stale or revoked session
        response.delete_cookie(signin.SESSION_COOKIE, path=signin.COOKIE_PATH)
    return response


def install(app: FastAPI) -> None:
    app.include_router(routes.router)
    app.mount("/app/static", StaticFiles(directory=Path(__file__).parent / "static"), "app-static")
    app.add_exception_handler(routes.SignInRequired, _sign_in)
    app.add_middleware(SecurityHeaders)
