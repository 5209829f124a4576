"""Globus-Auth-shaped credentials: clients, identities and bearer tokens.

An admin creates a *client* (``client_id`` + secret) bound to an identity set;
the SDK and endpoints trade it for short-lived bearer tokens with the
client-credentials grant, exactly as they would at auth.globus.org.

Secrets are stored as salted scrypt hashes and compared in constant time;
tokens are random and stored as SHA-256 digests (they are high-entropy, so a
fast hash is enough), each bound to one resource server and an expiry.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import secrets
import time
import uuid

from sqlalchemy.orm import Session

from service import schema, store

COMPUTE_SCOPE = "https://auth.globus.org/scopes/facd7ccc-c5f4-42aa-916b-a0e270e2c2a9/all"
COMPUTE_RESOURCE_SERVER = "funcx_service"
AUTH_RESOURCE_SERVER = "auth.globus.org"
# The identity provider every identity of this service claims to come from.
IDENTITY_PROVIDER = str(uuid.uuid5(uuid.NAMESPACE_URL, "compute-agent:service:idp"))
DEFAULT_TOKEN_TTL_S = 2 * 60 * 60

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AuthError(Exception):
    """Why a credential was refused; ``status`` is 401 or 403."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_secret(secret: str, stored: str) -> bool:
    try:
        kind, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), **_SCRYPT)
    except ValueError:
        return False
    return kind == "scrypt" and hmac.compare_digest(actual, expected)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def identity_doc(identity: schema.Identity) -> dict:
    """An identity as Globus Auth shows it (``id`` and ``sub`` are the same)."""
    return {
        "id": identity.id,
        "sub": identity.id,
        "username": identity.username,
        "email": identity.email,
        "name": identity.name,
        "identity_provider": identity.identity_provider,
        "organization": identity.organization,
        "status": "used",
    }


def ensure_identity(s: Session, username: str, email: str | None = None) -> schema.Identity:
    """The identity named ``username``, created on first mention."""
    found = store.identity_by_username(s, username)
    if found is not None:
        if email and not found.email:
            found.email = email
        return found
    local, _, domain = username.partition("@")
    identity = schema.Identity(
        id=str(uuid.uuid4()),
        username=username,
        email=email or (username if domain else None),
        name=local,
        identity_provider=IDENTITY_PROVIDER,
        organization=domain or None,
    )
    s.add(identity)
    s.flush()
    return identity


def add_client(
    s: Session, username: str, linked: list[str], email: str | None
) -> tuple[schema.ApiClient, str]:
    """Create a client for ``username`` (+ linked identities); returns it and its secret."""
    primary = ensure_identity(s, username, email)
    others = [ensure_identity(s, u).id for u in linked if u != username]
    secret = secrets.token_urlsafe(32)
    client = schema.ApiClient(
        client_id=str(uuid.uuid4()),
        secret_hash=hash_secret(secret),
        identity_id=primary.id,
        linked_ids=list(dict.fromkeys(others)),
    )
    s.add(client)
    s.flush()
    return client, secret


@functools.cache
def _decoy_hash() -> str:
    """What an unknown client id's secret is checked against: the same scrypt work."""
    return hash_secret(secrets.token_hex(16))


def authenticate_client(s: Session, client_id: str, secret: str) -> schema.ApiClient:
    """The client, if the secret is its own; an unknown id costs the same hashing as a known
    one, so timing does not tell which ids exist."""
    client = s.get(schema.ApiClient, client_id) if _is_uuid(client_id) else None
    matches = check_secret(secret, client.secret_hash if client else _decoy_hash())
    if client is None or not matches:
        raise AuthError(401, "invalid client credentials")
    return client


def resource_servers_for(scope: str) -> dict[str, list[str]]:
    """Group the requested scopes by the resource server that would issue them."""
    grouped: dict[str, list[str]] = {}
    for item in scope.split():
        server = COMPUTE_RESOURCE_SERVER if item == COMPUTE_SCOPE else AUTH_RESOURCE_SERVER
        if item != COMPUTE_SCOPE and not _is_auth_scope(item):
            raise AuthError(403, f"unknown scope {item!r}")
        grouped.setdefault(server, []).append(item)
    if not grouped:
        raise AuthError(403, "no scope requested")
    return grouped


def _is_auth_scope(item: str) -> bool:
    return item in ("openid", "email", "profile") or item.startswith(
        ("urn:globus:auth:scope:auth.globus.org:", "https://auth.globus.org/scopes/auth.globus.org")
    )


@dataclasses.dataclass(frozen=True)
class Issued:
    """One issued token as the token response lists it."""

    access_token: str
    resource_server: str
    scope: str
    expires_in: int

    def as_response(self) -> dict:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "resource_server": self.resource_server,
            "scope": self.scope,
        }


def issue_tokens(s: Session, client: schema.ApiClient, scope: str, ttl_s: int) -> list[Issued]:
    """One token per resource server the requested scopes belong to."""
    now = time.time()
    store.purge_expired_tokens(s, now)
    issued = []
    for server, scopes in resource_servers_for(scope).items():
        token = secrets.token_urlsafe(32)
        joined = " ".join(scopes)
        s.add(
            schema.AccessToken(
                token_hash=token_digest(token),
                client_id=client.client_id,
                resource_server=server,
                scope=joined,
                issued_at=now,
                expires_at=now + ttl_s,
            )
        )
        issued.append(Issued(token, server, joined, ttl_s))
    return issued


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is calling: the client and its identities (primary first)."""

    client_id: str
    identities: tuple[dict, ...]
    resource_server: str
    issued_at: float = 0.0

    @property
    def identity_id(self) -> str:
        return self.identities[0]["id"]

    @property
    def username(self) -> str:
        return self.identities[0]["username"]


def caller_for_token(s: Session, token: str, now: float | None = None) -> Caller:
    row = s.get(schema.AccessToken, token_digest(token))
    if row is None:
        raise AuthError(401, "the access token is not valid")
    if row.expires_at <= (now or time.time()):
        raise AuthError(401, "the access token has expired")
    client = s.get(schema.ApiClient, row.client_id)
    if client is None:
        raise AuthError(401, "the access token's client was removed")
    identities = tuple(identity_doc(i) for i in store.identity_set(s, client))
    return Caller(client.client_id, identities, row.resource_server, row.issued_at or 0.0)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
