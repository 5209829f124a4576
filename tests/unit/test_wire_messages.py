"""The v1 envelope and message classes of wire.messages (pure, no broker)."""

import json
import uuid

import pytest

from wire.errors import MessageError
from wire.messages import (
    ActorName,
    EPStatusReport,
    Result,
    ResultErrorDetails,
    Task,
    TaskCancel,
    TaskState,
    TaskTransition,
    pack,
    unpack,
    unpack_as,
)

TID = uuid.UUID("359e2ec3-caef-4258-a149-a67767af0ee8")


def envelope(message_type, data):
    return b"\x01" + json.dumps({"message_type": message_type, "data": data}).encode()


def test_task_packs_to_compact_v1_envelope():
    raw = pack(Task(task_id=TID, task_buffer="buf"))
    assert raw.startswith(b'\x01{"message_type":"task","data":{')
    assert b"\n" not in raw and b" " not in raw
    body = json.loads(raw[1:])
    assert body["data"] == {
        "task_id": str(TID),
        "container_id": None,
        "container": None,
        "task_buffer": "buf",
    }


def test_result_round_trip_keeps_every_field():
    result = Result(
        task_id=TID,
        data="tb",
        details={"os": "Linux"},
        error_details=ResultErrorDetails(code="RemoteExecutionError", user_message="boom"),
        task_statuses=[
            TaskTransition(timestamp=5, state=TaskState.EXEC_START, actor=ActorName.WORKER)
        ],
    )
    back = unpack(pack(result))
    assert back == result
    assert back.is_error
    assert back.task_statuses[0].state is TaskState.EXEC_START


def test_status_report_uses_global_state_and_reads_alias():
    report = EPStatusReport(endpoint_id=TID, global_state={"active": True}, task_statuses={})
    assert json.loads(pack(report)[1:])["data"]["global_state"] == {"active": True}
    aliased = envelope(
        "ep_status_report",
        {"endpoint_id": str(TID), "ep_status_report": {"error": "x"}, "task_statuses": {}},
    )
    assert unpack(aliased).global_state == {"error": "x"}


def test_unknown_extra_fields_are_ignored():
    raw = envelope("task_cancel", {"task_id": str(TID), "future_field": 1})
    assert unpack(raw) == TaskCancel(task_id=TID)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"\x02{}", "version byte"),
        (b"\x01{not json", "not valid JSON"),
        (b"\x01[]", "envelope: expected an object"),
        (envelope("heartbeat", {}), "envelope.message_type"),
        (b'\x01{"message_type":"task"}', "'data'"),
        (envelope("task", {"task_buffer": "x"}), "missing required field 'task_id'"),
        (
            envelope("task", {"task_id": "nope", "task_buffer": "x"}),
            "task.task_id: expected a UUID",
        ),
        (envelope("result", {"task_id": str(TID), "data": 3}), "result.data: expected a string"),
        (
            envelope("task_transition", {"timestamp": 1, "state": "odd", "actor": "worker"}),
            "task_transition.state: expected one of",
        ),
        (
            envelope("result", {"task_id": str(TID), "data": "", "error_details": {"code": "x"}}),
            "result.error_details: missing required field 'user_message'",
        ),
        (b"\x01\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_messages_name_the_problem(raw, fragment):
    with pytest.raises(MessageError, match=None) as err:
        unpack(raw)
    assert fragment in str(err.value)


def test_unpack_as_refuses_other_types():
    with pytest.raises(MessageError, match="expected a 'task' message, got 'task_cancel'"):
        unpack_as(pack(TaskCancel(task_id=TID)), Task)


def test_timestamps_must_be_integers_not_bools():
    raw = envelope("task_transition", {"timestamp": True, "state": "running", "actor": "worker"})
    with pytest.raises(MessageError, match="timestamp: expected an integer"):
        unpack(raw)
