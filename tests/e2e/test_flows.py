"""The Flows action provider end to end: official SDK, our service, a root manager, real users.

The researcher registers functions with the unmodified official SDK; the test
then plays the Globus Flows service: it calls ``/actions/v3`` with the
researcher's token, polls ``status`` with backoff and releases finished
actions. Tasks run on a multi-user endpoint started as root, as the
researcher's own local account. Every document exchanged is checked with the
official globus-action-provider-tools models and schemas.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid

import pytest

from tests.action_docs import assert_valid
from tests.e2e.appliance import local_accounts, running_manager, submit, user_endpoint_logs
from tests.fixtures_service import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the flows test creates local users")

TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: 4
idle_heartbeats_hard: 60
engine:
  type: ThreadPoolEngine
  max_workers: 1
# label {{ label }} only has to render
"""
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"label": {"type": "string", "pattern": "^[a-z0-9-]+$"}},
    "additionalProperties": False,
}
FUNCTIONS = REPO / "tests" / "e2e" / "flows_functions.py"
README = REPO / "README.md"


@pytest.fixture(scope="module")
def flows(compute_service, tmp_path_factory):
    """A manager mapping alice to a local account, the functions she and bob registered,
    and tokens for both (bob is known to the service but maps to no local account)."""
    with local_accounts(1, "flows") as (users, _group):
        (alice,) = users
        root = tmp_path_factory.mktemp("flows")
        routes = {"alice@uni.edu": alice.pw_name}
        with running_manager(
            compute_service, root, routes, TEMPLATE, SCHEMA, ("bob@lab.org",)
        ) as mgr:
            functions = {
                who: submit(mgr, who, FUNCTIONS, user_dir=root / f"sdk-{who}")
                for who in ("alice", "bob")
            }
            tokens = {who: compute_service.token(c) for who, c in mgr.clients.items()}
            yield Flows(compute_service, mgr, alice, functions, tokens)


class Flows:
    """Plays the Flows service's part against our action provider."""

    def __init__(self, service, mgr, account, functions: dict, tokens: dict) -> None:
        self.service, self.mgr, self.account = service, mgr, account
        self.all_functions, self.tokens = functions, tokens
        self.functions = functions["alice"]
        self.url = f"{service.url}/actions/v3"
        self.seen: list[list] = []
        with service.api(None) as anon:
            self.schema = anon.get(self.url + "/").json()["input_schema"]

    def api(self, who: str = "alice"):
        return self.service.api(self.tokens[who])

    def body(self, *tasks: dict) -> dict:
        return {
            "endpoint_id": self.mgr.id,
            "tasks": list(tasks),
            "user_endpoint_config": {"label": "flows"},
        }

    def run(self, body: dict, who: str = "alice", request_id: str | None = None, **extra) -> dict:
        request = {"request_id": request_id or str(uuid.uuid4()), "body": body, **extra}
        self.seen.append(["request", request, self.schema])
        with self.api(who) as api:
            answer = api.post(self.url + "/run", json=request)
        assert answer.status_code in (200, 202), answer.text
        return self.keep(answer.json())

    def keep(self, doc: dict) -> dict:
        self.seen.append(["status", doc])
        return doc

    def call(self, verb: str, action_id: str, who: str = "alice"):
        with self.api(who) as api:
            if verb == "status":
                return api.get(f"{self.url}/{action_id}/status")
            return api.post(f"{self.url}/{action_id}/{verb}")

    def wait(self, action: dict, wait_time_s: float = 150, who: str = "alice") -> dict:
        """Poll ``status`` as Flows does: quickly at first, then backing off to 5 s."""
        delay, deadline = 0.25, time.monotonic() + wait_time_s
        while action["status"] in ("ACTIVE", "INACTIVE"):
            assert time.monotonic() < deadline, (
                f"action still {action['status']} after {wait_time_s} s: {action}"
                + user_endpoint_logs(self.mgr)
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            answer = self.call("status", action["action_id"], who)
            assert answer.status_code == 200, answer.text
            action = self.keep(answer.json())
        return action

    def release(self, action: dict) -> dict:
        answer = self.call("release", action["action_id"])
        assert answer.status_code == 200, answer.text
        return self.keep(answer.json())


@pytest.fixture
def flow(flows):
    """The module's Flows player; the documents each test exchanged are checked at its end."""
    flows.seen = []
    yield flows
    assert_valid(flows.seen)


def task(flow: Flows, name: str, *args, **kwargs) -> dict:
    return {"function_id": flow.functions[name], "args": list(args), "kwargs": kwargs}


def test_run_status_until_succeeded_then_release(flow):
    action = flow.run(flow.body(task(flow, "square", 12), task(flow, "whoami")))
    done = flow.wait(action)
    assert done["status"] == "SUCCEEDED", done
    square, me = done["details"]["result"]
    assert square == 144
    assert me == {"user": flow.account.pw_name, "uid": flow.account.pw_uid}
    with flow.api() as api:
        for entry in done["details"]["results"]:
            assert api.get(f"/v2/tasks/{entry['task_id']}").json()["status"] == "success"
    assert flow.release(done) == done
    assert flow.call("status", done["action_id"]).status_code == 404


def test_a_failing_function_fails_the_action_with_its_error(flow):
    done = flow.wait(flow.run(flow.body(task(flow, "fails", "no luck"))))
    assert done["status"] == "FAILED", done
    assert done["details"]["code"] == "TaskExecutionFailed"
    assert "RuntimeError: raised by the flow's function: no luck" in done["details"]["description"]
    assert done["details"]["result"] == [None]
    flow.release(done)


def test_a_retried_run_creates_no_new_tasks(flow):
    body = flow.body(task(flow, "square", 3))
    request_id = str(uuid.uuid4())
    first = flow.run(body, request_id=request_id)
    again = flow.run(body, request_id=request_id)
    assert again["action_id"] == first["action_id"]
    done = flow.wait(again)
    assert done["details"]["result"] == [9]
    assert flow.run(body, request_id=request_id) == done
    [only] = [r["task_id"] for r in done["details"]["results"]]
    with flow.api() as api:
        group = api.get(f"/v2/tasks/{only}").json()["task_group_id"]
        tasks = api.get(f"/v2/taskgroup/{group}").json()["tasks"]
    assert [t["id"] for t in tasks] == [only]
    flow.release(done)


def test_another_identity_cannot_see_or_touch_the_action(flow):
    action = flow.run(flow.body(task(flow, "square", 5)))
    for verb in ("status", "cancel", "release"):
        answer = flow.call(verb, action["action_id"], who="bob")
        assert answer.status_code == 404, (verb, answer.text)
    done = flow.wait(action)
    assert done["details"]["result"] == [25], "bob's attempts changed nothing"
    flow.release(done)


def test_cancel_and_release_of_a_running_action(flow):
    """A cancelled action is FAILED at once and can be released; one still running cannot."""
    running = flow.run(flow.body(task(flow, "napper", 10)))
    early = flow.call("release", running["action_id"])
    assert early.status_code == 409 and "still ACTIVE" in early.json()["reason"]
    cancelled = flow.keep(flow.call("cancel", running["action_id"]).json())
    assert cancelled["status"] == "FAILED" and cancelled["details"]["code"] == "ActionCanceled"
    assert flow.release(cancelled)["action_id"] == running["action_id"]
    assert flow.call("status", running["action_id"]).status_code == 404


def test_the_endpoint_identity_mapping_decides_as_for_any_submit(flow):
    """Bob may use the endpoint, but the manager maps him to no account: his action fails
    with the manager's reason, and alice's endpoint keeps serving."""
    square = {"function_id": flow.all_functions["bob"]["square"], "args": [2]}
    done = flow.wait(flow.run(flow.body(square), who="bob"), who="bob")
    assert done["status"] == "FAILED", done
    assert "failed to map to a local user" in done["details"]["description"]
    assert flow.call("status", done["action_id"]).status_code == 404, "alice cannot see it"
    assert flow.mgr.process.poll() is None
    assert flow.wait(flow.run(flow.body(task(flow, "square", 4))))["details"]["result"] == [16]


def readme_flow() -> dict:
    """The example flow definition as the README shows it."""
    text = README.read_text()
    block = text.split("<!-- example-flow-definition -->", 1)[1]
    return json.loads(block.split("```json", 1)[1].split("```", 1)[0])


_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def json_path(document: dict, path: str):
    """The small JSONPath subset flow definitions use here: ``$.a.b[0]``."""
    assert path.startswith("$"), path
    value = document
    for name, index in _STEP.findall(path[1:]):
        value = value[name] if name else value[int(index)]
    return value


def resolve(parameters, state: dict):
    """Flows' Parameters: a key ending in ``.$`` takes the value at its JSONPath."""
    if isinstance(parameters, dict):
        out = {}
        for key, value in parameters.items():
            if key.endswith(".$"):
                out[key[:-2]] = json_path(state, value)
            else:
                out[key] = resolve(value, state)
        return out
    if isinstance(parameters, list):
        return [resolve(item, state) for item in parameters]
    return parameters


def play(flow: Flows, definition: dict, flow_input: dict) -> dict:
    """Run ``definition`` as Flows would: each Action state runs, is polled until it
    completes, is released, and its status lands at its ResultPath."""
    state, name = dict(flow_input), definition["StartAt"]
    while True:
        step = definition["States"][name]
        assert step["Type"] == "Action", step
        assert step["ActionUrl"].endswith("/actions/v3"), step["ActionUrl"]
        done = flow.wait(flow.run(resolve(step["Parameters"], state)), step["WaitTime"])
        assert done["status"] == "SUCCEEDED", (name, done)
        flow.release(done)
        state[step["ResultPath"].removeprefix("$.")] = done
        if step.get("End"):
            return state
        name = step["Next"]


def test_the_readme_flow_runs_two_functions_in_sequence(flow):
    definition = readme_flow()
    flow_input = {
        "endpoint_id": flow.mgr.id,
        "square_function": flow.functions["square"],
        "describe_function": flow.functions["describe"],
        "user_endpoint_config": {"label": "flows"},
        "x": 7,
    }
    final = play(flow, definition, flow_input)
    assert final["SquareResult"]["details"]["result"] == [49]
    assert final["DescribeResult"]["details"]["result"] == ["49 square metres"]
