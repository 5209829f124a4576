"""RabbitMQ's management HTTP API: the edge that creates, rotates and removes accounts.

The service is the only holder of an administrative broker credential; with it
it writes the grants :mod:`service.broker_accounts` decides. Why the management
API and not ``rabbitmq_auth_backend_http``: the broker keeps judging every
connection and publish with its own local checks (no HTTP round trip per
permission check, and nothing breaks while the service restarts), no broker
configuration or restart is needed, and several services can share one broker,
one vhost each.

The standard library's HTTP client is enough for a handful of idempotent PUTs
and DELETEs. Errors never show a password.
"""

from __future__ import annotations

import base64
import json
import logging
import typing as t
import urllib.error
import urllib.parse
import urllib.request

from service.broker_accounts import Grant
from wire.redaction import redact

log = logging.getLogger(__name__)
DEFAULT_API_PORT = 15672
TIMEOUT_S = 10.0


class BrokerAdminError(Exception):
    """The management API refused or could not be reached (message has no password)."""


class NotAdministrator(BrokerAdminError):
    """The service's broker account cannot manage accounts."""


def default_api_url(amqp_url: str) -> str:
    """The management API beside an AMQP URL: same host, port 15672 (https for amqps)."""
    parts = urllib.parse.urlsplit(amqp_url)
    scheme = "https" if parts.scheme == "amqps" else "http"
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{DEFAULT_API_PORT}/api"


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class BrokerAdmin:
    """Account management in one vhost, as the service's administrative user."""

    def __init__(self, api_url: str, username: str, password: str, vhost: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.vhost = vhost
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._auth = f"Basic {token}"

    @classmethod
    def for_url(cls, amqp_url: str, api_url: str | None = None) -> BrokerAdmin:
        """The management API of the broker ``amqp_url`` names, with the same account."""
        parts = urllib.parse.urlsplit(amqp_url)
        vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(
            api_url or default_api_url(amqp_url),
            urllib.parse.unquote(parts.username or ""),
            urllib.parse.unquote(parts.password or ""),
            vhost,
        )

    def _call(self, method: str, path: str, body: t.Any = None, ok_missing: bool = False) -> t.Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method)
        request.add_header("Authorization", self._auth)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            if e.code == 404 and ok_missing:
                return None
            detail = e.read(300).decode(errors="replace")
            raise BrokerAdminError(
                f"broker management API: {method} {path} answered {e.code}: {redact(detail)}"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise BrokerAdminError(
                f"broker management API at {self.api_url} unreachable: {redact(str(reason))}"
            ) from None
        return json.loads(raw) if raw else None

    def check(self) -> None:
        """Fail unless our account may manage users and permissions."""
        me = self._call("GET", "/whoami")
        tags = me.get("tags") or []
        tags = tags.split(",") if isinstance(tags, str) else tags
        if "administrator" not in tags:
            raise NotAdministrator(
                f"broker account {me.get('name')!r} lacks the 'administrator' tag the service"
                " needs to manage per-party accounts"
            )

    def apply(self, grant: Grant, secret: str) -> None:
        """Create or update an account with exactly ``grant`` (idempotent)."""
        user = _q(grant.username)
        self._call("PUT", f"/users/{user}", {"password": secret, "tags": ""})
        where = f"{_q(self.vhost)}/{user}"
        self._call(
            "PUT",
            f"/permissions/{where}",
            {"configure": grant.configure, "write": grant.write, "read": grant.read},
        )
        for topic in grant.topics:
            self._call(
                "PUT",
                f"/topic-permissions/{where}",
                {"exchange": topic.exchange, "write": topic.write, "read": topic.read},
            )

    def disconnect(self, username: str) -> None:
        """Close every open connection of an account (after its secret rotated)."""
        self._call("DELETE", f"/connections/username/{_q(username)}", ok_missing=True)

    def remove(self, username: str) -> None:
        """Delete an account; RabbitMQ closes its connections. Absent is fine."""
        self._call("DELETE", f"/users/{_q(username)}", ok_missing=True)

    def accounts(self) -> list[str]:
        """Every account holding permissions in our vhost."""
        rows = self._call("GET", f"/vhosts/{_q(self.vhost)}/permissions") or []
        return [row["user"] for row in rows if isinstance(row, dict) and "user" in row]
