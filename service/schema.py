"""The service's tables: everything that must survive a restart.

Identities and API clients (with hashed secrets) stand in for Globus Auth;
endpoints, user endpoints, functions, task groups and tasks are what the SDK
and the endpoints registered or submitted. Ids are UUID strings so the same
schema works on SQLite and PostgreSQL without dialect types.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

UUID_LEN = 36


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Root of the declarative models."""


class Identity(Base):
    """A Globus-Auth-shaped identity (``id`` is also its ``sub``)."""

    __tablename__ = "identities"
    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    username: Mapped[str] = mapped_column(String(256), unique=True)
    email: Mapped[str | None] = mapped_column(String(256))
    name: Mapped[str | None] = mapped_column(String(256))
    identity_provider: Mapped[str] = mapped_column(String(UUID_LEN))
    organization: Mapped[str | None] = mapped_column(String(256))


class ApiClient(Base):
    """Client credentials bound to an identity set (primary identity first)."""

    __tablename__ = "clients"
    client_id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(256))
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id"))
    linked_ids: Mapped[list] = mapped_column(JSON, default=list)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Its broker account (result queues of its identity) exists.
    broker_provisioned: Mapped[bool] = mapped_column(Boolean, default=False)


class AccessToken(Base):
    """An issued bearer token, stored as a SHA-256 digest only."""

    __tablename__ = "tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    resource_server: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[float] = mapped_column(Float, default=0.0)
    expires_at: Mapped[float] = mapped_column(Float)


class Endpoint(Base):
    """A registered (core / multi-user) endpoint and its latest heartbeat."""

    __tablename__ = "endpoints"
    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(UUID_LEN), index=True)
    name: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str | None] = mapped_column(String(256))
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    multi_user: Mapped[bool] = mapped_column(Boolean, default=False)
    high_assurance: Mapped[bool] = mapped_column(Boolean, default=False)
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    allowed_functions: Mapped[list] = mapped_column(JSON, default=list)
    admins: Mapped[list] = mapped_column(JSON, default=list)
    authentication_policy: Mapped[str | None] = mapped_column(String(UUID_LEN))
    registered: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_heartbeat: Mapped[float | None] = mapped_column(Float)
    heartbeat_period: Mapped[float | None] = mapped_column(Float)
    last_state: Mapped[dict] = mapped_column(JSON, default=dict)
    # Bumped at every registration: it rotates the broker secrets of the
    # manager and of every user endpoint it runs.
    broker_generation: Mapped[int] = mapped_column(Integer, default=0)


class UserEndpoint(Base):
    """One user endpoint: (endpoint, identity, user_endpoint_config) -> id and name.

    The identity set and user runtime of the latest submit are kept so the
    start command can be sent again when the endpoint comes back.
    """

    __tablename__ = "user_endpoints"
    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    identity_id: Mapped[str] = mapped_column(String(UUID_LEN))
    name: Mapped[str] = mapped_column(String(128))
    user_opts: Mapped[dict] = mapped_column(JSON, default=dict)
    identity_set: Mapped[list] = mapped_column(JSON, default=list)
    user_runtime: Mapped[dict] = mapped_column(JSON, default=dict)
    last_heartbeat: Mapped[float | None] = mapped_column(Float)
    heartbeat_period: Mapped[float | None] = mapped_column(Float)
    last_state: Mapped[dict] = mapped_column(JSON, default=dict)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The endpoint generation its broker account was made for; None: no account.
    broker_generation: Mapped[int | None] = mapped_column(Integer)


class Function(Base):
    """A registered function in its executable (serialized) form."""

    __tablename__ = "functions"
    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(UUID_LEN), index=True)
    name: Mapped[str] = mapped_column(String(256))
    code: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TaskGroup(Base):
    """A task group; its SDK result queue is ``queue_prefix + id``."""

    __tablename__ = "task_groups"
    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(UUID_LEN), index=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Task(Base):
    """A submitted task and, once known, its result or exception."""

    __tablename__ = "tasks"
    # The web app's reads: a person's newest tasks, an endpoint's recent results.
    __table_args__ = (
        Index("ix_tasks_owner_created", "owner_id", "created_t"),
        Index("ix_tasks_endpoint_completion", "endpoint_id", "completion_t"),
    )

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    task_group_id: Mapped[str] = mapped_column(ForeignKey("task_groups.id"), index=True)
    owner_id: Mapped[str] = mapped_column(String(UUID_LEN), index=True)
    function_id: Mapped[str] = mapped_column(String(UUID_LEN))
    endpoint_id: Mapped[str] = mapped_column(String(UUID_LEN))
    user_endpoint_id: Mapped[str] = mapped_column(String(UUID_LEN), index=True)
    status: Mapped[str] = mapped_column(String(32), default="waiting-for-ep")
    result: Mapped[str | None] = mapped_column(Text)
    exception: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict | None] = mapped_column(JSON)
    created_t: Mapped[float] = mapped_column(Float)
    completion_t: Mapped[float | None] = mapped_column(Float)


class AuthPolicy(Base):
    """An authentication policy endpoints can name (Globus Auth's policy fields we honour)."""

    __tablename__ = "auth_policies"
    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    domain_constraints_include: Mapped[list] = mapped_column(JSON, default=list)
    domain_constraints_exclude: Mapped[list] = mapped_column(JSON, default=list)
    high_assurance: Mapped[bool] = mapped_column(Boolean, default=False)
    authentication_assurance_timeout: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ServiceKey(Base):
    """The service's own random keys (the one broker secrets are derived from)."""

    __tablename__ = "service_keys"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DroppedMessage(Base):
    """Messages the forwarder refused, counted per kind and reason, for the admin."""

    __tablename__ = "dropped_messages"
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[float] = mapped_column(Float, default=0.0)
    last_detail: Mapped[str] = mapped_column(Text, default="")


class OutboxTask(Base):
    """A task message journaled with its task and deleted once the broker confirmed it.

    Rows still here after a while belong to a submit the service did not finish
    (it was killed between its commit and its publish): they are published again.
    """

    __tablename__ = "outbox"
    task_id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    user_endpoint_id: Mapped[str] = mapped_column(String(UUID_LEN), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict] = mapped_column(JSON)
    created_t: Mapped[float] = mapped_column(Float, index=True)


class Action(Base):
    """A Globus Flows action: one run of the action provider and the tasks it submitted.

    ``(creator_id, request_id)`` is unique so a retried run finds the action it
    started; ``request_digest`` tells a retry from a different request reusing
    the id. Its status is read from its tasks; only when it was first seen
    complete is kept, so the completion time does not move.
    """

    __tablename__ = "actions"
    __table_args__ = (UniqueConstraint("creator_id", "request_id"),)
    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    creator_id: Mapped[str] = mapped_column(String(UUID_LEN), index=True)
    request_id: Mapped[str] = mapped_column(String(256))
    request_digest: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(64))
    monitor_by: Mapped[list] = mapped_column(JSON, default=list)
    manage_by: Mapped[list] = mapped_column(JSON, default=list)
    task_group_id: Mapped[str] = mapped_column(String(UUID_LEN))
    task_ids: Mapped[list] = mapped_column(JSON, default=list)  # in the order of the input
    release_after_s: Mapped[int] = mapped_column(Integer)
    start_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completion_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # completion_time + release_after: the housekeeper forgets the action then.
    release_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
