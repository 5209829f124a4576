"""execute_task and the pool engines, in process, with tasks packed by the official SDK."""

from __future__ import annotations

import os
import uuid

import pytest
from globus_compute_sdk.serialize import ComputeSerializer

from uep.engines.pools import ProcessPoolEngine, ThreadPoolEngine
from uep.execution import execute_task
from wire.messages import Task, pack, unpack

SER = ComputeSerializer()


def packed(fn, *args, **kwargs) -> tuple[str, bytes]:
    task_id = uuid.uuid4()
    buffer = SER.pack_buffers([SER.serialize(fn), SER.serialize(args), SER.serialize(kwargs)])
    return str(task_id), pack(Task(task_id=task_id, task_buffer=buffer))


def env_and_cwd():
    import os

    return os.environ["GC_TASK_UUID"], os.environ.get("GC_TASK_SANDBOX_DIR"), os.getcwd()


def crash():
    import os

    os._exit(3)


def inc(x):
    return x + 1


def test_sandbox_sets_environment_and_directory(tmp_path):
    task_id, body = packed(env_and_cwd)
    here = os.getcwd()
    try:
        result = unpack(execute_task(body, task_id, run_dir=str(tmp_path), run_in_sandbox=True))
    finally:
        os.chdir(here)
    assert SER.deserialize(result.data) == (
        task_id,
        str(tmp_path / task_id),
        str(tmp_path / task_id),
    )
    assert result.details["python_version"]


def test_thread_mode_never_changes_the_process_directory(tmp_path):
    task_id, body = packed(env_and_cwd)
    here = os.getcwd()
    result = unpack(
        execute_task(body, task_id, run_dir=str(tmp_path), run_in_sandbox=True, change_dir=False)
    )
    assert os.getcwd() == here
    assert SER.deserialize(result.data)[1] == str(tmp_path / task_id)


def test_relative_run_dir_is_a_setup_error():
    task_id, body = packed(inc, 1)
    result = unpack(execute_task(body, task_id, run_dir="relative"))
    assert result.error_details.code == "CouldNotExecuteUserTaskError"


def test_result_serializers_are_honoured(tmp_path):
    task_id, body = packed(inc, 1)
    result = unpack(
        execute_task(
            body,
            task_id,
            run_dir=str(tmp_path),
            change_dir=False,
            result_serializers=["globus_compute_sdk.serialize.JSONData"],
        )
    )
    assert result.data == "11\n2"


def test_result_size_limit(tmp_path):
    task_id, body = packed(inc, 1)
    result = unpack(
        execute_task(body, task_id, run_dir=str(tmp_path), change_dir=False, result_size_limit=3)
    )
    assert result.error_details.code == "MaxResultSizeExceeded"


@pytest.fixture
def process_engine(tmp_path):
    engine = ProcessPoolEngine(max_workers=2, max_retries_on_system_failure=1)
    engine.start(str(uuid.uuid4()), tmp_path)
    yield engine
    engine.shutdown()


def test_crash_fails_only_the_culprit_after_its_retries(process_engine):
    futures = [process_engine.submit(*packed(inc, i)) for i in range(4)]
    culprit = process_engine.submit(*packed(crash))
    futures += [process_engine.submit(*packed(inc, i)) for i in range(4)]
    bad = unpack(culprit.result(60))
    assert bad.is_error and bad.data.count("++++ Traceback from attempt") == 2
    assert [SER.deserialize(unpack(f.result(60)).data) for f in futures] == [1, 2, 3, 4] * 2
    assert process_engine.outstanding == 0


def test_pools_refuse_resource_specifications(tmp_path):
    engine = ThreadPoolEngine(max_workers=1)
    engine.start(str(uuid.uuid4()), tmp_path)
    try:
        with pytest.raises(ValueError, match="resource_specification"):
            engine.submit(*packed(inc, 1), {"num_nodes": 1})
    finally:
        engine.shutdown()
