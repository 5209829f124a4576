"""The user-endpoint config: the YAML a template renders into, as typed data.

This is the contract between the manager (which renders and checks it before
starting anything) and the user endpoint (which builds its engine from it). It
reads the official keys (UEP.md §2) so existing rendered configs load
unchanged, resolves ``type:`` names only through :mod:`templates.allow_list`,
and names the key path of every problem (``engine.provider.walltime``).

Loading a ThreadPoolEngine or ProcessPoolEngine config never imports Parsl: a
user endpoint must start in well under a second.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t

from templates import allow_list
from templates import fields as f
from templates.components import ComponentSpec, read_component
from templates.located_yaml import load_located, plain

log = logging.getLogger(__name__)

MINIMUM_HEARTBEAT_S = 5.0


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """The ``engine:`` block. ``options`` are the engine's own keys, nulls dropped."""

    type: str
    options: dict
    provider: ComponentSpec | None = None
    address: str | ComponentSpec | None = None


@dataclasses.dataclass(frozen=True)
class UserEndpointPaths:
    """Where the user endpoint keeps its state and log (4.19 ``paths:``); None = default."""

    endpoint_dir: str | None = None
    endpoint_log: str | None = None


@dataclasses.dataclass(frozen=True)
class UserEndpointConfig:
    engine: EngineSpec
    display_name: str | None = None
    heartbeat_period: float = 30.0
    heartbeat_threshold: int = 120
    idle_heartbeats_soft: int = 0
    idle_heartbeats_hard: int = 5760
    allowed_functions: tuple[str, ...] | None = None
    endpoint_setup: str | None = None
    endpoint_teardown: str | None = None
    amqp_port: int | None = None
    high_assurance: bool = False
    debug: bool = False
    paths: UserEndpointPaths = UserEndpointPaths()
    admins: tuple[str, ...] = ()
    authentication_policy: str | None = None
    subscription_id: str | None = None


def _one_of(*choices: str) -> f.Reader:
    def read(value: t.Any, where: f.Where) -> str:
        if value not in choices:
            where.fail(f"expected one of {', '.join(choices)}, got {f.shown(value)}")
        return value

    return read


def _either(*readers: f.Reader) -> f.Reader:
    def read(value: t.Any, where: f.Where) -> t.Any:
        problems = []
        for reader in readers:
            try:
                return reader(value, where)
            except ValueError as exc:
                problems.append(getattr(exc, "problem", str(exc)))
        where.fail(" or ".join(problems))

    return read


def _job_status_kwargs(value: t.Any, where: f.Where) -> dict:
    readers = {
        "strategy": _one_of("simple", "htex_auto_scale", "none"),
        "max_idletime": f.number(minimum=0.0),
        "strategy_period": f.number(minimum=0.0),
    }
    data = f.mapping(value, where)
    f.read_section(data, readers, where, null_is_default=True)
    return {k: v for k, v in plain(data).items() if v is not None}


# Types of the engine options people set most; the rest are checked by the engine.
_ENGINE_OPTION_READERS: dict[str, f.Reader] = {
    "label": f.string,
    "allowed_serializers": f.list_of(f.string),
    "max_workers": f.integer(minimum=1),
    "thread_name_prefix": f.string,
    "max_tasks_per_child": f.integer(minimum=1),
    "mp_context": _one_of("fork", "spawn", "forkserver"),
    "max_retries_on_system_failure": f.integer(minimum=0),
    "working_dir": f.string,
    "run_in_sandbox": f.boolean,
    "encrypted": f.boolean,
    "strategy": _one_of("simple", "htex_auto_scale", "none"),
    "job_status_kwargs": _job_status_kwargs,
    "container_type": _one_of(
        "docker", "podman", "podman-hpc", "apptainer", "singularity", "custom"
    ),
    "container_uri": f.string,
    "container_cmd_options": f.string,
    "worker_debug": f.boolean,
    "cores_per_worker": f.number(minimum=0.0),
    "mem_per_worker": f.number(minimum=0.0),
    "max_workers_per_node": f.number(minimum=0.0),
    "max_workers_per_block": f.integer(minimum=1),
    "mpi_launcher": _one_of("srun", "aprun", "mpiexec"),
    "cpu_affinity": f.string,
    "available_accelerators": _either(f.integer(minimum=0), f.list_of(f.string)),
    "prefetch_capacity": f.integer(minimum=0),
    "heartbeat_period": f.number(minimum=0.0),
    "heartbeat_threshold": f.number(minimum=0.0),
    "drain_period": f.number(minimum=0.0),
    "poll_period": f.number(minimum=0.0),
    "address_probe_timeout": f.number(minimum=0.0),
    "worker_logdir_root": f.string,
    "loopback_address": f.string,
    "block_error_handler": f.boolean,
}


def _engine(value: t.Any, where: f.Where) -> EngineSpec:
    data = f.mapping(value, where)
    engines = allow_list.ENGINE_OPTIONS
    if "type" not in data:
        where.fail(f"the engine needs a `type:`; one of {', '.join(sorted(engines))}")
    type_at = where.child("type", data)
    name = f.string(data["type"], type_at)
    if name not in engines:
        type_at.fail(
            f"'{name}' is not an engine type{f.unknown_hint(name, engines)}; "
            f"allowed: {', '.join(sorted(engines))}"
        )
    takes_parsl = name in allow_list.PARSL_ENGINES
    options: dict[str, t.Any] = {}
    provider = address = None
    for key, item in data.items():
        at = where.child(key, data)
        if key == "type" or item is None:
            continue
        if key in ("provider", "address") and not takes_parsl:
            at.fail(f"{name} runs tasks in this process's pool and takes no {key}")
        if key == "provider":
            provider = read_component("provider", item, at)
        elif key == "address":
            address = item if isinstance(item, str) else read_component("address", item, at)
        elif key not in engines[name]:
            advice = allow_list.ENGINE_KEY_HINTS.get(key)
            hint = f"; {advice}" if advice else f.unknown_hint(key, engines[name])
            at.fail(f"{name} has no option '{key}'{hint}")
        else:
            reader = _ENGINE_OPTION_READERS.get(key)
            if reader:
                reader(item, at)
            options[key] = plain(item)
    if name == "GlobusMPIEngine" and provider is not None:
        launcher = provider.launcher
        if launcher is None or launcher.type != "SimpleLauncher":
            where.child("provider", data).fail(
                "GlobusMPIEngine needs the provider's launcher to be `type: SimpleLauncher`"
            )
    return EngineSpec(name, plain(options), provider, address)


def _heartbeat(value: t.Any, where: f.Where) -> float:
    period = f.number(minimum=0.0)(value, where)
    if period < MINIMUM_HEARTBEAT_S:
        log.warning(
            "heartbeat_period %s raised to the minimum of %s s", period, MINIMUM_HEARTBEAT_S
        )
    return max(period, MINIMUM_HEARTBEAT_S)


def _paths(value: t.Any, where: f.Where) -> UserEndpointPaths:
    readers = {"endpoint_dir": f.optional(f.string), "endpoint_log": f.optional(f.string)}
    return UserEndpointPaths(**f.read_section(f.mapping(value, where), readers, where))


_TOP_READERS: dict[str, f.Reader] = {
    "engine": _engine,
    "display_name": lambda v, w: None if f.string(v, w) == "None" else v,
    "heartbeat_period": _heartbeat,
    "heartbeat_threshold": f.integer(minimum=1),
    "idle_heartbeats_soft": f.integer(minimum=0),
    "idle_heartbeats_hard": f.integer(minimum=0),
    "allowed_functions": f.list_of(f.uuid_text),
    "endpoint_setup": f.string,
    "endpoint_teardown": f.string,
    "amqp_port": f.port,
    "high_assurance": f.boolean,
    "debug": f.boolean,
    "paths": _paths,
    "admins": f.list_of(f.uuid_text),
    "authentication_policy": f.uuid_text,
    "subscription_id": f.uuid_text,
}


def user_endpoint_config_from_data(data: t.Any) -> UserEndpointConfig:
    """Check parsed YAML (from :func:`parse_user_endpoint_yaml`) and build the model."""
    root = f.Where()
    if not isinstance(data, dict):
        root.fail(f"a user endpoint config is a mapping of keys, got {f.shown(data)}")
    if data.get("engine") is None:
        root.child("engine", data).fail(
            "missing; a user endpoint config needs an `engine:` block with a `type:`"
        )
    return UserEndpointConfig(**f.read_section(data, _TOP_READERS, root, null_is_default=True))


def parse_user_endpoint_yaml(text: str) -> t.Any:
    """Parse rendered YAML safely, keeping line numbers; YAML errors name the line."""
    return load_located(text)


def load_user_endpoint_config(text: str) -> UserEndpointConfig:
    """Parse and check a rendered user-endpoint config; errors are :class:`ConfigError`."""
    return user_endpoint_config_from_data(parse_user_endpoint_yaml(text))
