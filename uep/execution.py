"""Run one packed Task and answer with one packed Result, as the official does.

This runs wherever the work happens: a pool thread, a pool process or a Parsl
worker. It never raises: whatever goes wrong becomes an error Result with the
official code, so the person who submitted the task sees why.
"""

from __future__ import annotations

import os
import platform
import time
import traceback
import typing as t
import uuid
from pathlib import Path

from wire import WireError
from wire.messages import (
    ActorName,
    Result,
    ResultErrorDetails,
    Task,
    TaskState,
    TaskTransition,
    pack,
    unpack_as,
)
from wire.serializer import MAX_RESULT_SIZE, parse_allowlist, serialize_result, unpack_task_buffer

USER_ERROR = "RemoteExecutionError"
USER_ERROR_MESSAGE = "An error occurred during the execution of this task"


class MaxResultSizeExceeded(Exception):
    """The serialized result is larger than the service accepts (10 MiB)."""


class CouldNotExecuteUserTaskError(Exception):
    """The task could not be set up (bad message, disallowed serializer...)."""


_details_cache: dict = {}


def _static_details() -> dict:
    """Facts about this interpreter; computed once because they never change."""
    if not _details_cache:
        from importlib.metadata import PackageNotFoundError, version

        try:
            sdk = version("globus-compute-sdk")
        except PackageNotFoundError:
            sdk = None
        try:
            dill_version = version("dill")
        except PackageNotFoundError:
            dill_version = None
        _details_cache.update(
            os=platform.system(),
            dill_version=dill_version,
            python_version=platform.python_version(),
            globus_compute_sdk_version=sdk,
        )
    return _details_cache


def details(endpoint_id: str | None) -> dict:
    return {**_static_details(), "endpoint_id": endpoint_id}


def _transition(state: TaskState) -> TaskTransition:
    return TaskTransition(timestamp=time.time_ns(), state=state, actor=ActorName.WORKER)


def _user_traceback(error: BaseException) -> str:
    """The traceback without our own frames: the user debugs their code, not ours."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def error_result(
    task_id: uuid.UUID | str,
    text: str,
    code: str,
    user_message: str,
    endpoint_id: str | None = None,
    statuses: list[TaskTransition] | None = None,
) -> bytes:
    """A packed error Result; ``text`` is what the SDK raises as the exception."""
    return pack(
        Result(
            task_id=uuid.UUID(str(task_id)),
            data=text,
            details=details(endpoint_id),
            error_details=ResultErrorDetails(code=code, user_message=user_message),
            task_statuses=statuses,
        )
    )


def task_dir(run_dir: str, task_id: str, run_in_sandbox: bool) -> Path:
    """Where a task works: ``run_dir``, or ``run_dir/<task_id>`` when sandboxed."""
    base = Path(run_dir)
    if not base.is_absolute():
        raise ValueError(f"run_dir must be an absolute path, not {run_dir!r}")
    return base / task_id if run_in_sandbox else base


def _prepare(task_id: str, run_dir: str, run_in_sandbox: bool, change_dir: bool) -> None:
    workdir = task_dir(run_dir, task_id, run_in_sandbox)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.pop("GC_TASK_SANDBOX_DIR", None)
    os.environ["GC_TASK_UUID"] = task_id
    if run_in_sandbox:
        os.environ["GC_TASK_SANDBOX_DIR"] = str(workdir)
    if change_dir:
        os.chdir(workdir)


def _decode(packed_task: bytes, allowed: t.Iterable[str] | None) -> tuple:
    try:
        task = unpack_as(packed_task, Task)
        return unpack_task_buffer(task.task_buffer, parse_allowlist(allowed))
    except WireError as e:
        raise CouldNotExecuteUserTaskError(str(e)) from None


def _run_user_function(fn: t.Callable, args: tuple, kwargs: dict) -> t.Any:
    timeout = float(os.environ.get("GC_TASK_TIMEOUT", "0") or 0)
    if timeout > 0:
        from parsl.app.python import timeout as with_timeout

        fn = with_timeout(fn, timeout)
    return fn(*args, **kwargs)


def execute_task(
    packed_task: bytes,
    task_id: str,
    endpoint_id: str | None = None,
    *,
    run_dir: str,
    run_in_sandbox: bool = False,
    change_dir: bool = True,
    result_size_limit: int = MAX_RESULT_SIZE,
    task_deserializers: t.Iterable[str] | None = None,
    result_serializers: t.Iterable[str] | None = None,
) -> bytes:
    """Execute a packed Task; always returns a packed Result.

    ``change_dir`` is False on thread engines: ``chdir`` is process-wide, so
    concurrent tasks there would race; they get the directory and the
    environment variables but keep the process working directory.
    """
    statuses = [_transition(TaskState.EXEC_START)]

    def failed(error: BaseException, code: str, user_message: str) -> bytes:
        statuses.append(_transition(TaskState.EXEC_END))
        text = _user_traceback(error)
        return error_result(task_id, text, code, user_message, endpoint_id, statuses)

    try:
        _prepare(task_id, run_dir, run_in_sandbox, change_dir)
        fn, args, kwargs = _decode(packed_task, task_deserializers)
    except (CouldNotExecuteUserTaskError, OSError, ValueError) as e:
        return failed(e, "CouldNotExecuteUserTaskError", f"remote error: {e}")
    try:
        data = serialize_result(_run_user_function(fn, args, kwargs), result_serializers)
    except BaseException as e:  # the user's code may raise anything
        return failed(e, USER_ERROR, USER_ERROR_MESSAGE)
    if len(data) > result_size_limit:
        e = MaxResultSizeExceeded(
            f"Task result size of {len(data)} bytes exceeds the limit of {result_size_limit} bytes"
        )
        return failed(e, "MaxResultSizeExceeded", f"remote error: {e}")
    statuses.append(_transition(TaskState.EXEC_END))
    result = Result(
        task_id=uuid.UUID(task_id), data=data, details=details(endpoint_id), task_statuses=statuses
    )
    return pack(result)
