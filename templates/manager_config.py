"""The manager's ``config.yaml``: what the site admin sets once for the whole endpoint.

The official keys keep their names and meaning (MEP.md §1a) so existing files
load unchanged; ours add the service to talk to, the local-account policy, the
restart policy for failing user endpoints and per-user limits. Unknown keys and
wrong types are errors that name the key, the file and the line.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t
from pathlib import Path

from templates import fields as f
from templates.errors import ConfigError
from templates.located_yaml import load_located

log = logging.getLogger(__name__)

GLOBUS_COMPUTE_URL = "https://compute.api.globus.org"
GLOBUS_AUTH_URL = "https://auth.globus.org"
MINIMUM_HEARTBEAT_S = 5.0
TEMPLATE_NAME = "user_config_template.yaml.j2"
LEGACY_TEMPLATE_NAME = "user_config_template.yaml"
SCHEMA_NAME = "user_config_schema.json"
ENVIRONMENT_NAME = "user_environment.yaml"


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """How a failing user endpoint is restarted and when its circuit opens (the
    ``restart`` section; :mod:`mep.restart_policy` applies it)."""

    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    healthy_run_s: float = 60.0  # a run this long counts as healthy and resets the backoff
    max_failures: int = 5
    window_s: float = 600.0
    cooldown_s: float = 900.0

    def __post_init__(self) -> None:
        if self.max_failures < 1 or min(self.base_delay_s, self.window_s, self.cooldown_s) <= 0:
            raise ValueError(f"restart policy needs positive limits: {self}")


@dataclasses.dataclass(frozen=True)
class PamConfig:
    """PAM account and session checks per user endpoint; a ``pam:`` block turns them on."""

    enable: bool = False
    service_name: str = "globus-compute-endpoint"


@dataclasses.dataclass(frozen=True)
class Limits:
    """How many user endpoints may run at once, and what all of one local account's
    user endpoints together (and everything they start) may use; None means no limit."""

    max_user_endpoints_per_user: int | None = 10
    max_user_endpoints: int | None = None
    memory_per_user: int | None = None
    processes_per_user: int | None = None


@dataclasses.dataclass(frozen=True)
class ManagerConfig:
    """A loaded ``config.yaml``; relative paths are resolved against ``endpoint_dir``."""

    endpoint_dir: Path
    source: Path | None = None
    display_name: str | None = None
    email: str | None = None
    public: bool = False
    allowed_functions: tuple[str, ...] | None = None
    identity_mapping_config_path: Path | None = None
    user_config_template_path: Path | None = None
    user_config_schema_path: Path | None = None
    user_environment_path: Path | None = None
    audit_log_path: Path | None = None
    pam: PamConfig = PamConfig()
    mu_child_ep_grace_period_s: float = 30.0
    heartbeat_period: float = 30.0
    amqp_port: int | None = None
    debug: bool = False
    high_assurance: bool = False
    admins: tuple[str, ...] = ()
    authentication_policy: str | None = None
    subscription_id: str | None = None
    service_url: str = GLOBUS_COMPUTE_URL
    auth_url: str = GLOBUS_AUTH_URL
    min_uid: int = 1000
    allow_system_accounts: tuple[str, ...] = ()
    allowed_groups: tuple[str, ...] = ()
    denied_users: tuple[str, ...] = ()
    manager_user: str = "compute-agent"  # the manager's unprivileged account, under a root monitor
    restart: RestartPolicy = dataclasses.field(default_factory=RestartPolicy)
    limits: Limits = Limits()

    def template_view(self) -> dict[str, t.Any]:
        """Plain values for ``_GC.parent_config`` in a template (paths as strings)."""
        view = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            view[field.name] = value
        return view


def _display_name(value: t.Any, where: f.Where) -> str | None:
    text = f.optional(f.string)(value, where)
    return None if text == "None" else text


def _pam(value: t.Any, where: f.Where) -> PamConfig:
    data = f.mapping(value or {}, where)
    readers = {"enable": f.boolean, "service_name": f.string}
    return PamConfig(**{"enable": True, **f.read_section(data, readers, where)})


def _subsection(kind: type, readers: dict[str, f.Reader]) -> f.Reader:
    def read(value: t.Any, where: f.Where) -> t.Any:
        return kind(**f.read_section(f.mapping(value or {}, where), readers, where))

    return read


def _heartbeat(value: t.Any, where: f.Where) -> float:
    period = f.number(minimum=0.0)(value, where)
    if period < MINIMUM_HEARTBEAT_S:
        log.warning(
            "%s: heartbeat_period %s raised to %s s", where.source, period, MINIMUM_HEARTBEAT_S
        )
    return max(period, MINIMUM_HEARTBEAT_S)


def _name_list(value: t.Any, where: f.Where) -> tuple[str, ...]:
    return f.list_of(f.string)(value, where) if value is not None else ()


def _account_name(value: t.Any, where: f.Where) -> str:
    name = f.string(value, where)
    if not name or "/" in name or ":" in name or not name.isprintable() or name == "root":
        where.fail(f"expected the name of an unprivileged local account, got {name!r}")
    return name


def _account_names(value: t.Any, where: f.Where) -> tuple[str, ...]:
    """System accounts (below ``min_uid``) a mapping may still name: a list, never a switch."""
    if isinstance(value, bool):
        where.fail("list the system account names to allow (e.g. [svc-science]), not true/false")
    return _name_list(value, where)


def _readers(base: Path, exists: t.Callable[[Path], bool]) -> dict[str, f.Reader]:
    def path(must_exist: bool) -> f.Reader:
        def read(value: t.Any, where: f.Where) -> Path:
            resolved = base / Path(f.string(value, where)).expanduser()
            if must_exist and not exists(resolved):
                where.fail(f"file {resolved} does not exist")
            return resolved

        return f.optional(read)

    return {
        "display_name": _display_name,
        "email": f.optional(f.string),
        "public": f.boolean,
        "allowed_functions": f.optional(f.list_of(f.uuid_text)),
        "identity_mapping_config_path": path(must_exist=True),
        "user_config_template_path": path(must_exist=True),
        "user_config_schema_path": path(must_exist=True),
        "user_environment_path": path(must_exist=True),
        "audit_log_path": path(must_exist=False),
        "pam": _pam,
        "mu_child_ep_grace_period_s": f.number(minimum=0.0),
        "heartbeat_period": _heartbeat,
        "amqp_port": f.optional(f.port),
        "debug": f.boolean,
        "high_assurance": f.boolean,
        "admins": lambda v, w: f.list_of(f.uuid_text)(v, w) if v is not None else (),
        "authentication_policy": f.optional(f.uuid_text),
        "subscription_id": f.optional(f.uuid_text),
        "service_url": f.http_url,
        "auth_url": f.http_url,
        "min_uid": f.integer(minimum=0),
        "allow_system_accounts": _account_names,
        "allowed_groups": _name_list,
        "denied_users": _name_list,
        "manager_user": _account_name,
        "restart": _subsection(
            RestartPolicy,
            {
                "base_delay_s": f.number(minimum=0.001),
                "max_delay_s": f.number(minimum=0.001),
                "healthy_run_s": f.number(minimum=0.0),
                "max_failures": f.integer(minimum=1),
                "window_s": f.number(minimum=0.001),
                "cooldown_s": f.number(minimum=0.001),
            },
        ),
        "limits": _subsection(
            Limits,
            {
                "max_user_endpoints_per_user": f.optional(f.integer(minimum=1)),
                "max_user_endpoints": f.optional(f.integer(minimum=1)),
                "memory_per_user": f.optional(f.byte_size),
                "processes_per_user": f.optional(f.integer(minimum=8)),
            },
        ),
    }


def _default_paths(
    endpoint_dir: Path, given: dict[str, t.Any], exists: t.Callable[[Path], bool]
) -> dict[str, t.Any]:
    """The files an endpoint directory holds by convention, when the config names none."""

    def first_existing(*names: str) -> Path | None:
        return next((endpoint_dir / n for n in names if exists(endpoint_dir / n)), None)

    defaults = {
        "user_config_template_path": first_existing(TEMPLATE_NAME, LEGACY_TEMPLATE_NAME)
        or endpoint_dir / TEMPLATE_NAME,
        "user_config_schema_path": first_existing(SCHEMA_NAME),
        "user_environment_path": first_existing(ENVIRONMENT_NAME),
    }
    return {k: v for k, v in defaults.items() if given.get(k) is None}


def manager_config_from_text(
    text: str,
    endpoint_dir: Path,
    source: str | None = None,
    exists: t.Callable[[Path], bool] = Path.exists,
) -> ManagerConfig:
    """Parse ``config.yaml`` text; ``endpoint_dir`` anchors relative and default paths.

    ``exists`` tells which files are there: the unprivileged manager cannot look
    into the endpoint directory and asks the list ``start`` made (as root) with
    this same function, so both resolve every path alike.
    """
    data = load_located(text, source)
    if data is None:
        data = {}
    where = f.Where(source=source)
    if not isinstance(data, dict):
        where.fail(f"expected a mapping of config keys at the top level, got {f.shown(data)}")
    if "engine" in data:
        f.Where("engine", source, data.line_of("engine")).fail(
            f"an engine block belongs in {TEMPLATE_NAME}, not in the manager config; move it there"
        )
    values = f.read_section(data, _readers(endpoint_dir, exists), where)
    values.update(_default_paths(endpoint_dir, values, exists))
    if values.get("high_assurance") and values.get("audit_log_path") is None:
        log.info("%s: high_assurance is set without audit_log_path; no audit log", source)
    restart = values.get("restart", RestartPolicy())
    if restart.max_delay_s < restart.base_delay_s:
        f.Where("restart.max_delay_s", source, data.line_of("restart")).fail(
            "must be at least restart.base_delay_s"
        )
    return ManagerConfig(endpoint_dir=endpoint_dir, **values)


def load_manager_config(path: str | Path) -> ManagerConfig:
    """Read and check ``config.yaml``; a missing or empty file means all defaults."""
    path = Path(path).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the manager config: {exc}", source=str(path)) from None
    config = manager_config_from_text(text, path.parent, str(path))
    return dataclasses.replace(config, source=path)
