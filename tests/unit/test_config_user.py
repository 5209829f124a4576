"""The user-endpoint config model: engines, allow-listed Parsl components, key paths."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from templates import allow_list
from templates.components import ComponentSpec
from templates.errors import ConfigError
from templates.user_config import (
    EngineSpec,
    UserEndpointConfig,
    UserEndpointPaths,
    load_user_endpoint_config,
)

REPO = Path(__file__).resolve().parents[2]


def load(text: str) -> UserEndpointConfig:
    return load_user_endpoint_config(textwrap.dedent(text))


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return caught.value


def test_thread_pool_defaults():
    config = load("engine:\n  type: ThreadPoolEngine\n")
    assert config == UserEndpointConfig(engine=EngineSpec("ThreadPoolEngine", {}))
    assert (config.heartbeat_period, config.idle_heartbeats_soft, config.idle_heartbeats_hard) == (
        30.0,
        0,
        5760,
    )
    assert config.paths == UserEndpointPaths()


def test_every_top_level_key():
    config = load(
        """
        engine: {type: ProcessPoolEngine, max_workers: 3, max_tasks_per_child: 10}
        display_name: mine
        heartbeat_period: 12.5
        heartbeat_threshold: 60
        idle_heartbeats_soft: 2
        idle_heartbeats_hard: 9
        allowed_functions: [11111111-2222-4333-8444-555555555555]
        endpoint_setup: echo setup
        endpoint_teardown: echo down
        amqp_port: 5671
        high_assurance: false
        debug: true
        paths: {endpoint_dir: /scratch/me/ep, endpoint_log: /scratch/me/ep.log}
        admins: []
        authentication_policy: null
        subscription_id: 11111111-2222-4333-8444-555555555555
        """
    )
    assert config.engine == EngineSpec(
        "ProcessPoolEngine", {"max_workers": 3, "max_tasks_per_child": 10}
    )
    assert config.allowed_functions == ("11111111-2222-4333-8444-555555555555",)
    assert config.paths == UserEndpointPaths("/scratch/me/ep", "/scratch/me/ep.log")
    assert (config.heartbeat_period, config.debug, config.amqp_port) == (12.5, True, 5671)


def test_null_means_default_everywhere():
    config = load(
        """
        engine:
          type: GlobusComputeEngine
          max_workers_per_node: null
          provider:
            type: SlurmProvider
            account: null
            walltime: "00:05:00"
            launcher: null
        idle_heartbeats_soft: null
        display_name: None
        """
    )
    assert config.engine.options == {}
    assert config.engine.provider == ComponentSpec(
        "SlurmProvider", {"walltime": "00:05:00"}, None, "engine.provider"
    )
    assert config.idle_heartbeats_soft == 0 and config.display_name is None
    assert config.engine.provider.build().account is None


def test_heartbeat_below_minimum_is_raised(caplog):
    with caplog.at_level(logging.WARNING):
        config = load("engine: {type: ThreadPoolEngine}\nheartbeat_period: 1\n")
    assert config.heartbeat_period == 5.0 and "raised" in caplog.text


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("display_name: x\n", "engine", "missing"),
        ("engine: {type: Nope}\n", "engine.type", "not an engine type"),
        ("engine: {max_workers: 2}\n", "engine", "needs a `type:`"),
        ("engine: {type: ThreadPoolEngine, bogus: 1}\n", "engine.bogus", "has no option 'bogus'"),
        (
            "engine: {type: ThreadPoolEngine, max_workers: two}\n",
            "engine.max_workers",
            "whole number",
        ),
        (
            "engine: {type: ThreadPoolEngine, provider: {type: LocalProvider}}\n",
            "engine.provider",
            "takes no provider",
        ),
        (
            "engine: {type: ProcessPoolEngine, address: 127.0.0.1}\n",
            "engine.address",
            "takes no address",
        ),
        (
            "engine: {type: GlobusComputeEngine, enable_mpi_mode: true}\n",
            "engine.enable_mpi_mode",
            "GlobusMPIEngine",
        ),
        (
            "engine: {type: GlobusComputeEngine, encrypted: 1}\n",
            "engine.encrypted",
            "true or false",
        ),
        (
            "engine: {type: GlobusComputeEngine, job_status_kwargs: {strategy: fast}}\n",
            "engine.job_status_kwargs.strategy",
            "one of",
        ),
        (
            "engine: {type: GlobusComputeEngine, available_accelerators: 1.5}\n",
            "engine.available_accelerators",
            "whole number",
        ),
        (
            "engine: {type: GlobusComputeEngine, provider: {walltime: x}}\n",
            "engine.provider",
            "needs a `type:`",
        ),
        (
            "engine: {type: GlobusComputeEngine, provider: {type: os.system}}\n",
            "engine.provider.type",
            "not an allowed provider",
        ),
        (
            "engine: {type: GlobusComputeEngine, provider: {type: SlurmProvider, walltme: x}}\n",
            "engine.provider.walltme",
            "did you mean 'walltime'",
        ),
        (
            "engine: {type: GlobusComputeEngine, provider: {type: SlurmProvider, walltime: 1:00:00}}\n",
            "engine.provider.walltime",
            "quote it in YAML",
        ),
        (
            "engine: {type: GlobusComputeEngine, provider: {type: SlurmProvider, exclusive: 'no'}}\n",
            "engine.provider.exclusive",
            "expects bool",
        ),
        (
            "engine: {type: GlobusComputeEngine, provider: {type: LocalProvider, launcher: {type: Popen}}}\n",
            "engine.provider.launcher.type",
            "not an allowed launcher",
        ),
        (
            "engine: {type: GlobusComputeEngine, provider: {type: LocalProvider, launcher: {type: SrunLauncher, overides: x}}}\n",
            "engine.provider.launcher.overides",
            "did you mean 'overrides'",
        ),
        (
            "engine: {type: GlobusComputeEngine, address: {type: gethostbyname}}\n",
            "engine.address.type",
            "not an allowed address",
        ),
        (
            "engine: {type: GlobusComputeEngine, address: {type: address_by_interface, iface: x}}\n",
            "engine.address.iface",
            "did you mean 'ifname'",
        ),
        (
            "engine: {type: GlobusComputeEngine, provider: {type: KubernetesProvider, image: x, container_uri: y}}\n",
            "engine.provider.container_uri",
            "does not take container_uri",
        ),
        (
            "engine: {type: GlobusMPIEngine, provider: {type: SlurmProvider}}\n",
            "engine.provider",
            "SimpleLauncher",
        ),
        (
            "engine: {type: GlobusMPIEngine, mpi_launcher: mpirun}\n",
            "engine.mpi_launcher",
            "one of",
        ),
        (
            "engine: {type: ThreadPoolEngine}\nidle_heartbeats_soft: -1\n",
            "idle_heartbeats_soft",
            "at least 0",
        ),
        (
            "engine: {type: ThreadPoolEngine}\nallowed_functions: [x]\n",
            "allowed_functions[0]",
            "UUID",
        ),
        (
            "engine: {type: ThreadPoolEngine}\npaths: {endpoint_dir: 3}\n",
            "paths.endpoint_dir",
            "expected a string",
        ),
        ("engine: {type: ThreadPoolEngine}\npaths: {logs: x}\n", "paths.logs", "unknown key"),
        ("engine: {type: ThreadPoolEngine}\nlog_dir: x\n", "log_dir", "unknown key"),
        (
            "engine: {type: ThreadPoolEngine}\nengine: {type: ThreadPoolEngine}\n",
            "engine",
            "written twice",
        ),
    ],
)
def test_errors_name_the_key_path(text, key, fragment):
    caught = error(text)
    assert caught.key == key, caught
    assert fragment in str(caught)
    assert str(caught).startswith(f"{key}: ")
    assert caught.line is not None


def test_not_a_mapping_and_bad_yaml():
    assert "mapping" in str(error("- engine\n"))
    assert error("engine: [\n").line == 2


def test_build_instantiates_allow_listed_parsl_classes():
    config = load(
        """
        engine:
          type: GlobusComputeEngine
          address: {type: address_by_hostname}
          provider:
            type: SlurmProvider
            partition: debug
            launcher: {type: SrunLauncher, overrides: -c 4}
        """
    )
    provider = config.engine.provider.build()
    assert type(provider).__module__.startswith("parsl.providers")
    assert provider.partition == "debug" and provider.launcher.overrides == "-c 4"
    assert isinstance(config.engine.address.build(), str)


def test_build_reports_refusals_with_the_key_path():
    for options in ({"nodes_per_block": "many"}, {"bogus": 1}):
        spec = ComponentSpec("SlurmProvider", options, None, "engine.provider")
        with pytest.raises(
            ConfigError, match=r"^engine.provider: SlurmProvider refused its options"
        ):
            spec.build()
    with pytest.raises(ConfigError, match="not an allowed type"):
        ComponentSpec("Popen", {}, None, "engine.provider").build()


def test_a_plain_string_address_is_kept():
    config = load("engine: {type: GlobusComputeEngine, address: 10.0.0.1}\n")
    assert config.engine.address == "10.0.0.1"


@pytest.mark.parametrize(
    "table", [allow_list.PROVIDERS, allow_list.LAUNCHERS, allow_list.ADDRESSES]
)
def test_every_allow_listed_name_exists_in_the_installed_parsl(table):
    import importlib

    for name, path in table.items():
        module, _, attr = path.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_engine_option_names_match_the_parsl_executors():
    """HTEX passthrough keys must exist in Parsl; a Parsl upgrade that drops one fails here."""
    from parsl.executors import HighThroughputExecutor, MPIExecutor

    gc_only = {
        "max_retries_on_system_failure",
        "run_in_sandbox",
        "allowed_serializers",
        "strategy",
        "job_status_kwargs",
        "container_type",
        "container_uri",
        "container_cmd_options",
    }
    for engine, executor in (
        ("GlobusComputeEngine", HighThroughputExecutor),
        ("GlobusMPIEngine", MPIExecutor),
    ):
        passthrough = allow_list.ENGINE_OPTIONS[engine] - gc_only
        assert passthrough <= set(inspect.signature(executor).parameters), engine


def test_pool_engine_configs_load_without_importing_parsl():
    """The user endpoint's cold start budget: a pool config must not pull in Parsl."""
    code = textwrap.dedent(
        """
        import sys
        from templates.user_config import load_user_endpoint_config
        for kind in ("ThreadPoolEngine", "ProcessPoolEngine"):
            load_user_endpoint_config(f"engine: {{type: {kind}, max_workers: 2}}\\n")
        heavy = sorted(m for m in ("parsl", "jinja2", "jsonschema") if m in sys.modules)
        print(",".join(heavy) or "none")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"
