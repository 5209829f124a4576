"""Who may use an endpoint, through the real service: admins, public, policies, allowed functions."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from wire import serializer

CODE = serializer.pack_buffers([serializer.serialize(len)])
PAYLOAD = serializer.pack_buffers([serializer.serialize(("ab",)), serializer.serialize({})])


@pytest.fixture
def people(api_service):
    """An owner, an admin of the owner's endpoints, a stranger; each with a token."""
    tag = uuid.uuid4().hex[:6]
    made = {
        "owner": api_service.add_client(f"olga-{tag}@uni.edu"),
        "admin": api_service.add_client(f"adam-{tag}@uni.edu", f"adam-{tag}@lab.org"),
        "stranger": api_service.add_client(f"sam-{tag}@evil.org"),
    }
    apis = {k: api_service.api(api_service.token(c)) for k, c in made.items()}
    yield made, apis
    for api in apis.values():
        api.close()


def _function(api) -> str:
    response = api.post("/v3/functions", json={"function_name": "f", "function_code": CODE})
    return response.json()["function_uuid"]


def _submit(api, endpoint_id: str, fid: str):
    return api.post(f"/v3/endpoints/{endpoint_id}/submit", json={"tasks": {fid: [PAYLOAD]}})


def test_admins_manage_a_private_endpoint_strangers_never_see_it(people):
    clients, api = people
    reg = (
        api["owner"]
        .post(
            "/v3/endpoints",
            json={
                "endpoint_name": "p",
                "public": False,
                "admins": [clients["admin"]["identity_id"]],
            },
        )
        .json()
    )
    ep = reg["endpoint_id"]
    assert api["admin"].get(f"/v2/endpoints/{ep}").json()["admins"] == [
        clients["admin"]["identity_id"]
    ]
    assert api["stranger"].get(f"/v2/endpoints/{ep}").status_code == 404
    assert _submit(api["stranger"], ep, _function(api["stranger"])).status_code == 404
    assert _submit(api["admin"], ep, _function(api["admin"])).status_code == 200
    route = f"/v3/endpoints/{ep}/allowed_functions"
    fid = _function(api["owner"])
    put = api["admin"].put(route, json={"functions": [fid, fid]})
    assert put.json() == {"endpoint_id": ep, "restricted": True, "functions": [fid]}
    assert api["stranger"].put(route, json={"functions": []}).status_code == 404
    assert api["owner"].get(route).json()["functions"] == [fid]
    # Re-registering hands out the manager's broker account: the owner only.
    again = api["admin"].put(f"/v3/endpoints/{ep}", json={"endpoint_name": "p"})
    assert again.status_code == 403
    assert ep not in [e["uuid"] for e in api["stranger"].get("/v2/endpoints").json()]
    assert ep in [e["uuid"] for e in api["admin"].get("/v2/endpoints").json()]


def test_allowed_functions_are_enforced_at_submit(people):
    _clients, api = people
    reg = api["owner"].post("/v3/endpoints", json={"endpoint_name": "a", "public": True}).json()
    ep = reg["endpoint_id"]
    ok, other = _function(api["owner"]), _function(api["stranger"])
    route = f"/v3/endpoints/{ep}/allowed_functions"
    assert api["stranger"].get(route).json() == {
        "endpoint_id": ep,
        "restricted": False,
        "functions": [],
    }
    api["owner"].put(route, json={"functions": [ok]})
    assert _submit(api["owner"], ep, ok).status_code == 200
    refused = _submit(api["stranger"], ep, other)
    body = refused.json()
    assert refused.status_code == 403 and body["code"] == "FUNCTION_NOT_PERMITTED"
    assert other in body["reason"] and body["http_status_code"] == 403
    bad = api["owner"].put(route, json={"functions": ["not-a-uuid"]})
    assert bad.status_code == 422 and "functions" in bad.json()["reason"]


def _policy(service_cli, api_service, *args: str) -> str:
    done = service_cli("policy", "add", "--name", "p", *args, "--db", api_service.db_url)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["id"]


def test_an_authentication_policy_decides_who_may_submit(people, service_cli, api_service):
    _clients, api = people
    unknown = str(uuid.uuid4())
    refused = api["owner"].post(
        "/v3/endpoints",
        json={"endpoint_name": "x", "public": True, "authentication_policy": unknown},
    )
    assert refused.status_code == 400 and "policy add" in refused.json()["reason"]
    policy = _policy(service_cli, api_service, "--include-domain", "lab.org")
    reg = (
        api["owner"]
        .post(
            "/v3/endpoints",
            json={"endpoint_name": "x", "public": True, "authentication_policy": policy},
        )
        .json()
    )
    ep = reg["endpoint_id"]
    assert api["owner"].get(f"/v2/endpoints/{ep}").json()["authentication_policy"] == policy
    denied = _submit(api["stranger"], ep, _function(api["stranger"]))
    assert denied.status_code == 403
    assert denied.json()["code"] == "AUTH_POLICY_NOT_SATISFIED" and "lab.org" in denied.text
    # The admin's linked identity is from lab.org: that satisfies the policy.
    assert _submit(api["admin"], ep, _function(api["admin"])).status_code == 200
    listed = service_cli("policy", "list", "--db", api_service.db_url)
    assert policy in listed.stdout
    in_use = service_cli("policy", "remove", policy, "--db", api_service.db_url)
    assert in_use.returncode == 1 and ep in in_use.stderr


def test_a_high_assurance_policy_wants_a_recent_token(people, service_cli, api_service):
    clients, api = people
    policy = _policy(service_cli, api_service, "--high-assurance", "--timeout", "1")
    reg = (
        api["owner"]
        .post(
            "/v3/endpoints",
            json={"endpoint_name": "ha", "public": True, "authentication_policy": policy},
        )
        .json()
    )
    fid = _function(api["owner"])
    time.sleep(1.5)
    stale = _submit(api["owner"], reg["endpoint_id"], fid)
    assert stale.status_code == 403 and "new access token" in stale.json()["reason"]
    with api_service.api(api_service.token(clients["owner"])) as fresh:
        assert _submit(fresh, reg["endpoint_id"], fid).status_code == 200
