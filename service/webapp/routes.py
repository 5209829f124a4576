"""The web app's routes under ``/app``: the edge that reads requests and renders pages.

Who the viewer is comes from a bearer token (scripts) or the session cookie
(browsers); both are tokens of the service's own issuing, checked by
:func:`service.auth.caller_for_token`. What the viewer may see is decided in
:mod:`service.webapp.views`; an object the viewer may not see answers 404,
exactly as one that does not exist.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from pathlib import Path

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from service import access, auth, routes_auth, schema, store
from service.context import DB, SERVICE, Service
from service.webapp import charts, display, queries, signin, views
from wire.serializer import STRATEGIES

log = logging.getLogger(__name__)
router = APIRouter(prefix="/app", include_in_schema=False)
PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
HOUR_S = 3600


class SignInRequired(Exception):
    """No usable credential: browsers go to the sign-in page, scripts get 401."""


@dataclasses.dataclass(frozen=True)
class Viewer:
    who: auth.Caller
    token: str

    @property
    def csrf(self) -> str:
        return signin.session_csrf(self.token)


def _presented_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(signin.SESSION_COOKIE) or None


def viewer(request: Request, s: Session = DB) -> Viewer:
    token = _presented_token(request)
    if token is None:
        raise SignInRequired("sign in to see this page")
    try:
        who = auth.caller_for_token(s, token)
    except auth.AuthError as e:
        raise SignInRequired(str(e)) from None
    if who.resource_server != auth.COMPUTE_RESOURCE_SERVER:
        raise SignInRequired("this token is not valid for the compute service")
    return Viewer(who, token)


VIEWER = Depends(viewer)


async def _form(request: Request) -> dict[str, str]:
    """The posted form; read here so the handler that needs the database can be a plain
    function, which FastAPI runs in its thread pool instead of on the event loop."""
    return signin.form_fields(await request.body())


FORM = Depends(_form)


def page(name: str, code: int = 200, viewer: Viewer | None = None, **context) -> HTMLResponse:
    context.setdefault("refresh", None)
    html = PAGES.get_template(name).render(viewer=viewer, **context)
    return HTMLResponse(html, status_code=code, headers={"cache-control": "no-store"})


def not_found(what: str, viewer: Viewer) -> HTMLResponse:
    return page("message.html", 404, viewer, title="Not found", message=f"No {what} here.")


def _uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


# ---- signing in and out -------------------------------------------------------------


def _login_page(request: Request, code: int = 200, error: str | None = None) -> HTMLResponse:
    """The sign-in form, with the login cookie its CSRF field must match (kept if present)."""
    nonce = request.cookies.get(signin.LOGIN_COOKIE) or signin.new_login_nonce()
    response = page("login.html", code, csrf=nonce, error=error)
    options = signin.cookie_options(signin.LOGIN_COOKIE_TTL_S, _secure(request))
    response.set_cookie(signin.LOGIN_COOKIE, nonce, **options)
    return response


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    return _login_page(request)


@router.post("/login")
async def login(
    request: Request, svc: Service = SERVICE, fields: dict[str, str] = FORM
) -> Response:
    address = request.client.host if request.client else "?"
    if not signin.csrf_matches(request.cookies.get(signin.LOGIN_COOKIE), fields.get("csrf")):
        log.info("web sign-in from %s refused: the form's CSRF token does not match", address)
        return _login_page(request, 403, "This sign-in form has expired; sign in again.")
    client_id, secret = fields.get("client_id", "").strip(), fields.get("client_secret", "")
    if not client_id or not secret:
        return _login_page(request, 400, "Enter both the Client ID and the Client secret.")
    try:
        issued = await routes_auth.exchange(svc, (client_id, secret), auth.COMPUTE_SCOPE, address)
    except routes_auth.TooManyFailures as e:
        response = _login_page(request, 429, f"Too many failed sign-ins: {e}.")
        response.headers["retry-after"] = str(int(e.wait + 0.999))
        return response
    except auth.AuthError:
        return _login_page(
            request, 401, "That Client ID and Client secret do not match; check both and retry."
        )
    log.info("web sign-in for client %s from %s", client_id[:64], address)
    response = RedirectResponse("/app/endpoints", status_code=303)
    session = signin.cookie_options(issued[0].expires_in, _secure(request))
    response.set_cookie(signin.SESSION_COOKIE, issued[0].access_token, **session)
    response.delete_cookie(signin.LOGIN_COOKIE, path=signin.COOKIE_PATH)
    return response


@router.post("/logout")
def logout(me: Viewer = VIEWER, s: Session = DB, fields: dict[str, str] = FORM) -> Response:
    """End the session: its token is deleted, so a copied cookie is worthless too."""
    if not signin.csrf_matches(me.csrf, fields.get("csrf")):
        log.info("web sign-out for client %s refused: CSRF token mismatch", me.who.client_id)
        message = "This form has expired; reload the page and sign out again."
        return page("message.html", 403, me, title="Not signed out", message=message)
    row = s.get(schema.AccessToken, auth.token_digest(me.token))
    if row is not None:
        s.delete(row)
    response = RedirectResponse("/app/login", status_code=303)
    response.delete_cookie(signin.SESSION_COOKIE, path=signin.COOKIE_PATH)
    return response


# ---- endpoints -----------------------------------------------------------------------


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/app/endpoints", status_code=303)


@router.get("/endpoints")
def endpoints(me: Viewer = VIEWER, s: Session = DB) -> HTMLResponse:
    now = time.time()
    found = [ep for ep in store.all_endpoints(s) if access.can_see(ep, me.who.identities)]
    by_endpoint: dict[str, list[schema.UserEndpoint]] = {ep.id: [] for ep in found}
    for uep in queries.user_endpoints_of(s, by_endpoint):
        by_endpoint[uep.endpoint_id].append(uep)
    owners = queries.usernames(s, (ep.owner_id for ep in found))
    rows = [
        views.endpoint_row(
            ep, owners.get(ep.owner_id, ep.owner_id), by_endpoint[ep.id], me.who.identities, now
        )
        for ep in found
    ]
    return page("endpoints.html", viewer=me, endpoints=rows)


@router.get("/endpoints/{endpoint_id}")
def endpoint(endpoint_id: str, me: Viewer = VIEWER, s: Session = DB) -> HTMLResponse:
    now = time.time()
    ep = s.get(schema.Endpoint, _uuid(endpoint_id) or "")
    if ep is None or not access.can_see(ep, me.who.identities):
        return not_found("endpoint", me)
    admin = access.can_manage(ep, me.who.identities)
    every = queries.user_endpoints_of(s, [ep.id])
    ueps = views.visible_user_endpoints(ep, every, me.who.identities)
    counts = queries.task_counts(s, (u.id for u in ueps))
    names = queries.usernames(s, [ep.owner_id, *(u.identity_id for u in ueps)])
    rows = [
        views.user_endpoint_row(
            u, names.get(u.identity_id, u.identity_id), counts.get(u.id, {}), admin, now
        )
        for u in ueps
    ]
    summary = views.endpoint_row(
        ep, names.get(ep.owner_id, ep.owner_id), every, me.who.identities, now
    )
    return page(
        "endpoint.html",
        viewer=me,
        endpoint=summary,
        metadata=(ep.metadata_ or {}) if admin else {},
        admin=admin,
        user_endpoints=rows,
        charts=_charts(s, ep.id, None if admin else me.who.identity_id, now),
    )


def _charts(s: Session, endpoint_id: str, owner_id: str | None, now: float) -> list:
    """The last hour's charts: of everyone's tasks for an admin, else of the viewer's own."""
    finished = queries.finished_since(s, endpoint_id, now - HOUR_S, owner_id)
    throughput = charts.per_minute(((done, status) for _, done, status in finished), now)
    latencies = charts.latency_bins(done - sent for sent, done, _ in finished)
    return [charts.throughput_chart(throughput), charts.latency_chart(latencies)]


# ---- tasks ---------------------------------------------------------------------------


def _task_rows(
    s: Session, me: Viewer, status: str | None, endpoint_id: str | None
) -> list[views.TaskRow]:
    tasks = queries.tasks_of(s, me.who.identity_id, status, endpoint_id)
    functions = queries.function_names(s, (t.function_id for t in tasks))
    endpoints_ = queries.endpoint_names(s, (t.endpoint_id for t in tasks))
    return [
        views.task_row(
            t,
            functions.get(t.function_id, t.function_id),
            endpoints_.get(t.endpoint_id, t.endpoint_id),
        )
        for t in tasks
    ]


def _filters(status: str | None, endpoint: str | None) -> tuple[str | None, str | None, str | None]:
    """(stored status, endpoint id, problem): a problem names what to fix."""
    try:
        stored = views.status_filter(status)
    except ValueError as e:
        return None, None, str(e)
    if endpoint and _uuid(endpoint) is None:
        return None, None, f"endpoint {endpoint[:40]!r} is not an endpoint id"
    return stored, _uuid(endpoint) if endpoint else None, None


@router.get("/tasks")
def tasks(
    status: str | None = None, endpoint: str | None = None, me: Viewer = VIEWER, s: Session = DB
) -> HTMLResponse:
    stored, endpoint_id, problem = _filters(status, endpoint)
    if problem:
        return page("message.html", 400, me, title="Unknown filter", message=problem)
    rows = _task_rows(s, me, stored, endpoint_id)
    choices = queries.endpoint_names(s, queries.task_endpoints(s, me.who.identity_id))
    return page(
        "tasks.html",
        viewer=me,
        tasks=rows,
        status=views.STATUS_LABELS.get(stored or "", ""),
        statuses=list(views.STATUS_LABELS.values()),
        endpoint=endpoint_id or "",
        endpoints=sorted(choices.items(), key=lambda kv: kv[1]),
        limit=queries.TASK_PAGE_ROWS,
    )


@router.get("/tasks.json")
def tasks_json(
    status: str | None = None, endpoint: str | None = None, me: Viewer = VIEWER, s: Session = DB
) -> JSONResponse:
    """The tasks page's rows, for its live refresh and for scripts."""
    stored, endpoint_id, problem = _filters(status, endpoint)
    if problem:
        return JSONResponse({"error": problem}, status_code=400)
    rows = _task_rows(s, me, stored, endpoint_id)
    return JSONResponse(
        {"tasks": [r.as_json() for r in rows], "pending": sum(r.status == "pending" for r in rows)},
        headers={"cache-control": "no-store"},
    )


@router.get("/tasks/{task_id}")
def task(task_id: str, me: Viewer = VIEWER, s: Session = DB) -> HTMLResponse:
    found = store.owned_tasks(s, me.who.identity_id, [_uuid(task_id) or ""])
    if not found:
        return not_found("task", me)
    t = found[0]
    function = queries.function_names(s, [t.function_id]).get(t.function_id, t.function_id)
    endpoint_name = queries.endpoint_names(s, [t.endpoint_id]).get(t.endpoint_id, t.endpoint_id)
    uep = s.get(schema.UserEndpoint, t.user_endpoint_id)
    result_bytes = len(t.result.encode()) if t.result is not None else None
    strategy = STRATEGIES.get((t.result or "")[:3])
    response = page(
        "task.html",
        viewer=me,
        task=views.task_row(t, function, endpoint_name),
        user_endpoint=uep.name if uep else t.user_endpoint_id,
        result_size=display.size(result_bytes),
        serializer=strategy.name if strategy else None,
        exception=t.exception if t.status == "failed" else None,
        details=sorted((t.details or {}).items()),
        refresh=2 if t.status == store.PENDING else None,
    )
    return response
