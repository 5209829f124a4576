"""Which ``type:`` names a user-endpoint config may use, and where they live.

The official endpoint resolves ``type:`` with ``getattr`` on whole modules, so any
public attribute of ``parsl.providers`` is reachable from a template. Here only
the names below exist. Values are import paths (strings) so reading this module
imports nothing; Parsl is imported only when a provider is actually checked or
built.
"""

from __future__ import annotations

PROVIDERS: dict[str, str] = {
    name: f"parsl.providers.{name}"
    for name in (
        "LocalProvider",
        "SlurmProvider",
        "PBSProProvider",
        "TorqueProvider",
        "CondorProvider",
        "LSFProvider",
        "GridEngineProvider",
        "KubernetesProvider",
        "AWSProvider",
        "GoogleCloudProvider",
        "AzureProvider",
    )
}

LAUNCHERS: dict[str, str] = {
    name: f"parsl.launchers.{name}"
    for name in (
        "SingleNodeLauncher",
        "SimpleLauncher",
        "SrunLauncher",
        "SrunMPILauncher",
        "MpiExecLauncher",
        "MpiRunLauncher",
        "AprunLauncher",
        "JsrunLauncher",
        "GnuParallelLauncher",
        "WrappedLauncher",
    )
}

ADDRESSES: dict[str, str] = {
    name: f"parsl.addresses.{name}"
    for name in (
        "address_by_interface",
        "address_by_hostname",
        "address_by_route",
        "address_by_query",
    )
}

# Providers that run workers in a container image they choose themselves.
NO_CONTAINER_URI = frozenset({"AWSProvider", "GoogleCloudProvider", "KubernetesProvider"})

_POOL_COMMON = frozenset({"label", "allowed_serializers"})

# Keys of Parsl's HighThroughputExecutor that a YAML config can express and the
# engine passes through (UEP.md §2.3). ``provider`` and ``address`` are read
# separately; launch commands are the engine's business and not settable.
_HTEX_SHARED = frozenset(
    {
        "loopback_address",
        "worker_port",
        "worker_port_range",
        "interchange_port_range",
        "storage_access",
        "worker_debug",
        "prefetch_capacity",
        "heartbeat_threshold",
        "heartbeat_period",
        "drain_period",
        "poll_period",
        "address_probe_timeout",
        "worker_logdir_root",
        "block_error_handler",
        "encrypted",
        "remote_monitoring_radio",
    }
)

_GLOBUS_COMPUTE = frozenset(
    {
        "label",
        "allowed_serializers",
        "max_retries_on_system_failure",
        "working_dir",
        "run_in_sandbox",
        "strategy",
        "job_status_kwargs",
        "container_type",
        "container_uri",
        "container_cmd_options",
    }
)

ENGINE_OPTIONS: dict[str, frozenset[str]] = {
    "ThreadPoolEngine": _POOL_COMMON | {"max_workers", "thread_name_prefix"},
    "ProcessPoolEngine": _POOL_COMMON | {"max_workers", "max_tasks_per_child", "mp_context"},
    "GlobusComputeEngine": _GLOBUS_COMPUTE
    | _HTEX_SHARED
    | {
        "cores_per_worker",
        "mem_per_worker",
        "max_workers_per_node",
        "cpu_affinity",
        "available_accelerators",
    },
    "GlobusMPIEngine": _GLOBUS_COMPUTE | _HTEX_SHARED | {"max_workers_per_block", "mpi_launcher"},
}

# Engines that drive Parsl and therefore take a provider and an address.
PARSL_ENGINES = frozenset({"GlobusComputeEngine", "GlobusMPIEngine"})

# Advice for keys people carry over from elsewhere.
ENGINE_KEY_HINTS: dict[str, str] = {
    "enable_mpi_mode": "MPI needs `type: GlobusMPIEngine` instead",
    "mpi_launcher": "only GlobusMPIEngine takes mpi_launcher",
    "max_workers": "GlobusComputeEngine uses max_workers_per_node",
    "launcher": "a launcher belongs inside the provider block",
}
