"""What every engine shares: options common to all, retries, and the task call.

An engine turns a packed Task into a Future of a packed Result. Engine-level
failures (a worker died, the pool broke) are retried
``max_retries_on_system_failure`` times; after that the task is answered with
an error Result that carries every attempt's traceback. User errors never reach
this layer: :func:`uep.execution.execute_task` already packed them.
"""

from __future__ import annotations

import abc
import functools
import threading
import traceback
import typing as t
from concurrent.futures import Future
from pathlib import Path

from uep.execution import USER_ERROR, error_result, execute_task


class ResourceSpecError(ValueError):
    """The task's resource_specification is not valid for this engine."""


class Engine(abc.ABC):
    """Common options: ``label``, ``allowed_serializers``, ``working_dir``,
    ``run_in_sandbox``, ``max_retries_on_system_failure``."""

    type_name: t.ClassVar[str] = ""
    change_dir: t.ClassVar[bool] = True

    def __init__(
        self,
        *,
        label: str | None = None,
        allowed_serializers: list[str] | None = None,
        working_dir: str = "tasks_working_dir",
        run_in_sandbox: bool = False,
        max_retries_on_system_failure: int = 0,
    ) -> None:
        self.label = label or self.type_name
        self.allowed_serializers = list(allowed_serializers or [])
        self.working_dir = working_dir
        self.run_in_sandbox = run_in_sandbox
        self.max_retries = int(max_retries_on_system_failure)
        self.endpoint_id: str | None = None
        self.run_dir = ""
        self._lock = threading.Lock()
        self._outstanding = 0

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many tasks can run at once (sizes the AMQP prefetch)."""

    @abc.abstractmethod
    def _start(self, endpoint_dir: Path) -> None: ...

    @abc.abstractmethod
    def _submit(self, call: functools.partial, packed_task: bytes, resource_spec: dict) -> Future:
        """Run ``call(packed_task)`` somewhere; a future of the packed Result."""

    @abc.abstractmethod
    def status(self) -> dict:
        """Engine facts for the heartbeat's ``global_state``."""

    @abc.abstractmethod
    def shutdown(self) -> None: ...

    def check_resource_spec(self, resource_spec: dict) -> None:
        """Pools run anything anywhere: a non-empty spec cannot be honoured."""
        if resource_spec:
            raise ResourceSpecError(
                f"{self.type_name} does not accept a resource_specification"
                f" (got keys {sorted(resource_spec)})"
            )

    def failure(self) -> BaseException | None:
        """An error that makes the engine unusable (the endpoint then stops)."""
        return None

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def start(self, endpoint_id: str, endpoint_dir: Path) -> None:
        self.endpoint_id = endpoint_id
        run_dir = Path(self.working_dir)
        self.run_dir = str(run_dir if run_dir.is_absolute() else endpoint_dir / run_dir)
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        self._start(endpoint_dir)

    def submit(
        self,
        task_id: str,
        packed_task: bytes,
        resource_spec: dict | None = None,
        result_serializers: list[str] | None = None,
    ) -> Future:
        """A future that always ends with a packed Result (never an exception)."""
        resource_spec = resource_spec or {}
        self.check_resource_spec(resource_spec)
        call = functools.partial(
            execute_task,
            task_id=task_id,
            endpoint_id=self.endpoint_id,
            run_dir=self.run_dir,
            run_in_sandbox=self.run_in_sandbox,
            change_dir=self.change_dir,
            task_deserializers=self.allowed_serializers or None,
            result_serializers=result_serializers,
        )
        answer: Future = Future()
        failures: list[str] = []
        with self._lock:
            self._outstanding += 1

        def finish(packed_result: bytes) -> None:
            answer.set_result(packed_result)  # callbacks queue the result first...
            with self._lock:
                self._outstanding -= 1  # ...so "0 outstanding" means all are queued

        def attempt() -> None:
            try:
                self._submit(call, packed_task, resource_spec).add_done_callback(settle)
            except Exception as e:
                settle_error(e)

        def settle(inner: Future) -> None:
            error = inner.exception()
            if error is None:
                finish(inner.result())
            else:
                settle_error(error)

        def settle_error(error: BaseException) -> None:
            failures.append("".join(traceback.format_exception(error)))
            if len(failures) <= self.max_retries:
                attempt()
                return
            finish(system_failure_result(task_id, self.endpoint_id, failures))

        attempt()
        return answer


def system_failure_result(task_id: str, endpoint_id: str | None, failures: list[str]) -> bytes:
    """The answer to a task the engine could not run, with every attempt's story."""
    history = "\n".join(
        f"++++ Traceback from attempt: {n}\n{text}" for n, text in enumerate(failures, 1)
    )
    message = (
        f"Task failed after {len(failures)} attempt(s) because the engine lost it"
        " (worker or pool failure)"
    )
    return error_result(task_id, f"{message}\n{history}", USER_ERROR, message, endpoint_id)
