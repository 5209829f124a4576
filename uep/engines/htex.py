"""GlobusComputeEngine and GlobusMPIEngine: tasks run on Parsl's HTEX workers.

Two fixes over the official engine, both for cold start: the first block is
requested as soon as the executor is up (the status poller's first tick would
come one ``strategy_period`` later), and the interchange and worker pool are
launched as ``sys.executable -m ...`` instead of through a console script
(through :mod:`uep.lean_parsl`, which spares them SQLAlchemy). And one for
memory: the interchange is forked from the user endpoint
(:mod:`uep.forked_interchange`) and the pool forks its task workers
(:mod:`uep.worker_pool`) instead of starting new interpreters.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import typing as t
from concurrent.futures import Future
from pathlib import Path

from uep import forked_interchange, lean_parsl, worker_pool
from uep.engines.base import Engine, ResourceSpecError

INTERCHANGE = "parsl.executors.high_throughput.interchange"
UNSUPPORTED = ("container_type", "container_uri", "container_cmd_options")


def worker_launch_cmd(default: str) -> str:
    """Parsl's default worker command, run by this interpreter as a module."""
    _, _, arguments = default.partition(" ")
    return " ".join([*worker_pool.command(), arguments])


class GlobusComputeEngine(Engine):
    """Parsl HighThroughputExecutor, a provider, and a job-status poller."""

    type_name = "GlobusComputeEngine"
    mpi = False

    def __init__(
        self,
        *,
        provider: t.Any = None,
        address: str | None = None,
        encrypted: bool = True,
        strategy: str | None = None,
        job_status_kwargs: dict | None = None,
        label: str | None = None,
        allowed_serializers: list[str] | None = None,
        working_dir: str = "tasks_working_dir",
        run_in_sandbox: bool = False,
        max_retries_on_system_failure: int = 0,
        **executor_options: t.Any,
    ) -> None:
        super().__init__(
            label=label,
            allowed_serializers=allowed_serializers,
            working_dir=working_dir,
            run_in_sandbox=run_in_sandbox,
            max_retries_on_system_failure=max_retries_on_system_failure,
        )
        for key in UNSUPPORTED:
            if executor_options.get(key) not in (None, "", "RAW"):
                raise ValueError(f"{key} is not supported by this endpoint")
            executor_options.pop(key, None)
        for key in ("enable_mpi_mode", "mpi_launcher") if not self.mpi else ():
            if key in executor_options:
                raise ValueError(f"{key} is not accepted here; use GlobusMPIEngine for MPI tasks")
        poll = {"strategy": "simple", "max_idletime": 120.0, "strategy_period": 5.0}
        poll.update(job_status_kwargs or {})
        if strategy is not None:
            poll["strategy"] = strategy
        self._poll_options = poll
        self._executor = self._build_executor(provider, address, encrypted, executor_options)
        self._poller = None

    def _build_executor(self, provider, address, encrypted, options) -> t.Any:
        from parsl.executors.high_throughput.executor import (
            DEFAULT_LAUNCH_CMD,
            HighThroughputExecutor,
        )
        from parsl.executors.high_throughput.mpi_executor import MPIExecutor

        kind = MPIExecutor if self.mpi else HighThroughputExecutor
        if provider is None:
            from parsl.providers import LocalProvider

            provider = LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1)
        extra = {"address": address} if address else {}
        for key in ("max_workers_per_node", "max_workers_per_block"):
            if isinstance(options.get(key), float) and options[key].is_integer():
                options[key] = int(options[key])  # Parsl's type checks insist on int
        executor = kind(
            label=f"{self.label}-{kind.__name__}",
            provider=provider,
            encrypted=encrypted,
            launch_cmd=worker_launch_cmd(DEFAULT_LAUNCH_CMD),
            **extra,
            **options,
        )
        # Set after construction: MPIExecutor's signature types this as a str.
        executor.interchange_launch_cmd = lean_parsl.command(INTERCHANGE)
        forked_interchange.install(executor)
        return executor

    @property
    def capacity(self) -> int:
        htex = self._executor
        per_node = htex.workers_per_node
        per_node = 1 if per_node == float("inf") else max(1, int(per_node))
        blocks = max(1, htex.provider.max_blocks)
        return per_node * blocks * htex.provider.nodes_per_block + htex.prefetch_capacity

    def _start(self, endpoint_dir: Path) -> None:
        from parsl.jobs.job_status_poller import JobStatusPoller

        htex = self._executor
        htex.run_dir = str(endpoint_dir)
        htex.provider.script_dir = str(endpoint_dir / "submit_scripts")
        Path(htex.provider.script_dir).mkdir(parents=True, exist_ok=True)
        htex.start()
        self._poller = JobStatusPoller(**self._poll_options)
        self._poller.add_executors([htex])
        if htex.provider.init_blocks:
            htex.scale_out_facade(htex.provider.init_blocks)
        # The strategy would request init_blocks again at its first tick.
        self._poller._strategy.executors[htex.label]["first"] = False

    def check_resource_spec(self, resource_spec: dict) -> None:
        try:
            self._executor.validate_resource_spec(resource_spec)
        except Exception as e:
            raise ResourceSpecError(f"invalid resource_specification: {e}") from None

    def _submit(self, call: functools.partial, packed_task: bytes, resource_spec: dict) -> Future:
        target = call.func
        context: dict = {
            "task_executor": {
                "f": f"{target.__module__}.{target.__qualname__}",
                "a": call.args,
                "k": call.keywords,
            }
        }
        if resource_spec:
            context["resource_spec"] = resource_spec
        return self._executor.submit_payload(context, packed_task)

    def failure(self) -> BaseException | None:
        return self._executor.executor_exception if self._executor.bad_state_is_set else None

    def _managers(self) -> list[dict]:
        """The interchange's managers, or none if it cannot say within 2 s.

        Parsl's command client holds a lock while it sends, without a timeout,
        so a call behind a stuck one (a dead interchange) would wait forever:
        ask from a daemon thread and stop waiting for it.
        """
        htex = self._executor
        proc = getattr(htex, "interchange_proc", None)
        if self._poller is None or (proc is not None and proc.poll() is not None):
            return []
        answer: list = []

        def ask() -> None:
            with contextlib.suppress(Exception):
                answer.extend(htex.command_client.run("MANAGERS", timeout_s=2))

        asking = threading.Thread(target=ask, name="htex-status", daemon=True)
        asking.start()
        asking.join(3)
        return list(answer) if not asking.is_alive() else []

    def status(self) -> dict:
        htex = self._executor
        managers = self._managers()
        provider = htex.provider
        return {
            "engine_type": self.type_name,
            "label": self.label,
            "managers": len(managers),
            "active_managers": sum(1 for m in managers if m.get("active")),
            "total_workers": sum(m.get("worker_count", 0) for m in managers),
            "idle_workers": sum(
                m.get("worker_count", 0) - m.get("tasks", 0) for m in managers if m.get("active")
            ),
            "outstanding_tasks": self.outstanding,
            "pending_tasks": htex.outstanding(),
            "max_blocks": provider.max_blocks,
            "min_blocks": provider.min_blocks,
            "nodes_per_block": provider.nodes_per_block,
            "prefetch_capacity": htex.prefetch_capacity,
            "provider_type": type(provider).__name__,
            "scaling_enabled": self._poll_options.get("strategy") not in (None, "none"),
        }

    def shutdown(self) -> None:
        if self._poller is not None:
            self._poller.close()
        self._executor.shutdown()


class GlobusMPIEngine(GlobusComputeEngine):
    """Parsl's MPIExecutor: every task must say how many nodes and ranks it needs."""

    type_name = "GlobusMPIEngine"
    mpi = True

    def check_resource_spec(self, resource_spec: dict) -> None:
        if not resource_spec:
            raise ResourceSpecError(
                "GlobusMPIEngine needs a resource_specification such as"
                ' {"num_nodes": 1, "ranks_per_node": 2}'
            )
        super().check_resource_spec(resource_spec)
