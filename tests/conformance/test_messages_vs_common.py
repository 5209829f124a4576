"""wire.messages and globus_compute_common.messagepack read each other's bytes."""

import uuid

import pytest
from globus_compute_common import messagepack
from globus_compute_common.messagepack import message_types as common
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import messages as ours

T1 = uuid.uuid4()


def transitions_ours():
    return [
        ours.TaskTransition(timestamp=1_700_000_000_000_000_000, state=s, actor=a)
        for s, a in zip(ours.TaskState, ours.ActorName, strict=False)
    ]


OUR_MESSAGES = [
    ours.Task(task_id=T1, task_buffer="3\nabc"),
    ours.Task(task_id=T1, container_id=uuid.uuid4(), task_buffer=""),
    ours.Result(task_id=T1, data="00\ngARLKi4=\n"),
    ours.Result(
        task_id=T1,
        data="Traceback...\nValueError: ü",
        details={"os": "Linux", "python_version": "3.11"},
        error_details=ours.ResultErrorDetails(code="RemoteExecutionError", user_message="x"),
        task_statuses=transitions_ours(),
    ),
    ours.EPStatusReport(
        endpoint_id=T1,
        global_state={"active": True, "heartbeat_period": 30, "nested": {"a": [1, None]}},
        task_statuses={str(T1): transitions_ours()},
    ),
    ours.ManagerStatusReport(task_statuses={str(T1): transitions_ours()[:2]}),
    ours.TaskTransition(timestamp=5, state=ours.TaskState.SUCCESS, actor=ours.ActorName.WORKER),
    ours.TaskCancel(task_id=T1),
]


def common_dump(message):
    return message.model_dump(mode="json")


@pytest.mark.parametrize("message", OUR_MESSAGES, ids=lambda m: m.message_type)
def test_common_reads_what_we_pack(message):
    theirs = messagepack.unpack(ours.pack(message))
    assert theirs.Meta.message_type == message.message_type
    assert common_dump(theirs) == ours.to_dict(message)


@pytest.mark.parametrize("message", OUR_MESSAGES, ids=lambda m: m.message_type)
def test_we_read_what_common_packs(message):
    theirs = messagepack.unpack(ours.pack(message))
    assert ours.unpack(messagepack.pack(theirs)) == message


def test_we_read_common_status_report_built_with_alias():
    theirs = common.EPStatusReport(
        endpoint_id=T1, ep_status_report={"error": "boom", "heartbeat_period": 3}, task_statuses={}
    )
    report = ours.unpack(messagepack.pack(theirs))
    assert report.global_state == {"error": "boom", "heartbeat_period": 3}


def test_enum_values_match_common():
    from globus_compute_common.tasks import constants

    assert {s.value for s in ours.TaskState} == {s.value for s in constants.TaskState}
    assert {a.value for a in ours.ActorName} == {a.value for a in constants.ActorName}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
transition = st.builds(
    ours.TaskTransition,
    timestamp=st.integers(min_value=0, max_value=2**62),
    state=st.sampled_from(list(ours.TaskState)),
    actor=st.sampled_from(list(ours.ActorName)),
)
results = st.builds(
    ours.Result,
    task_id=st.uuids(),
    data=st.text(),
    details=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    error_details=st.none()
    | st.builds(ours.ResultErrorDetails, code=st.text(max_size=30), user_message=st.text()),
    task_statuses=st.none() | st.lists(transition, max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(results)
def test_results_round_trip_through_common(result):
    assert ours.unpack(messagepack.pack(messagepack.unpack(ours.pack(result)))) == result


@settings(max_examples=100, deadline=None)
@given(st.uuids(), st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_status_reports_round_trip_through_common(endpoint_id, state):
    report = ours.EPStatusReport(endpoint_id=endpoint_id, global_state=state, task_statuses={})
    theirs = messagepack.unpack(ours.pack(report))
    assert theirs.global_state == state
    assert ours.unpack(messagepack.pack(theirs)) == report
