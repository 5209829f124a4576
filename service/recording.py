"""What a result or heartbeat from the broker does to the database, decided per message.

Nothing is believed because of what a body says. The routing key names the
sender (``<id>.results`` / ``<id>.heartbeats``), which the broker's topic
permissions guarantee: an account may publish only with its own id. So:

- a result counts only if it comes from the user endpoint its task was sent to;
- a heartbeat counts for the endpoint that sent it, or for a user endpoint of
  the manager that sent it (a manager reports a user endpoint that could not
  start);
- a ``user_id`` property, where present (RabbitMQ has validated it), must be
  the sender's own account.

Anything else raises :class:`Refused`. A result is forwarded to the SDK when
this message recorded it, and again when the broker redelivers the message
that recorded it (the first forward may have been lost with a connection): at
least once, a duplicate only after a crash between the forward and the ack.

An error report fails the user endpoint's waiting tasks and asks for its task
queue to be purged, so a later start of that endpoint does not run tasks their
submitters were told had failed; tasks submitted before the purge are failed
too (their messages may have gone with it), later ones wait for the endpoint.

Text and JSON are made storable first: PostgreSQL refuses NUL characters in
text and NaN in JSON, and one such message must not stall everyone's results.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import typing as t
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import broker_accounts, schema, store
from service.routing import Topology, error_result
from wire import messages
from wire.errors import WireError

log = logging.getLogger(__name__)
UNSTORABLE = (
    "the compute service could not store this task's result ({}); the task ran, but its"
    " outcome is lost: submit it again, and tell the service administrator"
)


@dataclasses.dataclass(frozen=True)
class Forward:
    """A message to put on an SDK result queue."""

    queue: str
    body: bytes
    high_assurance: bool = False


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One message as the broker delivered it: who it vouches sent it, and the body."""

    routing_key: str
    user_id: str | None
    body: bytes
    redelivered: bool = False


@dataclasses.dataclass
class Recorded:
    """What to do after the transaction commits: forward results, purge a task queue."""

    forwards: list[Forward] = dataclasses.field(default_factory=list)
    purge: Purge | None = None


@dataclasses.dataclass(frozen=True)
class Purge:
    """Empty a failed user endpoint's task queue, then fail what was submitted before."""

    user_endpoint_id: str
    queue: str
    text: str
    before: float


class Refused(Exception):
    """A message the forwarder will not act on; ``reason`` is the counter's name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def sender_id(routing_key: str, kind: str) -> str:
    """The id in ``<id>.<kind>``, a canonical UUID, or :class:`Refused`."""
    party, _, suffix = routing_key.rpartition(".")
    try:
        if suffix == kind and str(uuid.UUID(party)) == party:
            return party
    except ValueError:
        pass
    raise Refused("routing_key", f"routing key {routing_key!r} does not name a sender")


def _check_user_id(topo: Topology, delivery: Delivery, kind: str, party: str) -> None:
    expected = broker_accounts.username(topo, kind, party)
    if delivery.user_id is not None and delivery.user_id != expected:
        raise Refused(
            "user_id",
            f"user_id {delivery.user_id!r} is not the sender's account {expected!r}",
        )


def _read(raw: bytes, kind: type, queue: str) -> t.Any:
    try:
        return messages.unpack_as(raw, kind)
    except WireError as e:
        raise Refused("malformed", f"unreadable message on the {queue} queue: {e}") from None


def _parsed(delivery: Delivery) -> t.Any:
    """The message's Result, or the refusal its body earns (raised later, in its turn)."""
    try:
        return _read(delivery.body, messages.Result, "results")
    except Refused as refusal:
        return refusal


class Lookup(t.Protocol):
    """Where :func:`_checked` and :func:`_forward` find a task and its endpoint."""

    def task(self, task_id: str) -> t.Any: ...

    def high_assurance(self, endpoint_id: str) -> bool: ...


@dataclasses.dataclass(frozen=True)
class _OneByOne:
    """The session's own lookups: one query per message, for a message alone."""

    s: Session

    def task(self, task_id: str) -> schema.Task | None:
        return self.s.get(schema.Task, task_id)

    def high_assurance(self, endpoint_id: str) -> bool:
        endpoint = self.s.get(schema.Endpoint, endpoint_id)
        return bool(endpoint and endpoint.high_assurance)


# What recording a result reads of its task; a batch loads only these.
TASK_COLUMNS = (
    schema.Task.id,
    schema.Task.user_endpoint_id,
    schema.Task.endpoint_id,
    schema.Task.owner_id,
    schema.Task.task_group_id,
    schema.Task.status,
    schema.Task.result,
    schema.Task.exception,
)


@dataclasses.dataclass(frozen=True)
class Preloaded:
    """A batch's tasks and endpoints, read in two queries as plain rows.

    Rows, not ORM objects: building and tracking an ORM object per result took
    the forwarder longer than the database took to find the rows. Nothing here
    is written back through the session (:func:`store.finish_tasks` updates by
    statement), so the rows hold the values as they were before the batch.
    """

    tasks: dict[str, t.Any]
    assured: frozenset[str]

    @classmethod
    def load(cls, s: Session, task_ids: list[str]) -> Preloaded:
        if not task_ids:
            return cls({}, frozenset())
        rows = s.execute(select(*TASK_COLUMNS).where(schema.Task.id.in_(task_ids)))
        tasks = {row.id: row for row in rows}
        endpoint_ids = {row.endpoint_id for row in tasks.values()}
        assured = s.scalars(
            select(schema.Endpoint.id).where(
                schema.Endpoint.id.in_(endpoint_ids), schema.Endpoint.high_assurance
            )
        )
        return cls(tasks, frozenset(assured))

    def task(self, task_id: str) -> t.Any:
        return self.tasks.get(task_id)

    def high_assurance(self, endpoint_id: str) -> bool:
        return endpoint_id in self.assured


def _checked(
    lookup: Lookup, topo: Topology, delivery: Delivery, parsed: t.Any = None
) -> tuple[t.Any, t.Any]:
    """The task a result is about and the result, if its sender is the task's endpoint.

    ``parsed`` is what :func:`_parsed` made of the body, when a batch read it
    already; the sender is checked first either way.
    """
    sender = sender_id(delivery.routing_key, "results")
    _check_user_id(topo, delivery, broker_accounts.USER_ENDPOINT, sender)
    result = _parsed(delivery) if parsed is None else parsed
    if isinstance(result, Refused):
        raise result
    task_id = str(result.task_id)
    task = lookup.task(task_id)
    if task is None:
        raise Refused("unknown_task", f"result for unknown task {task_id} from {sender}")
    if task.user_endpoint_id != sender:
        raise Refused(
            "not_the_tasks_endpoint",
            f"user endpoint {sender} sent a result for task {task_id},"
            f" which was sent to {task.user_endpoint_id}",
        )
    return task, result


def _outcome(result: t.Any) -> dict:
    """The columns a result sets on its task."""
    text, details = storable_text(result.data), storable_json(result.details)
    if result.is_error:
        return {"status": "failed", "result": None, "exception": text, "details": details}
    return {"status": "success", "result": text, "exception": None, "details": details}


def _forward(
    lookup: Lookup, topo: Topology, task: t.Any, delivery: Delivery, done: bool, text: str
) -> Recorded:
    """Forward a result this message recorded, or one redelivered after it recorded it."""
    if not done and not (delivery.redelivered and text in (task.result, task.exception)):
        log.info("result for task %s was already recorded; not forwarding it again", task.id)
        return Recorded()
    queue = topo.sdk_queue(task.owner_id, task.task_group_id)
    return Recorded([Forward(queue, delivery.body, lookup.high_assurance(task.endpoint_id))])


def record_result(s: Session, topo: Topology, delivery: Delivery) -> Recorded:
    """Store a result from the user endpoint that ran it; what to forward to its submitter."""
    lookup = _OneByOne(s)
    task, result = _checked(lookup, topo, delivery)
    outcome = _outcome(result)
    done = store.finish_task(s, task.id, **outcome)
    return _forward(lookup, topo, task, delivery, done, outcome["result"] or outcome["exception"])


class Raced(Exception):
    """A task of the batch was finished by someone else while the batch was recorded."""


def record_results(s: Session, topo: Topology, deliveries: list[Delivery]) -> list[Recorded]:
    """:func:`record_result` for a batch: two queries to load, one executemany to store.

    Raises :class:`Refused` if any message would be refused, and :class:`Raced`
    if a task changed under the batch; the caller then records the messages one
    by one, each with its own verdict.
    """
    parsed = [_parsed(d) for d in deliveries]
    ids = [str(r.task_id) for r in parsed if not isinstance(r, Refused)]
    lookup = Preloaded.load(s, ids)
    checked = [(d, *_checked(lookup, topo, d, r)) for d, r in zip(deliveries, parsed, strict=True)]
    outcomes, fresh = [], {}
    for _, task, result in checked:
        outcome = _outcome(result)
        outcomes.append(outcome)
        if task.status not in store.TERMINAL and task.id not in fresh:
            fresh[task.id] = outcome
    if not store.finish_tasks(s, fresh):
        raise Raced(f"{len(fresh)} tasks")
    recorded = []
    for (delivery, task, _), outcome in zip(checked, outcomes, strict=True):
        done = fresh.pop(task.id, None) is outcome
        text = outcome["result"] or outcome["exception"]
        recorded.append(_forward(lookup, topo, task, delivery, done, text))
    return recorded


def fail_unstorable(s: Session, topo: Topology, delivery: Delivery, problem: str) -> Recorded:
    """A result that cannot be stored: its task fails with an explicit error, to its submitter."""
    try:
        task_id = str(messages.unpack_as(delivery.body, messages.Result).task_id)
    except WireError:
        return Recorded()
    task = s.get(schema.Task, task_id)
    if task is None or task.user_endpoint_id != sender_id(delivery.routing_key, "results"):
        return Recorded()
    text = UNSTORABLE.format(problem)
    if not store.finish_task(s, task_id, status="failed", exception=text):
        return Recorded()
    queue = topo.sdk_queue(task.owner_id, task.task_group_id)
    return Recorded([Forward(queue, error_result(task_id, text, "UNKNOWN_TASK_FAILURE"))])


def _heartbeat_subject(
    s: Session, topo: Topology, delivery: Delivery, report: t.Any
) -> schema.Endpoint | schema.UserEndpoint:
    """The endpoint a report is about, if its sender may speak for it."""
    sender = sender_id(delivery.routing_key, "heartbeats")
    subject = str(report.endpoint_id)
    manager = s.get(schema.Endpoint, sender)
    if manager is not None:
        _check_user_id(topo, delivery, broker_accounts.MANAGER, sender)
        if subject == sender:
            return manager
        uep = s.get(schema.UserEndpoint, subject)
        if uep is not None and uep.endpoint_id == sender:
            return uep
        raise Refused(
            "not_the_senders_endpoint",
            f"manager {sender} reported on {subject}, which is not one of its user endpoints",
        )
    uep = s.get(schema.UserEndpoint, sender)
    if uep is None:
        raise Refused("unknown_endpoint", f"heartbeat from unknown endpoint {sender}")
    _check_user_id(topo, delivery, broker_accounts.USER_ENDPOINT, sender)
    if subject != sender:
        raise Refused(
            "not_the_senders_endpoint",
            f"user endpoint {sender} sent a report about {subject}",
        )
    return uep


def record_heartbeat(s: Session, topo: Topology, delivery: Delivery, now: float) -> Recorded:
    """Update endpoint status; an error report fails the user endpoint's pending tasks."""
    report = _read(delivery.body, messages.EPStatusReport, "heartbeats")
    row = _heartbeat_subject(s, topo, delivery, report)
    state = storable_json(bounded(report.global_state))
    row.last_heartbeat = now
    period = state.get("heartbeat_period")
    row.heartbeat_period = float(period) if isinstance(period, int | float) else None
    row.last_state = state
    error = state.get("error")
    if not isinstance(row, schema.UserEndpoint) or not error:
        return Recorded()
    text = str(error)
    row.last_error = text
    log.warning("user endpoint %s (%s) reported an error: %s", row.id, row.name, text)
    return Recorded(
        fail_pending(s, topo, row.id, text, created_before=now),
        Purge(row.id, topo.task_queue(row.id), text, now),
    )


def fail_pending(
    s: Session,
    topo: Topology,
    user_endpoint_id: str,
    text: str,
    created_before: float | None = None,
) -> list[Forward]:
    """Fail a user endpoint's waiting tasks (those made before ``created_before``, if given)."""
    forwards = []
    for task in store.pending_tasks_of_user_endpoint(s, user_endpoint_id):
        if created_before is not None and task.created_t > created_before:
            continue
        if store.finish_task(s, task.id, status="failed", exception=text):
            queue = topo.sdk_queue(task.owner_id, task.task_group_id)
            forwards.append(Forward(queue, error_result(task.id, text)))
    return forwards


def storable_text(text: str) -> str:
    """Text PostgreSQL accepts: NUL characters are shown as ``\\x00``."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


STATE_TEXT_LIMIT = 16_384
STATE_ITEMS_LIMIT = 256


def bounded(value: t.Any, depth: int = 0) -> t.Any:
    """A reported state cut to a size worth storing and showing: every text at most
    16 KiB, every list and mapping at most 256 items, nothing nested deeper than 8.

    The state is whatever the sender says; it is kept with the endpoint and read
    by every web app page about it, so one hostile report must not weigh megabytes.
    """
    if isinstance(value, str) and len(value) > STATE_TEXT_LIMIT:
        return value[:STATE_TEXT_LIMIT] + " [cut by the service]"
    if depth >= 8 and isinstance(value, dict | list):
        return "[nested too deep; cut by the service]"
    if isinstance(value, dict):
        items = list(value.items())[:STATE_ITEMS_LIMIT]
        return {str(k)[:STATE_TEXT_LIMIT]: bounded(v, depth + 1) for k, v in items}
    if isinstance(value, list):
        return [bounded(v, depth + 1) for v in value[:STATE_ITEMS_LIMIT]]
    return value


def storable_json(value: t.Any) -> t.Any:
    """JSON PostgreSQL accepts: no NaN or infinities (null instead), no NUL in text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    return value
