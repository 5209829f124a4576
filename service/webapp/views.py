"""What each page shows, and to whom: pure functions from database rows to page rows.

Visibility is decided here, once:

- an endpoint is listed when :func:`service.access.can_see` allows it;
- its user endpoints are all shown to its admins (owner and ``admins``), with
  the local account each runs as and its rendered config (both come from the
  user endpoint's own heartbeats); anyone else sees only the user endpoints of
  their own identity, without those two;
- a task is shown only to the identity that submitted it (as the REST API).

"Running" is what the user endpoint's engine reported at its last heartbeat:
the service itself only knows a task as pending until its result arrives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from service import access, schema
from service.routes_endpoints import is_online
from service.store import PENDING
from service.webapp import display

STATUS_LABELS = {PENDING: "pending", "success": "success", "failed": "failed"}


@dataclasses.dataclass(frozen=True)
class EndpointRow:
    id: str
    name: str
    online: bool
    heartbeat: str
    owner: str
    public: bool
    multi_user: bool
    live_user_endpoints: int
    manager: bool


@dataclasses.dataclass(frozen=True)
class UserEndpointRow:
    id: str
    name: str
    identity: str
    state: str
    since: str
    pending: int
    running: int | None
    done: int
    failed: int
    local_user: str | None
    config: str | None
    error: str | None


@dataclasses.dataclass(frozen=True)
class TaskRow:
    id: str
    function: str
    endpoint: str
    endpoint_id: str
    status: str
    submitted: str
    completed: str
    duration: str

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def _live(row: schema.Endpoint | schema.UserEndpoint, now: float) -> bool:
    state = row.last_state or {}
    if state.get("active") is False or state.get("error"):
        return False
    return is_online(row.last_heartbeat, row.heartbeat_period, now)


def endpoint_row(
    ep: schema.Endpoint,
    owner: str,
    user_endpoints: Iterable[schema.UserEndpoint],
    viewer: Sequence[dict],
    now: float,
) -> EndpointRow:
    return EndpointRow(
        id=ep.id,
        name=ep.display_name or ep.name,
        online=_live(ep, now),
        heartbeat=display.age(ep.last_heartbeat, now),
        owner=owner,
        public=bool(ep.public),
        multi_user=bool(ep.multi_user),
        live_user_endpoints=sum(1 for u in user_endpoints if _live(u, now)),
        manager=access.can_manage(ep, viewer),
    )


def user_endpoint_state(uep: schema.UserEndpoint, now: float) -> tuple[str, float | None]:
    """Its state and since when, from what its heartbeats (or its manager's notice) said."""
    state = uep.last_state or {}
    if state.get("error"):
        return "failed", uep.last_heartbeat
    if uep.last_heartbeat is None:
        return "not started", None
    if _live(uep, now):
        started = state.get("start_unix")
        return "running", started if isinstance(started, int | float) else uep.last_heartbeat
    return "stopped", uep.last_heartbeat


def visible_user_endpoints(
    ep: schema.Endpoint, ueps: Iterable[schema.UserEndpoint], viewer: Sequence[dict]
) -> list[schema.UserEndpoint]:
    if access.can_manage(ep, viewer):
        return list(ueps)
    mine = access.identity_ids(viewer)
    return [u for u in ueps if u.identity_id in mine]


def user_endpoint_row(
    uep: schema.UserEndpoint,
    identity: str,
    counts: Mapping[str, int],
    admin: bool,
    now: float,
) -> UserEndpointRow:
    """One user endpoint; the local account and config only for an admin's eyes."""
    state, since = user_endpoint_state(uep, now)
    reported = uep.last_state or {}
    running = reported.get("outstanding_tasks") if state == "running" else None
    return UserEndpointRow(
        id=uep.id,
        name=uep.name,
        identity=identity,
        state=state,
        since=display.when(since),
        pending=counts.get(PENDING, 0),
        running=running if isinstance(running, int) else None,
        done=counts.get("success", 0) + counts.get("failed", 0),
        failed=counts.get("failed", 0),
        local_user=_text(reported.get("posix_username")) if admin else None,
        config=_text(reported.get("config_raw")) if admin else None,
        error=_text(reported.get("error")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def task_row(task: schema.Task, function: str, endpoint: str) -> TaskRow:
    finished = task.completion_t
    return TaskRow(
        id=task.id,
        function=function,
        endpoint=endpoint,
        endpoint_id=task.endpoint_id,
        status=STATUS_LABELS.get(task.status, task.status),
        submitted=display.when(task.created_t),
        completed=display.when(finished),
        duration=display.span(finished - task.created_t if finished is not None else None),
    )


def status_filter(label: str | None) -> str | None:
    """The stored status for a filter label ("" or None: any); ValueError if unknown."""
    if not label:
        return None
    for stored, shown in STATUS_LABELS.items():
        if label in (stored, shown):
            return stored
    raise ValueError(
        f"unknown status {label[:40]!r}; use one of {', '.join(STATUS_LABELS.values())}"
    )
