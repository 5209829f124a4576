"""Auth through the real service: missing, bad, expired and misdirected tokens,
other people's objects. Every refusal is a 401/403/404 in the official error
shape, never a 500, and never looks like a Globus Auth login requirement."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid

import httpx
import pytest

from wire import serializer

AUTH_SCOPE = "openid urn:globus:auth:scope:auth.globus.org:manage_projects"
COMPUTE_SCOPE = "https://auth.globus.org/scopes/facd7ccc-c5f4-42aa-916b-a0e270e2c2a9/all"


def fn_code() -> str:
    return serializer.pack_buffers([serializer.serialize(len)])


def payload(*args) -> str:
    return serializer.pack_buffers([serializer.serialize(args), serializer.serialize({})])


@pytest.fixture(scope="module")
def people(api_service):
    alice = api_service.add_client("alice-auth@uni.edu")
    bob = api_service.add_client("bob-auth@lab.org")
    return {
        "alice": api_service.api(api_service.token(alice)),
        "bob": api_service.api(api_service.token(bob)),
        "alice_client": alice,
    }


def assert_refused(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["http_status_code"] == status and body["reason"]
    assert "authorization_parameters" not in body
    return body


PROTECTED = [
    ("GET", "/v2/endpoints"),
    ("GET", f"/v2/tasks/{uuid.uuid4()}"),
    ("POST", "/v2/batch_status"),
    ("POST", "/v3/functions"),
    ("POST", "/v3/endpoints"),
    ("POST", f"/v3/endpoints/{uuid.uuid4()}/submit"),
    ("GET", "/v2/get_amqp_result_connection_url"),
    ("GET", f"/v2/taskgroup/{uuid.uuid4()}"),
    ("GET", "/v2/oauth2/userinfo"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_token_and_bad_token_are_401(api_service, method, path):
    with api_service.api(None) as api:
        body = assert_refused(api.request(method, path, json={}), 401)
        assert "bearer token" in body["reason"]
    with api_service.api("not-a-token") as api:
        assert_refused(api.request(method, path, json={}), 401)


def test_basic_auth_header_is_not_a_bearer_token(api_service):
    response = httpx.get(f"{api_service.url}/v2/endpoints", auth=("user", "pw"))
    assert_refused(response, 401)


def test_expired_token_is_401(api_service, people):
    token = api_service.token(people["alice_client"])
    with api_service.api(token) as api:
        assert api.get("/v2/endpoints").status_code == 200
        digest = hashlib.sha256(token.encode()).hexdigest()
        db = api_service.db_url.removeprefix("sqlite:///")
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE tokens SET expires_at = 0 WHERE token_hash = ?", (digest,))
        body = assert_refused(api.get("/v2/endpoints"), 401)
        assert "expired" in body["reason"]


def test_auth_token_is_forbidden_on_compute_routes(api_service, people):
    response = httpx.post(
        f"{api_service.url}/v2/oauth2/token",
        data={"grant_type": "client_credentials", "scope": AUTH_SCOPE},
        auth=(people["alice_client"]["client_id"], people["alice_client"]["client_secret"]),
    )
    doc = response.json()
    assert doc["resource_server"] == "auth.globus.org" and doc["other_tokens"] == []
    with api_service.api(doc["access_token"]) as api:
        assert_refused(api.get("/v2/endpoints"), 403)
        assert api.get("/v2/oauth2/userinfo").json()["sub"] == people["alice_client"]["identity_id"]


def test_token_route_refusals(api_service, people):
    url = f"{api_service.url}/v2/oauth2/token"
    client = people["alice_client"]
    grant = {"grant_type": "client_credentials", "scope": COMPUTE_SCOPE}
    wrong = httpx.post(url, data=grant, auth=(client["client_id"], "wrong-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    unknown = httpx.post(url, data=grant, auth=(str(uuid.uuid4()), "x"))
    assert unknown.status_code == 401
    garbage = httpx.post(url, data=grant, auth=("not-a-uuid", "x"))
    assert garbage.status_code == 401
    no_auth = httpx.post(url, data=grant)
    assert no_auth.status_code == 401
    creds = (client["client_id"], client["client_secret"])
    bad_grant = httpx.post(url, data={**grant, "grant_type": "password"}, auth=creds)
    assert bad_grant.status_code == 400
    bad_scope = httpx.post(url, data={**grant, "scope": "https://example.org/x"}, auth=creds)
    assert bad_scope.status_code == 403
    both = httpx.post(url, data={**grant, "scope": f"{COMPUTE_SCOPE} {AUTH_SCOPE}"}, auth=creds)
    doc = both.json()
    assert doc["resource_server"] == "funcx_service"
    assert [t["resource_server"] for t in doc["other_tokens"]] == ["auth.globus.org"]


def test_other_peoples_things(api_service, people):
    alice, bob = people["alice"], people["bob"]
    private = alice.post("/v3/endpoints", json={"endpoint_name": "private"}).json()["endpoint_id"]
    public = alice.post("/v3/endpoints", json={"endpoint_name": "pub", "public": True}).json()
    public = public["endpoint_id"]
    fn = alice.post("/v3/functions", json={"function_name": "len", "function_code": fn_code()})
    fid = fn.json()["function_uuid"]
    submitted = alice.post(
        f"/v3/endpoints/{private}/submit", json={"tasks": {fid: [payload("ab")]}}
    )
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["tasks"][fid][0]
    tg = submitted.json()["task_group_id"]
    assert alice.get(f"/v2/tasks/{task_id}").json()["status"] == "waiting-for-ep"

    assert_refused(bob.get(f"/v2/tasks/{task_id}"), 404)
    assert bob.post("/v2/batch_status", json={"task_ids": [task_id]}).json()["results"] == {}
    assert_refused(bob.get(f"/v2/taskgroup/{tg}"), 404)
    assert_refused(bob.get(f"/v2/endpoints/{private}"), 404)
    assert_refused(bob.get(f"/v2/endpoints/{private}/status"), 404)
    assert_refused(bob.put(f"/v3/endpoints/{private}", json={"endpoint_name": "mine"}), 403)
    assert_refused(bob.delete(f"/v2/endpoints/{private}"), 404)
    assert_refused(bob.delete(f"/v2/endpoints/{public}"), 403)
    assert_refused(bob.get(f"/v2/functions/{fid}"), 404)
    bob_fid = bob.post("/v3/functions", json={"function_name": "len", "function_code": fn_code()})
    bob_fid = bob_fid.json()["function_uuid"]
    assert_refused(
        bob.post(f"/v3/endpoints/{private}/submit", json={"tasks": {bob_fid: [payload()]}}), 404
    )
    assert_refused(
        bob.post(f"/v3/endpoints/{public}/submit", json={"tasks": {fid: [payload()]}}), 404
    )
    reuse = {"tasks": {bob_fid: [payload("x")]}, "task_group_id": tg}
    assert_refused(bob.post(f"/v3/endpoints/{public}/submit", json=reuse), 404)
    ok = bob.post(f"/v3/endpoints/{public}/submit", json={"tasks": {bob_fid: [payload("x")]}})
    assert ok.status_code == 200, ok.text
    listed = {e["uuid"] for e in bob.get("/v2/endpoints").json()}
    assert public in listed and private not in listed
    assert bob.get("/v2/endpoints", params={"role": "owner"}).json() == []


def test_removed_client_loses_its_tokens(api_service):
    from tests.fixtures_service import service_cli

    carol = api_service.add_client("carol@uni.edu")
    with api_service.api(api_service.token(carol)) as api:
        assert api.get("/v2/endpoints").status_code == 200
        done = service_cli("client", "remove", carol["client_id"], "--db", api_service.db_url)
        assert done.returncode == 0, done.stderr
        assert_refused(api.get("/v2/endpoints"), 401)
    again = service_cli("client", "remove", carol["client_id"], "--db", api_service.db_url)
    assert again.returncode == 1 and "no client" in again.stderr
