"""The Flows action provider through the real service and RabbitMQ, with results published
as the user endpoint would (the e2e module runs them on a real endpoint as real users).

Every request sent and document answered is checked with the official
globus-action-provider-tools models and schemas (``tests/action_docs.py``).
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid

import pytest

from tests.action_docs import assert_valid, problems
from tests.fixtures_service import COMPUTE_SCOPE, queued_command
from wire import amqp, messages, serializer
from wire.queue_info import WriteQueueInfo

CODE = serializer.pack_buffers([serializer.serialize(len)])
ERROR = messages.ResultErrorDetails(code="RemoteExecutionError", user_message="it failed")


@pytest.fixture(scope="module")
def people(api_service):
    """Four identities, each with a client and a token: erin runs actions, the others try."""
    found = {}
    for name in ("erin", "bob", "carol", "dave"):
        client = api_service.add_client(f"{name}@uni.edu")
        api = api_service.api(api_service.token(client))
        api.identity_id = client["identity_id"]
        api.urn = f"urn:globus:auth:identity:{client['identity_id']}"
        found[name] = api
    yield found
    for api in found.values():
        api.close()


@pytest.fixture
def setup(people, rabbit_vhost):
    """A fresh endpoint (no manager runs it: tasks wait) and two functions of erin's."""
    api = people["erin"]
    reg = api.post("/v3/endpoints", json={"endpoint_name": f"ap-{uuid.uuid4().hex[:6]}"}).json()
    fids = [
        api.post("/v3/functions", json={"function_name": name, "function_code": CODE}).json()[
            "function_uuid"
        ]
        for name in ("first", "second")
    ]
    return reg, fids


def action_request(endpoint_id: str, tasks: list[dict], **extra) -> dict:
    return {
        "request_id": str(uuid.uuid4()),
        "body": {"endpoint_id": endpoint_id, "tasks": tasks},
        **extra,
    }


class Seen:
    """The documents a test exchanged, checked together at its end."""

    def __init__(self, schema: dict) -> None:
        self.schema = schema
        self.items: list[list] = []

    def request(self, doc: dict) -> dict:
        self.items.append(["request", doc, self.schema])
        return doc

    def status(self, response, code: int = 200) -> dict:
        assert response.status_code == code, response.text
        self.items.append(["status", response.json()])
        return response.json()

    def check(self) -> None:
        assert_valid(self.items)


@pytest.fixture
def seen(api_service):
    with api_service.api(None) as anon:
        schema = anon.get("/actions/v3/").json()["input_schema"]
    tracker = Seen(schema)
    yield tracker
    tracker.check()


def user_endpoint_creds(rabbit_vhost: str, reg: dict) -> dict:
    """The user endpoint's broker credentials, from the start command its first task sent."""
    return queued_command(rabbit_vhost, reg)["kwargs"]["amqp_creds"]


def publish_results(creds: dict, results: list[messages.Result]) -> None:
    """Publish results as the user endpoint, with its own broker account."""
    publish(creds["result_queue_info"], results)


def heartbeat(reg: dict) -> None:
    """Report the endpoint alive, as its manager does."""
    report = messages.EPStatusReport(
        endpoint_id=uuid.UUID(reg["endpoint_id"]),
        global_state={"heartbeat_period": 30},
        task_statuses={},
    )
    publish(reg["heartbeat_queue_info"], [report])


def publish(info: dict, payloads: list[messages.Message]) -> None:
    """Publish as the party a queue info belongs to (its account, exchange and key)."""
    queue_info = WriteQueueInfo.from_dict(info)
    connection = amqp.connect(queue_info.connection_url)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for payload in payloads:
            channel.basic_publish(body=messages.pack(payload), **amqp.publish_kwargs(queue_info))
    finally:
        connection.close()


def wait_status(api, action_id: str, until: str, seen: Seen, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        doc = seen.status(api.get(f"/actions/v3/{action_id}/status"))
        if doc["status"] == until or time.monotonic() > deadline:
            assert doc["status"] == until, doc
            return doc
        time.sleep(0.2)


def test_introspection_is_public_and_valid(api_service):
    with api_service.api(None) as anon:
        docs = [anon.get(path) for path in ("/actions/v3", "/actions/v3/")]
    assert [d.status_code for d in docs] == [200, 200]
    doc = docs[0].json()
    assert doc == docs[1].json()
    assert doc["synchronous"] is False and doc["types"] == ["Action"]
    assert doc["api_version"] == "1.0" and doc["globus_auth_scope"] == COMPUTE_SCOPE
    assert set(doc["input_schema"]["required"]) == {"endpoint_id", "tasks"}
    assert_valid([["introspection", doc]])


def test_the_checker_refuses_broken_documents(api_service):
    """The validation the other tests rely on can fail."""
    good = {
        "action_id": "a",
        "status": "ACTIVE",
        "creator_id": f"urn:globus:auth:identity:{uuid.uuid4()}",
        "details": {},
    }
    found = problems(
        [
            ["status", good],
            ["status", dict(good, status="RUNNING")],
            ["status", dict(good, creator_id="erin")],
            ["status", {k: v for k, v in good.items() if k != "details"}],
            ["request", {"body": {}}],
            ["introspection", {"types": ["ACTION"], "input_schema": {"type": 5}}],
        ]
    )
    assert found[0] == []
    assert all(found[1:]), found


def test_run_then_status_until_succeeded_then_release(people, setup, rabbit_vhost, seen):
    api = people["erin"]
    reg, (first, second) = setup
    tasks = [
        {"function_id": first, "args": ["abc", 2], "kwargs": {"k": [1, None]}},
        {"function_id": second},
        {"function_id": first, "args": [{"x": 1}]},
    ]
    request = seen.request(action_request(reg["endpoint_id"], tasks, label="three calls"))
    started = seen.status(api.post("/actions/v3/run", json=request), 202)
    # No manager has reported this endpoint alive: nothing can progress until it does.
    assert started["status"] == "INACTIVE" and started["label"] == "three calls"
    assert started["details"]["code"] == "EndpointOffline"
    heartbeat(reg)
    wait_status(api, started["action_id"], "ACTIVE", seen)
    assert started["creator_id"] == api.urn and "completion_time" not in started
    task_ids = started["details"]["task_ids"]
    assert len(set(task_ids)) == 3

    # The JSON arguments reach the endpoint serialized as the SDK does, asking for JSON results.
    creds = user_endpoint_creds(rabbit_vhost, reg)
    queue = creds["task_queue_info"]["queue"]
    connection = amqp.connect(rabbit_vhost)
    try:
        channel = connection.channel()
        sent = {}
        for _ in task_ids:
            _method, props, raw = channel.basic_get(queue, auto_ack=True)
            task = messages.unpack(raw)
            assert props.headers["result_serializers"] == ["globus_compute_sdk.serialize.JSONData"]
            _fn, args, kwargs = serializer.unpack_task_buffer(task.task_buffer)
            sent[str(task.task_id)] = (props.headers["function_uuid"], list(args), kwargs)
    finally:
        connection.close()
    assert [sent[t] for t in task_ids] == [
        (first, ["abc", 2], {"k": [1, None]}),
        (second, [], {}),
        (first, [{"x": 1}], {}),
    ]

    outputs = [{"n": 1}, "two", [3]]
    results = [
        messages.Result(task_id=uuid.UUID(t), data=serializer.serialize(out, "11\n"))
        for t, out in zip(task_ids, outputs, strict=True)
    ]
    publish_results(creds, results[:2])
    partial = wait_status(api, started["action_id"], "ACTIVE", seen)
    assert partial["details"]["total_tasks"] == 3
    publish_results(creds, results[2:])
    done = wait_status(api, started["action_id"], "SUCCEEDED", seen)
    assert done["details"]["result"] == outputs
    assert done["details"]["results"] == [
        {"task_id": t, "output": out} for t, out in zip(task_ids, outputs, strict=True)
    ]
    assert done["completion_time"] >= done["start_time"]
    again = seen.status(api.get(f"/actions/v3/{done['action_id']}/status"))
    assert again == done, "a finished action's document does not change"
    released = seen.status(api.post(f"/actions/v3/{done['action_id']}/release"))
    assert released == done
    for path in ("status", "release", "cancel"):
        method = api.get if path == "status" else api.post
        gone = method(f"/actions/v3/{done['action_id']}/{path}")
        assert gone.status_code == 404 and "not found" in gone.json()["reason"]
    assert api.get(f"/v2/tasks/{task_ids[0]}").json()["status"] == "success"


def test_failed_or_non_json_results_fail_the_action(people, setup, rabbit_vhost, seen):
    api = people["erin"]
    reg, (first, _second) = setup
    request = seen.request(action_request(reg["endpoint_id"], [{"function_id": first}] * 3))
    action = seen.status(api.post("/actions/v3/run", json=request), 202)
    ok, broken, pickled = (uuid.UUID(t) for t in action["details"]["task_ids"])
    publish_results(
        user_endpoint_creds(rabbit_vhost, reg),
        [
            messages.Result(task_id=ok, data='11\n"fine"'),
            messages.Result(task_id=broken, data="Traceback: ValueError: bad", error_details=ERROR),
            # A pickle is never loaded by the service: it would run the endpoint's code there.
            messages.Result(task_id=pickled, data=serializer.serialize(42)),
        ],
    )
    failed = wait_status(api, action["action_id"], "FAILED", seen)
    details = failed["details"]
    assert details["code"] == "TaskExecutionFailed"
    assert details["description"] == "Traceback: ValueError: bad"
    assert details["result"] == ["fine", None, None]
    assert details["results"][1] == {
        "task_id": str(broken),
        "exception": "Traceback: ValueError: bad",
    }
    assert "not JSON data" in details["results"][2]["exception"]


def test_a_retried_run_creates_no_new_tasks(people, setup, seen):
    api = people["erin"]
    reg, (first, _second) = setup
    request = seen.request(
        action_request(reg["endpoint_id"], [{"function_id": first, "args": [1]}])
    )
    first_answer = seen.status(api.post("/actions/v3/run", json=request), 202)
    retried = seen.status(api.post("/actions/v3/run", json=request), 200)
    assert retried["action_id"] == first_answer["action_id"]
    assert retried["details"]["task_ids"] == first_answer["details"]["task_ids"]
    group = api.get(f"/v2/taskgroup/{first_answer['details']['task_group_id']}").json()
    assert [t["id"] for t in group["tasks"]] == first_answer["details"]["task_ids"]

    changed = dict(request, body=dict(request["body"], tasks=[{"function_id": first, "args": [2]}]))
    refused = api.post("/actions/v3/run", json=changed)
    assert refused.status_code == 409 and "different request" in refused.json()["reason"]

    # Concurrent twins: one action, one set of tasks.
    twin = seen.request(action_request(reg["endpoint_id"], [{"function_id": first}] * 2))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: api.post("/actions/v3/run", json=twin), range(4)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 202], [a.text for a in answers]
    docs = [seen.status(a, a.status_code) for a in answers]
    assert len({d["action_id"] for d in docs}) == 1
    group = api.get(f"/v2/taskgroup/{docs[0]['details']['task_group_id']}").json()
    assert len(group["tasks"]) == 2


def test_cancel_stops_waiting_tasks_and_release_waits_for_the_end(
    people, setup, rabbit_vhost, seen
):
    api = people["erin"]
    reg, (first, _second) = setup
    request = seen.request(action_request(reg["endpoint_id"], [{"function_id": first}] * 2))
    action = seen.status(api.post("/actions/v3/run", json=request), 202)
    action_id, task_ids = action["action_id"], action["details"]["task_ids"]
    early = api.post(f"/actions/v3/{action_id}/release")
    assert early.status_code == 409 and "still INACTIVE" in early.json()["reason"]
    assert seen.status(api.get(f"/actions/v3/{action_id}/status"))["status"] == "INACTIVE"

    cancelled = seen.status(api.post(f"/actions/v3/{action_id}/cancel"))
    assert cancelled["status"] == "FAILED" and cancelled["details"]["code"] == "ActionCanceled"
    assert "cancelled by erin@uni.edu" in cancelled["details"]["description"]
    for task_id in task_ids:
        task = api.get(f"/v2/tasks/{task_id}").json()
        assert task["status"] == "failed" and "cancelled" in task["exception"]
    # A result arriving after the cancel changes nothing.
    late = [messages.Result(task_id=uuid.UUID(task_ids[0]), data="11\n1")]
    publish_results(user_endpoint_creds(rabbit_vhost, reg), late)
    time.sleep(1)
    assert seen.status(api.post(f"/actions/v3/{action_id}/cancel")) == cancelled
    assert seen.status(api.post(f"/actions/v3/{action_id}/release")) == cancelled
    assert api.get(f"/actions/v3/{action_id}/status").status_code == 404


def test_only_the_creator_and_named_principals_see_or_control_an_action(people, setup, seen):
    erin, bob, carol, dave = (people[n] for n in ("erin", "bob", "carol", "dave"))
    reg, (first, _second) = setup
    request = seen.request(
        action_request(
            reg["endpoint_id"],
            [{"function_id": first}],
            monitor_by=[carol.urn],
            manage_by=[dave.urn],
        )
    )
    action = seen.status(erin.post("/actions/v3/run", json=request), 202)
    path = f"/actions/v3/{action['action_id']}"
    for verb, method in (("status", bob.get), ("cancel", bob.post), ("release", bob.post)):
        answer = method(f"{path}/{verb}")
        assert answer.status_code == 404, (verb, answer.text)
    assert seen.status(carol.get(f"{path}/status"))["action_id"] == action["action_id"]
    for verb in ("cancel", "release"):
        answer = carol.post(f"{path}/{verb}")
        assert answer.status_code == 403 and "manage_by" in answer.json()["reason"]
    # Request ids are per creator: bob reusing erin's starts his own action, not a view of hers.
    bob_ep = bob.post("/v3/endpoints", json={"endpoint_name": "bobs"}).json()["endpoint_id"]
    bob_fn = bob.post("/v3/functions", json={"function_name": "f", "function_code": CODE}).json()
    body = {"endpoint_id": bob_ep, "tasks": [{"function_id": bob_fn["function_uuid"]}]}
    own = seen.status(bob.post("/actions/v3/run", json=dict(request, body=body)), 202)
    assert own["action_id"] != action["action_id"] and own["creator_id"] == bob.urn
    assert seen.status(dave.get(f"{path}/status"))["status"] == "INACTIVE"
    assert seen.status(dave.post(f"{path}/cancel"))["status"] == "FAILED"
    assert seen.status(dave.post(f"{path}/release"))["action_id"] == action["action_id"]


def test_a_refused_run_leaves_nothing_behind(people, setup, seen):
    erin, bob = people["erin"], people["bob"]
    reg, (first, second) = setup
    locked = erin.post(
        "/v3/endpoints", json={"endpoint_name": "locked", "allowed_functions": [first]}
    ).json()["endpoint_id"]
    request = seen.request(action_request(locked, [{"function_id": second}]))
    refused = erin.post("/actions/v3/run", json=request)
    assert refused.status_code == 403 and "not allowed" in refused.json()["reason"]
    fixed = seen.request(dict(request, body=dict(request["body"], tasks=[{"function_id": first}])))
    assert seen.status(erin.post("/actions/v3/run", json=fixed), 202)["status"] == "INACTIVE"
    # Someone else's private endpoint and function are not there for bob.
    hidden = bob.post(
        "/actions/v3/run", json=action_request(reg["endpoint_id"], [{"function_id": first}])
    )
    assert hidden.status_code == 404, hidden.text


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        (lambda r: r["body"].pop("tasks"), 422, "body.tasks"),
        (lambda r: r["body"].update(tasks=[]), 422, "body.tasks"),
        (lambda r: r["body"].update(endpoint="x"), 422, "body.endpoint"),
        (lambda r: r["body"]["tasks"][0].update(args="notalist"), 422, "body.tasks.0.args"),
        (lambda r: r["body"]["tasks"][0].update(function_id="nope"), 422, "function_id"),
        (lambda r: r.update(monitor_by=["erin"]), 422, "monitor_by.0"),
        (lambda r: r.update(release_after="P1Y"), 422, "release_after"),
        (lambda r: r.update(request_id=""), 422, "request_id"),
        (lambda r: r.update(label="x" * 65), 422, "label"),
    ],
)
def test_bad_requests_say_what_is_wrong(people, setup, change, status, words):
    api = people["erin"]
    reg, (first, _second) = setup
    request = action_request(reg["endpoint_id"], [{"function_id": first}])
    change(request)
    answer = api.post("/actions/v3/run", json=request)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["reason"], answer.json()["reason"]


def test_tokens_and_odd_ids(api_service, people):
    api = people["erin"]
    client = api_service.add_client("frank@uni.edu")
    auth_only = api_service.token(client, scope="openid")
    with api_service.api(None) as anon, api_service.api(auth_only) as wrong:
        assert anon.post("/actions/v3/run", json={}).status_code == 401
        assert wrong.get(f"/actions/v3/{uuid.uuid4()}/status").status_code == 403
    for odd in ("not-a-uuid", "..%2f..%2fv2%2fversion", "x" * 300):
        answer = api.get(f"/actions/v3/{odd}/status")
        assert answer.status_code == 404, (odd, answer.text)
    assert api.post("/actions/v3/run", content=b"{not json").status_code == 422
    assert json.loads(api.get("/openapi.json").text)["paths"]["/actions/v3/run"]


def test_the_v2_input_runs_as_the_same_kind_of_action(people, setup, rabbit_vhost, seen):
    api = people["erin"]
    reg, (first, second) = setup
    with api.__class__(base_url=api.base_url) as anon:
        intro = anon.get("/actions/v2/").json()
    assert set(intro["input_schema"]["properties"]) >= {"endpoint", "function", "tasks"}
    assert_valid([["introspection", intro]])
    ep = reg["endpoint_id"]
    body = {
        "endpoint": ep,
        "function": first,
        "args": "one item",
        "tasks": [{"endpoint": ep, "function": second, "payload": {"k": 1}}],
    }
    request = {"request_id": str(uuid.uuid4()), "body": body}
    assert_valid([["request", request, intro["input_schema"]]])
    action = seen.status(api.post("/actions/v2/run", json=request), 202)
    assert seen.status(api.post("/actions/v2/run", json=request), 200) == action
    creds = user_endpoint_creds(rabbit_vhost, reg)
    connection = amqp.connect(rabbit_vhost)
    try:
        channel = connection.channel()
        sent = []
        for _ in range(2):
            _method, _props, raw = channel.basic_get(
                creds["task_queue_info"]["queue"], auto_ack=True
            )
            _fn, args, kwargs = serializer.unpack_task_buffer(messages.unpack(raw).task_buffer)
            sent.append((list(args), kwargs))
    finally:
        connection.close()
    assert sent == [(["one item"], {}), ([], {"k": 1})]
    v3_view = seen.status(api.get(f"/actions/v3/{action['action_id']}/status"))
    assert v3_view == seen.status(api.get(f"/actions/v2/{action['action_id']}/status"))
    other = str(uuid.uuid4())
    for bad, words in (
        (dict(body, tasks=[{"endpoint": other, "function": second}]), "same endpoint"),
        ({"endpoint": ep}, "go together"),
        ({"tasks": []}, "no call"),
        (dict(body, kwargs={}, payload={}), "not both"),
    ):
        answer = api.post("/actions/v2/run", json={"request_id": "x", "body": bad})
        assert answer.status_code == 422 and words in answer.json()["reason"], answer.text
