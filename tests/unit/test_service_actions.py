"""The action provider's pure decisions: input, payloads, outcome, durations, who may do what."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from pydantic import ValidationError

from service import actions, schema
from wire import serializer

ERIN, CAROL, DAVE = (str(uuid.uuid4()) for _ in range(3))


def an_action(task_ids: list[str], **fields) -> schema.Action:
    values = {
        "id": str(uuid.uuid4()),
        "creator_id": ERIN,
        "request_id": "r",
        "request_digest": "d",
        "monitor_by": [],
        "manage_by": [],
        "task_group_id": str(uuid.uuid4()),
        "task_ids": task_ids,
        "release_after_s": actions.DEFAULT_RELEASE_AFTER_S,
        "start_time": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "cancelled": False,
    }
    return schema.Action(**(values | fields))


def a_task(status: str, result: str | None = None, exception: str | None = None) -> schema.Task:
    return schema.Task(id=str(uuid.uuid4()), status=status, result=result, exception=exception)


def test_payloads_are_what_the_sdk_sends_and_keep_the_input_order():
    f, g = str(uuid.uuid4()), str(uuid.uuid4())
    body = actions.ComputeActionBody(
        endpoint_id=uuid.uuid4(),
        tasks=[
            {"function_id": f, "args": [1, "a"]},
            {"function_id": g, "kwargs": {"k": None}},
            {"function_id": f, "args": [[2]]},
        ],
    )
    submission, positions = actions.submission_for(body)
    assert list(submission.tasks) == [uuid.UUID(f), uuid.UUID(g)]
    assert submission.result_serializers == [actions.JSON_RESULTS]
    decoded = [
        [serializer.deserialize(b) for b in serializer.unpack_buffers(p)]
        for p in submission.tasks[uuid.UUID(f)]
    ]
    assert decoded == [[(1, "a"), {}], [([2],), {}]]
    ids = {f: ["f0", "f1"], g: ["g0"]}
    assert actions.ordered_task_ids(positions, ids) == ["f0", "g0", "f1"]


def test_outcome_is_active_until_every_task_finished():
    done, waiting = a_task("success", '11\n{"a": 1}'), a_task("waiting-for-ep")
    action = an_action([done.id, waiting.id])
    state = actions.outcome(action, {t.id: t for t in (done, waiting)})
    assert state.status == actions.ACTIVE and not state.complete
    assert state.details["completed_tasks"] == 1 and state.details["total_tasks"] == 2
    offline = actions.outcome(action, {t.id: t for t in (done, waiting)}, endpoint_online=False)
    assert offline.status == actions.INACTIVE and not offline.complete
    assert offline.details["code"] == "EndpointOffline"
    finished = actions.outcome(an_action([done.id]), {done.id: done}, endpoint_online=False)
    assert finished.status == actions.SUCCEEDED, "an offline endpoint does not undo results"


def test_outcome_succeeded_lists_outputs_in_input_order():
    tasks = [a_task("success", "11\n[1, 2]"), a_task("success", '11\n"x"')]
    action = an_action([t.id for t in reversed(tasks)])
    state = actions.outcome(action, {t.id: t for t in tasks})
    assert state.status == actions.SUCCEEDED
    assert state.details["result"] == ["x", [1, 2]]
    assert [r["task_id"] for r in state.details["results"]] == action.task_ids


def test_outcome_failed_keeps_every_task_and_names_the_first_error():
    tasks = [
        a_task("success", "11\n3"),
        a_task("failed", exception="Traceback ... ZeroDivisionError"),
        a_task("success", serializer.serialize(object)),  # a pickle: never loaded
    ]
    action = an_action([t.id for t in tasks] + [str(uuid.uuid4())])  # and one record gone
    state = actions.outcome(action, {t.id: t for t in tasks})
    assert state.status == actions.FAILED
    assert state.details["code"] == "TaskExecutionFailed"
    assert state.details["description"] == "Traceback ... ZeroDivisionError"
    assert state.details["result"] == [3, None, None, None]
    assert "not JSON data" in state.details["results"][2]["exception"]
    assert "gone" in state.details["results"][3]["exception"]
    cancelled = actions.outcome(
        an_action(action.task_ids, cancelled=True), {t.id: t for t in tasks}
    )
    assert cancelled.details["code"] == "ActionCanceled" and cancelled.display_status == "cancelled"


@pytest.mark.parametrize("text", [None, "", "00\ngARLKi4=\n", "11\n{broken"])
def test_only_json_results_are_decoded(text):
    with pytest.raises(ValueError):
        actions.json_output(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(None, 30 * 86400), ("P1D", 86400), ("PT90M", 5400), ("P1DT1S", 86401), ("P400D", 30 * 86400)],
)
def test_release_after_is_read_and_capped(text, seconds):
    assert actions.release_after_seconds(text) == seconds


@pytest.mark.parametrize("text", ["P", "PT", "P1Y", "P1DT", "1D", "PT1.5S", "-P1D"])
def test_release_after_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError, match="ISO 8601 duration"):
        actions.release_after_seconds(text)


def test_iso_durations_round_trip():
    for seconds in (86400, 3600, 30 * 86400, 59):
        assert actions.release_after_seconds(actions.iso_duration(seconds)) == seconds


def test_creator_monitors_and_managers():
    action = an_action(
        [],
        monitor_by=[actions.principal(CAROL)],
        manage_by=[actions.principal(DAVE)],
    )
    erin, carol, dave = ({actions.principal(i)} for i in (ERIN, CAROL, DAVE))
    stranger = {actions.principal(str(uuid.uuid4()))}
    assert [actions.may_monitor(action, p) for p in (erin, carol, dave, stranger)] == [
        True,
        True,
        True,
        False,
    ]
    assert [actions.may_manage(action, p) for p in (erin, carol, dave, stranger)] == [
        True,
        False,
        True,
        False,
    ]


def test_the_digest_tells_a_retry_from_another_request():
    body = {"endpoint_id": str(uuid.uuid4()), "tasks": [{"function_id": str(uuid.uuid4())}]}
    one = actions.ActionRequest(request_id="r", body=body)
    same = actions.ActionRequest(request_id="r", body=body, unknown_field=1)
    other = actions.ActionRequest(request_id="r", body=body, label="changed")
    assert actions.request_digest(one) == actions.request_digest(same)
    assert actions.request_digest(one) != actions.request_digest(other)


def test_bodies_refuse_unknown_fields_and_empty_task_lists():
    ep = str(uuid.uuid4())
    with pytest.raises(ValidationError, match="endpoint"):
        actions.ComputeActionBody(endpoint=ep, endpoint_id=ep, tasks=[{"function_id": ep}])
    with pytest.raises(ValidationError, match="tasks"):
        actions.ComputeActionBody(endpoint_id=ep, tasks=[])
    with pytest.raises(ValidationError, match="monitor_by"):
        actions.ActionRequest(
            request_id="r",
            body={"endpoint_id": ep, "tasks": [{"function_id": ep}]},
            monitor_by=["x"],
        )


def test_status_documents_name_times_in_utc():
    naive = an_action([], start_time=dt.datetime(2026, 1, 1), label="l")
    doc = actions.status_doc(naive, actions.Outcome(actions.ACTIVE, {}, "0 of 0 tasks done"))
    assert doc["start_time"] == "2026-01-01T00:00:00+00:00" and doc["label"] == "l"
    assert "completion_time" not in doc and doc["release_after"] == "P30D"
    assert doc["creator_id"] == f"urn:globus:auth:identity:{ERIN}"
