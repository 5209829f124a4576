"""The reads the web app's pages make; every one takes the caller's Session."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from service import schema
from service.store import TERMINAL

TASK_PAGE_ROWS = 200


def usernames(s: Session, ids: Iterable[str]) -> dict[str, str]:
    wanted = set(ids)
    if not wanted:
        return {}
    query = select(schema.Identity.id, schema.Identity.username).where(
        schema.Identity.id.in_(wanted)
    )
    return {key: name for key, name in s.execute(query)}


def function_names(s: Session, ids: Iterable[str]) -> dict[str, str]:
    wanted = set(ids)
    if not wanted:
        return {}
    query = select(schema.Function.id, schema.Function.name).where(schema.Function.id.in_(wanted))
    return {key: name for key, name in s.execute(query)}


def endpoint_names(s: Session, ids: Iterable[str]) -> dict[str, str]:
    wanted = set(ids)
    if not wanted:
        return {}
    query = select(schema.Endpoint.id, schema.Endpoint.display_name, schema.Endpoint.name).where(
        schema.Endpoint.id.in_(wanted)
    )
    return {i: display or name for i, display, name in s.execute(query)}


def user_endpoints_of(s: Session, endpoint_ids: Iterable[str]) -> list[schema.UserEndpoint]:
    query = select(schema.UserEndpoint).where(
        schema.UserEndpoint.endpoint_id.in_(set(endpoint_ids))
    )
    return list(s.scalars(query.order_by(schema.UserEndpoint.name)))


def task_counts(s: Session, user_endpoint_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per user endpoint, how many of its tasks are in each status."""
    query = (
        select(schema.Task.user_endpoint_id, schema.Task.status, func.count())
        .where(schema.Task.user_endpoint_id.in_(set(user_endpoint_ids)))
        .group_by(schema.Task.user_endpoint_id, schema.Task.status)
    )
    counts: dict[str, dict[str, int]] = {}
    for uep_id, status, n in s.execute(query):
        counts.setdefault(uep_id, {})[status] = n
    return counts


def tasks_of(
    s: Session, owner_id: str, status: str | None, endpoint_id: str | None
) -> list[schema.Task]:
    """The owner's newest tasks, optionally of one status and one endpoint.

    Without their results, tracebacks and details: the list shows none of them,
    and 200 results of up to 10 MB each would cost the service gigabytes per request.
    """
    query = (
        select(schema.Task)
        .options(
            defer(schema.Task.result), defer(schema.Task.exception), defer(schema.Task.details)
        )
        .where(schema.Task.owner_id == owner_id)
    )
    if status:
        query = query.where(schema.Task.status == status)
    if endpoint_id:
        query = query.where(schema.Task.endpoint_id == endpoint_id)
    query = query.order_by(schema.Task.created_t.desc(), schema.Task.id).limit(TASK_PAGE_ROWS)
    return list(s.scalars(query))


def finished_since(
    s: Session, endpoint_id: str, since: float, owner_id: str | None
) -> list[tuple[float, float, str]]:
    """(submitted, completed, status) of the endpoint's tasks finished after ``since``;
    only ``owner_id``'s when given."""
    query = select(schema.Task.created_t, schema.Task.completion_t, schema.Task.status).where(
        schema.Task.endpoint_id == endpoint_id,
        schema.Task.status.in_(TERMINAL),
        schema.Task.completion_t >= since,
    )
    if owner_id is not None:
        query = query.where(schema.Task.owner_id == owner_id)
    return [(c, d, st) for c, d, st in s.execute(query)]


def task_endpoints(s: Session, owner_id: str) -> list[str]:
    """The endpoints the owner has sent tasks to: the choices of the tasks page's filter."""
    query = select(schema.Task.endpoint_id).where(schema.Task.owner_id == owner_id).distinct()
    return list(s.scalars(query))
