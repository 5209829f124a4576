"""Broker accounts over their life: made on first use, rotated, retired.

- A manager's account is rotated at every registration (the endpoint's
  ``broker_generation`` goes up), and any connection still open on the old
  secret is closed: a stale second manager loses its command queue.
- A user endpoint's account is made at the first submit of a generation and
  retired with that generation (the manager that ran it re-registered) or with
  its endpoint.
- An SDK client's account is made the first time it asks for its result
  connection and removed with the client.

Secrets are derived (:func:`service.broker_accounts.derive_secret`), so two
requests provisioning the same account at once agree on it. Every method runs
inside the caller's database transaction; a failing management API call raises
:class:`service.broker_admin.BrokerAdminError` and the transaction rolls back.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service import broker_accounts as accounts
from service import schema
from service.broker_admin import BrokerAdmin
from service.routing import Topology
from wire.queue_info import AmqpCreds

log = logging.getLogger(__name__)
KEY_NAME = "broker-secrets"


def load_key(sessions: sessionmaker[Session]) -> bytes:
    """The service's secret-derivation key, created (once, race-free) on first start."""
    with sessions.begin() as s:
        row = s.get(schema.ServiceKey, KEY_NAME)
        if row is not None:
            return bytes.fromhex(row.value)
    try:
        with sessions.begin() as s:
            s.add(schema.ServiceKey(name=KEY_NAME, value=secrets.token_hex(32)))
    except IntegrityError:
        pass  # another instance created it first; use theirs
    with sessions.begin() as s:
        return bytes.fromhex(s.get(schema.ServiceKey, KEY_NAME).value)


class Provisioner:
    """Keeps the broker's accounts in step with the database."""

    def __init__(self, topo: Topology, admin: BrokerAdmin, key: bytes) -> None:
        self.topo = topo
        self.admin = admin
        self._key = key

    def _secret(self, grant: accounts.Grant, generation: int) -> str:
        return accounts.derive_secret(self._key, grant.username, generation)

    # ---- managers ------------------------------------------------------
    def register_manager(self, s: Session, ep: schema.Endpoint) -> dict:
        """Rotate the manager's account; the registration answer carries the new secret."""
        ep.broker_generation = (ep.broker_generation or 0) + 1
        grant = accounts.manager_grant(self.topo, ep.id)
        secret = self._secret(grant, ep.broker_generation)
        self.admin.apply(grant, secret)
        self.admin.disconnect(grant.username)
        self._retire_user_endpoints(s, ep, keep_generation=None)
        url = self.topo.party_url(grant.username, secret)
        return self.topo.registration(ep.id, url, grant.username)

    def retire_endpoint(self, s: Session, ep: schema.Endpoint) -> None:
        """The endpoint is deleted: its manager's and user endpoints' accounts go too."""
        self._retire_user_endpoints(s, ep, keep_generation=None)
        self.admin.remove(accounts.username(self.topo, accounts.MANAGER, ep.id))

    def _retire_user_endpoints(
        self, s: Session, ep: schema.Endpoint, keep_generation: int | None
    ) -> None:
        query = select(schema.UserEndpoint).where(
            schema.UserEndpoint.endpoint_id == ep.id,
            schema.UserEndpoint.broker_generation.is_not(None),
        )
        for uep in s.scalars(query):
            if uep.broker_generation == keep_generation:
                continue
            self.admin.remove(accounts.username(self.topo, accounts.USER_ENDPOINT, uep.id))
            uep.broker_generation = None

    # ---- user endpoints ------------------------------------------------
    def user_endpoint_creds(self, ep: schema.Endpoint, uep: schema.UserEndpoint) -> AmqpCreds:
        """The user endpoint's queues and its own account, made if this generation lacks it."""
        grant = accounts.user_endpoint_grant(self.topo, uep.id)
        secret = self._secret(grant, ep.broker_generation)
        if uep.broker_generation != ep.broker_generation:
            self.admin.apply(grant, secret)
            uep.broker_generation = ep.broker_generation
        url = self.topo.party_url(grant.username, secret)
        return self.topo.amqp_creds(uep.id, url, grant.username)

    # ---- SDK clients ---------------------------------------------------
    def sdk_connection_url(self, s: Session, client_id: str, identity_id: str) -> str:
        """The client's result connection, on an account that reads only its identity's queues."""
        grant = accounts.sdk_grant(self.topo, client_id, identity_id)
        secret = self._secret(grant, 0)
        client = s.get(schema.ApiClient, client_id)
        if client is not None and not client.broker_provisioned:
            self.admin.apply(grant, secret)
            client.broker_provisioned = True
        return self.topo.party_url(grant.username, secret)

    # ---- drift ---------------------------------------------------------
    def stale_accounts(self, s: Session, present: list[str]) -> list[str]:
        """Accounts on the broker that the database no longer wants (removed clients, ...)."""
        stale = []
        for name in present:
            party = accounts.party_of(self.topo, name)
            if party is not None and not self._wanted(s, *party):
                stale.append(name)
        return stale

    def _wanted(self, s: Session, kind: str, party_id: str) -> bool:
        if kind == accounts.MANAGER:
            return s.get(schema.Endpoint, party_id) is not None
        if kind == accounts.SDK:
            client = s.get(schema.ApiClient, party_id)
            return client is not None and client.broker_provisioned
        uep = s.get(schema.UserEndpoint, party_id)
        return uep is not None and uep.broker_generation is not None
