"""Registering the manager with the compute service (the official /v3/endpoints contract).

The body and the checks on the answer are pure; :func:`send_registration` and
:func:`owner_identities` are the edges that talk HTTP through globus-sdk with
client credentials, run by the manager in a short-lived child
(:mod:`wire.forked_call`). Each failure maps to a sysexits code and a message
that tells the admin what to do.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import platform
import socket
import typing as t
import uuid
from collections.abc import Mapping
from pathlib import Path

if t.TYPE_CHECKING:
    import globus_sdk

from templates.manager_config import ManagerConfig
from wire.errors import QueueInfoError
from wire.queue_info import BrokerAddress, ReadQueueInfo, WriteQueueInfo, rewrite_port

EX_DATAERR, EX_UNAVAILABLE, EX_SOFTWARE, EX_TEMPFAIL, EX_NOPERM, EX_CONFIG = 65, 69, 70, 75, 77, 78
PRODUCTION_COMPUTE = "https://compute.api.globus.org"
PRODUCTION_AUTH = "https://auth.globus.org"
LOCAL_COMPUTE = "http://localhost:5000"
COMPUTE_SCOPE = "https://auth.globus.org/scopes/facd7ccc-c5f4-42aa-916b-a0e270e2c2a9/all"
ENDPOINT_FILE = "endpoint.json"


class RegistrationError(Exception):
    """Registration failed; ``exit_code`` is the sysexits code the CLI exits with."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass(frozen=True)
class Registration:
    """What the service answered: our id and the queues we consume and publish to.

    ``command_sender`` is the service's broker account, when the service names
    it (ours does): only commands whose validated ``user_id`` is that account
    are read. Where to connect, for us and for the user endpoints we start,
    comes from here and never from a command.
    """

    endpoint_id: uuid.UUID
    command_queue: ReadQueueInfo
    heartbeat_queue: WriteQueueInfo
    command_sender: str | None = None

    def broker(self, amqp_port: int | None) -> BrokerAddress:
        return BrokerAddress.of(rewrite_port(self.command_queue.connection_url, amqp_port))


def resolve_urls(service_url: str, auth_url: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """The compute and auth base URLs: config first, then the globus-sdk environment.

    A config that keeps the production defaults follows ``GLOBUS_SDK_ENVIRONMENT``
    (``local`` means our service on localhost:5000, as the official SDK has it)
    and ``GLOBUS_SDK_SERVICE_URL_COMPUTE`` / ``_AUTH``.
    """
    local = environ.get("GLOBUS_SDK_ENVIRONMENT") == "local"
    if service_url.rstrip("/") == PRODUCTION_COMPUTE:
        service_url = environ.get("GLOBUS_SDK_SERVICE_URL_COMPUTE") or (
            LOCAL_COMPUTE if local else PRODUCTION_COMPUTE
        )
    if auth_url.rstrip("/") == PRODUCTION_AUTH:
        auth_url = environ.get("GLOBUS_SDK_SERVICE_URL_AUTH") or PRODUCTION_AUTH
    return service_url.rstrip("/"), auth_url.rstrip("/") + "/"


def client_credentials(environ: Mapping[str, str]) -> tuple[str, str]:
    client_id = environ.get("GLOBUS_COMPUTE_CLIENT_ID", "").strip()
    secret = environ.get("GLOBUS_COMPUTE_CLIENT_SECRET", "").strip()
    if not client_id or not secret:
        raise RegistrationError(
            EX_CONFIG,
            "GLOBUS_COMPUTE_CLIENT_ID and GLOBUS_COMPUTE_CLIENT_SECRET must be set (for the"
            " systemd unit: in /etc/compute-agent/<name>.env)",
        )
    return client_id, secret


def registration_body(
    name: str,
    config: ManagerConfig,
    *,
    multi_user: bool,
    config_text: str,
    template_text: str | None,
    schema: dict | None,
) -> dict:
    """The registration document, fields present only when set (as the official CLI)."""
    from importlib.metadata import version  # only in the registering child (wire.forked_call)

    body: dict[str, t.Any] = {
        "endpoint_name": name,
        "public": bool(config.public),
        "high_assurance": bool(config.high_assurance),
        "metadata": {
            "endpoint_version": version("compute-agent"),
            "python_version": platform.python_version(),
            "hostname": socket.getfqdn(),
            "local_user": getpass.getuser(),
            "endpoint_config": config_text,
            "user_config_template": template_text or "",
            "user_config_schema": schema or {},
        },
    }
    if multi_user:
        body["multi_user"] = True
    optional = {
        "display_name": config.display_name,
        "allowed_functions": list(config.allowed_functions) if config.allowed_functions else None,
        "authentication_policy": config.authentication_policy,
        "subscription_uuid": config.subscription_id,
        "admins": list(config.admins) if config.admins else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def parse_registration(answer: Mapping, requested: uuid.UUID | None) -> Registration:
    """Check the service's answer; a wrong id or missing queue is a service defect."""
    try:
        endpoint_id = uuid.UUID(str(answer["endpoint_id"]))
        command = ReadQueueInfo.from_dict(answer["command_queue_info"], "command_queue_info")
        heartbeat = WriteQueueInfo.from_dict(answer["heartbeat_queue_info"], "heartbeat_queue_info")
    except (KeyError, TypeError, ValueError, QueueInfoError) as e:
        raise RegistrationError(
            EX_SOFTWARE, f"invalid or unexpected registration data: {e}"
        ) from None
    if requested is not None and endpoint_id != requested:
        raise RegistrationError(
            EX_SOFTWARE,
            f"mismatched endpoint id from the service; expected {requested}, received {endpoint_id}",
        )
    if not heartbeat.exchange:
        raise RegistrationError(
            EX_SOFTWARE, "registration data lacks heartbeat_queue_info.exchange"
        )
    if BrokerAddress.of(heartbeat.connection_url) != BrokerAddress.of(command.connection_url):
        raise RegistrationError(
            EX_SOFTWARE, "registration data names two brokers for commands and heartbeats"
        )
    sender = answer.get("command_sender")
    if sender is not None and (not isinstance(sender, str) or not sender):
        raise RegistrationError(EX_SOFTWARE, "registration data: command_sender is not a name")
    return Registration(endpoint_id, command, heartbeat, sender)


def read_endpoint_id(endpoint_dir: Path) -> uuid.UUID | None:
    """The id ``endpoint.json`` keeps (the monitor writes it at every registration)."""
    try:
        text = (endpoint_dir / ENDPOINT_FILE).read_text()
    except FileNotFoundError:
        return None
    return parse_endpoint_file(text, str(endpoint_dir / ENDPOINT_FILE))


def parse_endpoint_file(text: str, source: str) -> uuid.UUID:
    try:
        return uuid.UUID(json.loads(text)["endpoint_id"])
    except (ValueError, KeyError, TypeError) as e:
        raise RegistrationError(EX_DATAERR, f"{source} is damaged: {e}") from None


def _http_failure(e: Exception) -> RegistrationError:
    status = getattr(e, "http_status", None)
    detail = getattr(e, "message", None) or str(e)
    if status in (401, 403):
        return RegistrationError(
            EX_NOPERM,
            f"the service refused our credentials ({status}): {detail}; check"
            " GLOBUS_COMPUTE_CLIENT_ID/SECRET",
        )
    if status in (404, 409, 423):
        return RegistrationError(
            EX_UNAVAILABLE, f"the service cannot register this endpoint ({status}): {detail}"
        )
    if status in (400, 422):
        return RegistrationError(
            EX_DATAERR, f"the service rejected the registration ({status}): {detail}"
        )
    return RegistrationError(EX_TEMPFAIL, f"cannot reach the compute service: {detail}")


def compute_client(
    service_url: str, auth_url: str, client_id: str, secret: str
) -> globus_sdk.ComputeClientV3:
    """A globus-sdk compute client authorized with client credentials."""
    import globus_sdk

    auth = globus_sdk.ConfidentialAppAuthClient(client_id, secret, base_url=auth_url)
    try:
        authorizer = globus_sdk.ClientCredentialsAuthorizer(auth, COMPUTE_SCOPE)
    except Exception as e:
        raise _http_failure(e) from None
    return globus_sdk.ComputeClientV3(base_url=service_url, authorizer=authorizer)


def owner_identities(auth_url: str, client_id: str, secret: str) -> frozenset[str]:
    """The Globus identities of the manager's owner (for a manager that maps nobody)."""
    import globus_sdk

    try:
        auth = globus_sdk.ConfidentialAppAuthClient(client_id, secret, base_url=auth_url)
        authorizer = globus_sdk.ClientCredentialsAuthorizer(auth, "openid")
        info = globus_sdk.AuthClient(base_url=auth_url, authorizer=authorizer).userinfo()
        subs = frozenset(str(i["sub"]) for i in info.get("identity_set") or [] if i.get("sub"))
    except Exception as e:
        raise _http_failure(e) from None
    if not subs:
        raise RegistrationError(EX_NOPERM, "failed to determine the owner's identity set")
    return subs


def send_registration(
    service_url: str,
    auth_url: str,
    client_id: str,
    secret: str,
    body: dict,
    endpoint_id: uuid.UUID | None,
) -> t.Any:
    """POST a new registration, or PUT to keep the id we already have; the answer's JSON.

    The answer is checked by :func:`parse_registration`, in the caller: this is
    the edge that runs in the short-lived registering child.
    """
    client = compute_client(service_url, auth_url, client_id, secret)
    try:
        if endpoint_id is None:
            answer = client.register_endpoint(body)
        else:
            answer = client.update_endpoint(endpoint_id, body)
    except Exception as e:
        raise _http_failure(e) from None
    return answer.data
