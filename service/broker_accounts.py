"""Who may do what on the broker: one RabbitMQ account per party, least privilege.

Decided here, in pure code; :mod:`service.broker_admin` makes it so through
RabbitMQ's management API. Every party but the service gets an account whose
permissions name its own resources and nothing else:

======================  ===========================  ===============================
account                 may read (consume)           may write (publish)
======================  ===========================  ===============================
manager ``ep.<id>``     its command queue            ``heartbeats``, key ``<id>.heartbeats``
user endpoint           its task queue               ``results``/``heartbeats``, keys
``uep.<id>``                                         ``<id>.results``/``<id>.heartbeats``
SDK client              its identity's task-group    nothing
``sdk.<client id>``     queues ``tg.<identity>.*``
======================  ===========================  ===============================

Nobody but the service may configure (declare, bind, delete) anything. Routing
keys on the topic exchanges are checked by RabbitMQ's topic permissions, so the
routing key of a message the forwarder reads names its sender; the service
adds each account's name as the ``user_id`` property of what it asks a party
to publish, which RabbitMQ validates against the account that published.

Secrets are derived, not stored: HMAC-SHA256 under the service's own random
key, of the account name and its generation. Concurrent provisioning of the
same account therefore agrees on the secret without a lock, and bumping the
generation (at every manager registration) rotates it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import uuid

from service.routing import Topology

NOTHING = "^$"
MANAGER, USER_ENDPOINT, SDK = "ep", "uep", "sdk"


@dataclasses.dataclass(frozen=True)
class TopicGrant:
    """Routing keys an account may publish with (and bind with) on one topic exchange."""

    exchange: str
    write: str
    read: str = NOTHING


@dataclasses.dataclass(frozen=True)
class Grant:
    """Everything one broker account may do in the service's vhost."""

    username: str
    configure: str
    write: str
    read: str
    topics: tuple[TopicGrant, ...]


def _exact(*names: str) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def username(topo: Topology, kind: str, party_id: str) -> str:
    """The broker account name of a party: ``<prefix><kind>.<id>``."""
    return f"{topo.prefix}{kind}.{party_id}"


def party_of(topo: Topology, name: str) -> tuple[str, str] | None:
    """(kind, id) of an account this service manages, or None for any other name."""
    if not name.startswith(topo.prefix):
        return None
    kind, sep, party_id = name[len(topo.prefix) :].partition(".")
    if not sep or kind not in (MANAGER, USER_ENDPOINT, SDK) or not _is_uuid(party_id):
        return None
    return kind, party_id


def manager_grant(topo: Topology, endpoint_id: str) -> Grant:
    """A manager consumes its commands and publishes its own heartbeats."""
    return Grant(
        username=username(topo, MANAGER, endpoint_id),
        configure=NOTHING,
        write=_exact(topo.heartbeats_exchange),
        read=_exact(topo.command_queue(endpoint_id)),
        topics=(
            TopicGrant(topo.heartbeats_exchange, _exact(f"{endpoint_id}.heartbeats")),
            TopicGrant(topo.results_exchange, NOTHING),
        ),
    )


def user_endpoint_grant(topo: Topology, uep_id: str) -> Grant:
    """A user endpoint consumes its tasks and publishes its own results and heartbeats."""
    return Grant(
        username=username(topo, USER_ENDPOINT, uep_id),
        configure=NOTHING,
        write=_exact(topo.results_exchange, topo.heartbeats_exchange),
        read=_exact(topo.task_queue(uep_id)),
        topics=(
            TopicGrant(topo.results_exchange, _exact(f"{uep_id}.results")),
            TopicGrant(topo.heartbeats_exchange, _exact(f"{uep_id}.heartbeats")),
        ),
    )


def sdk_grant(topo: Topology, client_id: str, identity_id: str) -> Grant:
    """An SDK client consumes the result queues of its identity's task groups, nothing else."""
    prefix = re.escape(topo.sdk_queue_prefix(identity_id))
    return Grant(
        username=username(topo, SDK, client_id),
        configure=NOTHING,
        write=NOTHING,
        read=f"^{prefix}[0-9a-f-]{{36}}$",
        topics=(
            TopicGrant(topo.results_exchange, NOTHING),
            TopicGrant(topo.heartbeats_exchange, NOTHING),
        ),
    )


def derive_secret(key: bytes, name: str, generation: int) -> str:
    """The password of account ``name`` in ``generation`` (URL-safe, 43 characters)."""
    digest = hmac.new(key, f"{name}\0{generation}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
