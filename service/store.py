"""Persistence: opening the database and the queries the routes need.

``sqlite:///path`` is the default; ``postgresql://`` URLs are rewritten to
SQLAlchemy's psycopg (v3) driver so admins can paste the URL they already use.
Every query takes a Session so a request handler, the forwarder thread and the
admin CLI each control their own transaction.
"""

from __future__ import annotations

import datetime as dt
import time
import typing as t

from sqlalchemy import bindparam, create_engine, delete, event, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from service import schema

PENDING = "waiting-for-ep"
TERMINAL = ("success", "failed")


def engine_url(url: str) -> str:
    """Route ``postgres(ql)://`` to psycopg v3; leave every other URL alone."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def open_database(url: str) -> sessionmaker[Session]:
    """Create the tables if needed and return a session factory."""
    url = engine_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    schema.Base.metadata.create_all(engine)
    for table in schema.Base.metadata.sorted_tables:  # indexes added since a table was made
        for index in table.indexes:
            index.create(engine, checkfirst=True)
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(dbapi_connection: t.Any, _record: t.Any) -> None:
    """WAL lets the forwarder write while request handlers read."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def dispose(factory: sessionmaker[Session]) -> None:
    engine: Engine = factory.kw["bind"]
    engine.dispose()


def identity_by_username(s: Session, username: str) -> schema.Identity | None:
    return s.scalar(select(schema.Identity).where(schema.Identity.username == username))


def identity_set(s: Session, client: schema.ApiClient) -> list[schema.Identity]:
    """The client's identities, its own first, in the order they were linked."""
    ids = [client.identity_id, *client.linked_ids]
    found = {i.id: i for i in s.scalars(select(schema.Identity).where(schema.Identity.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


def all_endpoints(s: Session) -> list[schema.Endpoint]:
    return list(s.scalars(select(schema.Endpoint).order_by(schema.Endpoint.registered)))


def tasks_of_group(s: Session, task_group_id: str) -> list[schema.Task]:
    query = select(schema.Task).where(schema.Task.task_group_id == task_group_id)
    return list(s.scalars(query.order_by(schema.Task.created_t)))


def owned_tasks(s: Session, owner_id: str, task_ids: list[str]) -> list[schema.Task]:
    query = select(schema.Task).where(
        schema.Task.id.in_(task_ids), schema.Task.owner_id == owner_id
    )
    return list(s.scalars(query))


def pending_tasks_of_user_endpoint(s: Session, user_endpoint_id: str) -> list[schema.Task]:
    query = select(schema.Task).where(
        schema.Task.user_endpoint_id == user_endpoint_id, schema.Task.status == PENDING
    )
    return list(s.scalars(query))


def pending_tasks_of_endpoint(s: Session, endpoint_id: str) -> list[schema.Task]:
    query = select(schema.Task).where(
        schema.Task.endpoint_id == endpoint_id, schema.Task.status == PENDING
    )
    return list(s.scalars(query))


def user_endpoints_with_pending_tasks(s: Session, endpoint_id: str) -> list[schema.UserEndpoint]:
    pending = select(schema.Task.user_endpoint_id).where(
        schema.Task.endpoint_id == endpoint_id, schema.Task.status == PENDING
    )
    query = select(schema.UserEndpoint).where(schema.UserEndpoint.id.in_(pending))
    return list(s.scalars(query))


def finish_task(
    s: Session,
    task_id: str,
    *,
    status: str,
    result: str | None = None,
    exception: str | None = None,
    details: dict | None = None,
) -> bool:
    """Record a task's outcome once; False if the task is unknown or already done.

    The UPDATE does not touch Task objects already loaded in the session: with
    hundreds loaded (a batch of results), matching each UPDATE against all of
    them in Python would cost more than the database round trip.
    """
    done = s.execute(
        update(schema.Task)
        .where(schema.Task.id == task_id, schema.Task.status.not_in(TERMINAL))
        .values(
            status=status,
            result=result,
            exception=exception,
            details=details,
            completion_t=time.time(),
        )
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1


def finish_tasks(s: Session, outcomes: dict[str, dict]) -> bool:
    """:func:`finish_task` for many tasks in one executemany; True if every one was
    still unfinished and is now recorded.

    Each row keeps :func:`finish_task`'s guard (not already finished). A total
    below the number of tasks means another transaction finished one first; the
    caller must then roll back and take the tasks one at a time. Drivers that
    cannot count rows across an executemany get that slower path every time.
    """
    if not outcomes:
        return True
    if not s.get_bind().dialect.supports_sane_multi_rowcount:
        return False
    table = schema.Task.__table__
    statement = (
        table.update()
        .where(table.c.id == bindparam("task_id"), *(table.c.status != t for t in TERMINAL))
        .values(
            status=bindparam("new_status"),
            result=bindparam("new_result"),
            exception=bindparam("new_exception"),
            details=bindparam("new_details", type_=table.c.details.type),
            completion_t=time.time(),
        )
    )
    rows = [
        {
            "task_id": task_id,
            "new_status": o["status"],
            "new_result": o["result"],
            "new_exception": o["exception"],
            "new_details": o["details"],
        }
        for task_id, o in outcomes.items()
    ]
    return s.connection().execute(statement, rows).rowcount == len(rows)


def purge_expired_tokens(s: Session, now: float) -> None:
    s.execute(schema.AccessToken.__table__.delete().where(schema.AccessToken.expires_at < now))


DETAIL_LIMIT = 1000


def count_dropped(s: Session, kind: str, reason: str, detail: str, now: float) -> None:
    """One more refused message of ``kind`` for ``reason``; the latest detail is kept."""
    row = s.get(schema.DroppedMessage, (kind, reason))
    if row is None:
        row = schema.DroppedMessage(kind=kind, reason=reason, count=0)
        s.add(row)
    row.count = (row.count or 0) + 1
    row.last_at = now
    row.last_detail = detail.replace("\x00", "\\x00")[:DETAIL_LIMIT]


def dropped_counts(s: Session) -> list[schema.DroppedMessage]:
    query = select(schema.DroppedMessage).order_by(
        schema.DroppedMessage.kind, schema.DroppedMessage.reason
    )
    return list(s.scalars(query))


def journal_tasks(s: Session, tasks: list[dict], outbox: list[dict]) -> None:
    """Insert a submission's tasks and their outbox rows as two bulk statements.

    Column dicts, not ORM objects: the unit of work spent more time tracking a
    submit's 256 objects than the database spent storing them, and nothing reads
    these rows back in the submitting transaction.
    """
    if tasks:
        s.execute(insert(schema.Task), tasks)
        s.execute(insert(schema.OutboxTask), outbox)


def sent(s: Session, task_ids: list[str]) -> None:
    """The broker confirmed these tasks' messages (or they failed): out of the outbox."""
    for start in range(0, len(task_ids), 500):
        chunk = task_ids[start : start + 500]
        s.execute(delete(schema.OutboxTask).where(schema.OutboxTask.task_id.in_(chunk)))


def unsent(s: Session, older_than: float) -> list[schema.OutboxTask]:
    query = select(schema.OutboxTask).where(schema.OutboxTask.created_t < older_than)
    return list(s.scalars(query.order_by(schema.OutboxTask.created_t)))


def stuck_tasks(s: Session, created_before: float) -> list[tuple[schema.Task, schema.UserEndpoint]]:
    """Pending tasks older than ``created_before`` whose user endpoint never spoke since."""
    query = (
        select(schema.Task, schema.UserEndpoint)
        .join(schema.UserEndpoint, schema.UserEndpoint.id == schema.Task.user_endpoint_id)
        .where(schema.Task.status == PENDING, schema.Task.created_t < created_before)
        .where(
            schema.UserEndpoint.last_heartbeat.is_(None)
            | (schema.UserEndpoint.last_heartbeat < schema.Task.created_t)
        )
    )
    return [(task, uep) for task, uep in s.execute(query)]


def release_expired_actions(s: Session, now: dt.datetime) -> int:
    """Forget finished actions past their ``release_after``; how many went."""
    done = s.execute(delete(schema.Action).where(schema.Action.release_at < now))
    return done.rowcount
