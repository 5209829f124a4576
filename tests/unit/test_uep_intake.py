"""Verdicts on task deliveries: run, reject with a code, or drop."""

import json
import uuid

from uep.intake import judge
from wire.messages import Task, pack

FN = str(uuid.uuid4())


def body(task_id=None):
    return pack(Task(task_id=task_id or uuid.uuid4(), task_buffer="x"))


def test_well_formed_task_runs_with_its_spec_and_serializers():
    tid = str(uuid.uuid4())
    headers = {
        "task_uuid": tid,
        "function_uuid": FN,
        "resource_specification": json.dumps({"num_nodes": 2}),
        "result_serializers": ["globus_compute_sdk.serialize.JSONData"],
    }
    verdict = judge(headers, body(), None)
    assert verdict.action == "run" and verdict.task_id == tid
    assert verdict.resource_spec == {"num_nodes": 2}
    assert verdict.result_serializers == ["globus_compute_sdk.serialize.JSONData"]


def test_null_resource_spec_is_empty():
    verdict = judge(
        {"task_uuid": str(uuid.uuid4()), "function_uuid": FN, "resource_specification": "null"},
        body(),
        None,
    )
    assert verdict.resource_spec == {}


def test_function_outside_allow_list_is_rejected():
    verdict = judge(
        {"task_uuid": str(uuid.uuid4()), "function_uuid": FN},
        body(),
        frozenset({str(uuid.uuid4())}),
    )
    assert verdict.action == "reject" and verdict.code == "FUNCTION_NOT_ALLOWED"


def test_missing_task_header_falls_back_to_the_body():
    tid = uuid.uuid4()
    verdict = judge({"function_uuid": FN}, body(tid), None)
    assert verdict.task_id == str(tid) and verdict.action == "run"


def test_unattributable_message_is_dropped():
    assert judge({"function_uuid": FN}, b"garbage", None).action == "drop"


def test_missing_function_and_bad_spec_are_rejected_with_reasons():
    tid = str(uuid.uuid4())
    no_fn = judge({"task_uuid": tid}, body(), None)
    assert no_fn.action == "reject" and "function_uuid" in no_fn.message
    bad = judge(
        {"task_uuid": tid, "function_uuid": FN, "resource_specification": "[1]"}, body(), None
    )
    assert bad.action == "reject" and "resource_specification" in bad.message
