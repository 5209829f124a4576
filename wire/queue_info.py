"""Queue descriptions the service hands to managers and user endpoints.

A *read* queue info says where to consume; a *write* queue info adds the exact
keyword arguments for ``basic_publish``. ``amqp_creds`` bundles the three a user
endpoint needs. Everything is validated on the way in, with errors that name the
offending path (``amqp_creds.result_queue_info.queue_publish_kwargs.foo``).
"""

from __future__ import annotations

import copy
import dataclasses
import typing as t
import urllib.parse
import uuid

from wire.errors import QueueInfoError

PUBLISH_KEYS = frozenset({"exchange", "routing_key", "mandatory", "properties"})
PROPERTY_KEYS = frozenset(
    {
        "content_type",
        "content_encoding",
        "headers",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
        "cluster_id",
    }
)


def _require_dict(value: t.Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise QueueInfoError(f"{path}: expected an object, got {type(value).__name__}")
    return value


def _require_str(data: dict, key: str, path: str, *, default: str | None = None) -> str:
    if key not in data or data[key] is None:
        if default is not None:
            return default
        raise QueueInfoError(f"{path}: missing required field '{key}'")
    value = data[key]
    if not isinstance(value, str):
        raise QueueInfoError(f"{path}.{key}: expected a string, got {type(value).__name__}")
    return value


# Query parameters a broker URL may carry, with the largest value each may take.
# pika reads many more (ssl_options with certificate and key files, socket and
# blocked-connection timeouts, retry counts); a URL that arrives in a message
# must not be able to change where TLS material comes from or how long a
# connection may hang, so everything else is refused.
ALLOWED_QUERY = {"heartbeat": 3600, "channel_max": 65535, "frame_max": 1048576}
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


def _check_query(query: str, path: str) -> None:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise QueueInfoError(f"{path}: the URL's query string is malformed") from None
    for key, value in pairs:
        if key not in ALLOWED_QUERY:
            raise QueueInfoError(
                f"{path}: URL parameter {key!r} is not allowed"
                f" (allowed: {', '.join(sorted(ALLOWED_QUERY))})"
            )
        if not value.isdigit() or int(value) > ALLOWED_QUERY[key]:
            raise QueueInfoError(
                f"{path}: URL parameter {key!r} must be a whole number up to {ALLOWED_QUERY[key]}"
            )


def check_connection_url(url: str, path: str) -> str:
    """An ``amqp://`` or ``amqps://`` URL with a host and only harmless query parameters.

    The message never shows the password.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise QueueInfoError(f"{path}: expected an amqp:// or amqps:// URL with a host name")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise QueueInfoError(f"{path}: the URL's port is not a number in 0-65535") from None
    _check_query(parts.query, path)
    return url


@dataclasses.dataclass(frozen=True)
class BrokerAddress:
    """Where a broker URL leads: everything but the credentials."""

    scheme: str
    host: str
    port: int
    vhost: str

    @classmethod
    def of(cls, url: str) -> BrokerAddress:
        parts = urllib.parse.urlsplit(url)
        vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
        return cls(parts.scheme, (parts.hostname or "").lower(), port, vhost)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{urllib.parse.quote(self.vhost, safe='')}"


def rewrite_port(url: str, port: int | None) -> str:
    """Replace the port of ``url`` (the ``amqp_port`` config key); None keeps it."""
    if port is None:
        return url
    parts = urllib.parse.urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _check_publish_kwargs(value: t.Any, path: str) -> dict:
    kwargs = _require_dict(value, path)
    unknown = sorted(set(kwargs) - PUBLISH_KEYS)
    if unknown:
        raise QueueInfoError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(PUBLISH_KEYS)}")
    for key in ("exchange", "routing_key"):
        if key in kwargs and not isinstance(kwargs[key], str):
            raise QueueInfoError(f"{path}.{key}: expected a string")
    if "mandatory" in kwargs and not isinstance(kwargs["mandatory"], bool):
        raise QueueInfoError(f"{path}.mandatory: expected true or false")
    properties = _require_dict(kwargs.get("properties", {}), f"{path}.properties")
    unknown = sorted(set(properties) - PROPERTY_KEYS)
    if unknown:
        raise QueueInfoError(f"{path}.properties: unknown AMQP propert(ies) {unknown}")
    return copy.deepcopy(kwargs)


@dataclasses.dataclass(frozen=True)
class ReadQueueInfo:
    """Where to consume: broker URL, exchange and queue."""

    connection_url: str
    queue: str
    exchange: str = ""

    @classmethod
    def from_dict(cls, data: t.Any, path: str = "queue_info") -> ReadQueueInfo:
        data = _require_dict(data, path)
        url = check_connection_url(
            _require_str(data, "connection_url", path), f"{path}.connection_url"
        )
        return cls(
            connection_url=url,
            queue=_require_str(data, "queue", path),
            exchange=_require_str(data, "exchange", path, default=""),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_port(self, port: int | None) -> t.Self:
        return dataclasses.replace(self, connection_url=rewrite_port(self.connection_url, port))


@dataclasses.dataclass(frozen=True)
class WriteQueueInfo(ReadQueueInfo):
    """Where to publish: a read queue info plus the exact ``basic_publish`` kwargs."""

    queue_publish_kwargs: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: t.Any, path: str = "queue_info") -> WriteQueueInfo:
        base = ReadQueueInfo.from_dict(data, path)
        kwargs = _check_publish_kwargs(
            data.get("queue_publish_kwargs", {}), f"{path}.queue_publish_kwargs"
        )
        return cls(**dataclasses.asdict(base), queue_publish_kwargs=kwargs)


@dataclasses.dataclass(frozen=True)
class AmqpCreds:
    """The queues of one user endpoint, as sent in ``cmd_start_endpoint``."""

    endpoint_id: uuid.UUID
    task_queue_info: ReadQueueInfo
    result_queue_info: WriteQueueInfo
    heartbeat_queue_info: WriteQueueInfo

    @classmethod
    def from_dict(cls, data: t.Any, path: str = "amqp_creds") -> AmqpCreds:
        data = _require_dict(data, path)
        raw_id = _require_str(data, "endpoint_id", path)
        try:
            endpoint_id = uuid.UUID(raw_id)
        except ValueError:
            raise QueueInfoError(f"{path}.endpoint_id: {raw_id!r} is not a UUID") from None
        parts = {}
        for key, kind in (
            ("task_queue_info", ReadQueueInfo),
            ("result_queue_info", WriteQueueInfo),
            ("heartbeat_queue_info", WriteQueueInfo),
        ):
            if key not in data:
                raise QueueInfoError(f"{path}: missing required field '{key}'")
            parts[key] = kind.from_dict(data[key], f"{path}.{key}")
        return cls(endpoint_id=endpoint_id, **parts)

    def to_dict(self) -> dict:
        return {
            "endpoint_id": str(self.endpoint_id),
            "task_queue_info": self.task_queue_info.to_dict(),
            "result_queue_info": self.result_queue_info.to_dict(),
            "heartbeat_queue_info": self.heartbeat_queue_info.to_dict(),
        }

    def with_port(self, port: int | None) -> AmqpCreds:
        return dataclasses.replace(
            self,
            task_queue_info=self.task_queue_info.with_port(port),
            result_queue_info=self.result_queue_info.with_port(port),
            heartbeat_queue_info=self.heartbeat_queue_info.with_port(port),
        )
