"""The web app's security through the real service and raw HTTP: sign-in, cookie flags,
CSRF refusals, the Content-Security-Policy, and 404 for anything of another identity.

Every request here is what a browser or an attacker's page could send; the
service is the real ``compute-service start`` subprocess on its own port.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from wire import serializer

CODE = serializer.pack_buffers([serializer.serialize(len)])
PAYLOAD = serializer.pack_buffers([serializer.serialize(("ab",)), serializer.serialize({})])
HOSTILE_NAME = "<img src=x onerror=alert(1)>"


def browser(service) -> httpx.Client:
    return httpx.Client(base_url=service.url, follow_redirects=False, timeout=30)


def login_nonce(client: httpx.Client) -> str:
    page = client.get("/app/login")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def sign_in(service, creds: dict) -> httpx.Client:
    client = browser(service)
    nonce = login_nonce(client)
    form = {"csrf": nonce, "client_id": creds["client_id"], "client_secret": creds["client_secret"]}
    answer = client.post("/app/login", data=form)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/app/endpoints"
    return client


def set_cookie(response: httpx.Response, name: str) -> str:
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return found[0]


def page_csrf(client: httpx.Client) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/app/endpoints").text).group(1)


@pytest.fixture(scope="module")
def people(api_service):
    """Alice with a public endpoint, a function with a hostile name and a task; Bob."""
    tag = uuid.uuid4().hex[:6]
    alice = api_service.add_client(f"alice-web-{tag}@uni.edu")
    bob = api_service.add_client(f"bob-web-{tag}@lab.org")
    with api_service.api(api_service.token(alice)) as api:
        endpoint = api.post("/v3/endpoints", json={"endpoint_name": "web", "public": True}).json()
        private = api.post("/v3/endpoints", json={"endpoint_name": "closed"}).json()
        function = api.post(
            "/v3/functions", json={"function_name": HOSTILE_NAME, "function_code": CODE}
        ).json()["function_uuid"]
        submitted = api.post(
            f"/v3/endpoints/{endpoint['endpoint_id']}/submit",
            json={"tasks": {function: [PAYLOAD]}},
        )
        assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["tasks"][function][0]
    return {
        "alice": alice,
        "bob": bob,
        "endpoint": endpoint["endpoint_id"],
        "private": private["endpoint_id"],
        "task": task_id,
    }


def test_sign_in_sets_an_httponly_strict_expiring_session_cookie(api_service, people):
    client = browser(api_service)
    nonce = login_nonce(client)
    answer = client.post(
        "/app/login",
        data={
            "csrf": nonce,
            "client_id": people["alice"]["client_id"],
            "client_secret": people["alice"]["client_secret"],
        },
    )
    assert answer.status_code == 303
    cookie = set_cookie(answer, "ca_session").lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/app" in cookie
    max_age = int(re.search(r"max-age=(\d+)", cookie).group(1))
    assert 0 < max_age <= 2 * 60 * 60
    assert "expires=" in cookie
    shown = client.get("/app/endpoints")
    assert shown.status_code == 200 and people["alice"]["client_id"] not in shown.text
    assert "alice-web-" in shown.text and people["endpoint"] in shown.text


def test_the_login_nonce_cookie_is_httponly_and_strict_too(api_service):
    cookie = set_cookie(browser(api_service).get("/app/login"), "ca_login").lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


@pytest.mark.parametrize("csrf", [None, "", "forged-by-another-site"])
def test_a_sign_in_without_the_forms_csrf_token_is_refused(api_service, people, csrf):
    client = browser(api_service)
    login_nonce(client)
    form = {
        "client_id": people["bob"]["client_id"],
        "client_secret": people["bob"]["client_secret"],
    }
    if csrf is not None:
        form["csrf"] = csrf
    answer = client.post("/app/login", data=form)
    assert answer.status_code == 403
    assert "expired" in answer.text and "Sign in" in answer.text
    assert not [h for h in answer.headers.get_list("set-cookie") if h.startswith("ca_session=")]
    assert "ca_session" not in client.cookies


def test_sign_out_needs_the_sessions_csrf_token_and_revokes_the_token(api_service, people):
    client = sign_in(api_service, people["alice"])
    session = client.cookies["ca_session"]
    assert client.post("/app/logout", data={"csrf": "guess"}).status_code == 403
    assert client.post("/app/logout", data={}).status_code == 403
    assert client.get("/app/tasks").status_code == 200, "a refused sign-out signs nothing out"
    out = client.post("/app/logout", data={"csrf": page_csrf(client)})
    assert out.status_code == 303 and out.headers["location"] == "/app/login"
    assert "max-age=0" in set_cookie(out, "ca_session").lower()
    stolen = browser(api_service)
    stolen.cookies.set("ca_session", session, path="/app")
    assert stolen.get("/app/tasks").headers["location"] == "/app/login"
    with api_service.api(session) as api:
        assert api.get("/v2/endpoints").status_code == 401, "the session's token is gone"


def test_another_sessions_csrf_token_does_not_sign_this_one_out(api_service, people):
    alice, bob = sign_in(api_service, people["alice"]), sign_in(api_service, people["bob"])
    assert alice.post("/app/logout", data={"csrf": page_csrf(bob)}).status_code == 403
    assert alice.get("/app/tasks").status_code == 200


def test_every_app_response_carries_the_content_security_policy(api_service, people):
    client = sign_in(api_service, people["alice"])
    paths = [
        "/app/login",
        "/app/endpoints",
        f"/app/endpoints/{people['endpoint']}",
        "/app/tasks",
        "/app/tasks.json",
        f"/app/tasks/{people['task']}",
        f"/app/tasks/{uuid.uuid4()}",
        "/app/static/app.js",
        "/app/static/app.css",
        "/app/static/missing.js",
    ]
    for path in paths:
        answer = client.get(path)
        csp = answer.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        if answer.headers.get("content-type", "").startswith("text/html"):
            scripts = re.findall(r"<script\b[^>]*>", answer.text)
            assert scripts and all('src="/app/static/' in s for s in scripts), path
            assert " style=" not in answer.text, path
            assert not re.search(r"<[^>]+\son[a-z]+=", answer.text), f"inline handler in {path}"


def test_anothers_task_is_404_exactly_like_a_missing_one(api_service, people):
    alice, bob = sign_in(api_service, people["alice"]), sign_in(api_service, people["bob"])
    theirs = bob.get(f"/app/tasks/{people['task']}")
    missing = bob.get(f"/app/tasks/{uuid.uuid4()}")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text == missing.text
    assert people["task"] not in bob.get("/app/tasks").text
    assert bob.get("/app/tasks.json").json()["tasks"] == []
    mine = alice.get(f"/app/tasks/{people['task']}")
    assert mine.status_code == 200 and people["task"] in mine.text
    with api_service.api(api_service.token(people["bob"])) as script:
        assert script.get(f"/app/tasks/{people['task']}").status_code == 404
    assert bob.get("/app/tasks/not-a-uuid").status_code == 404


def test_user_endpoints_show_only_to_their_identity_and_the_endpoints_admins(api_service, people):
    alice, bob = sign_in(api_service, people["alice"]), sign_in(api_service, people["bob"])
    path = f"/app/endpoints/{people['endpoint']}"
    owner_view, stranger_view = alice.get(path).text, bob.get(path)
    assert stranger_view.status_code == 200, "the endpoint is public"
    assert "uep." in owner_view and "uep." not in stranger_view.text
    assert "Local account" in owner_view and "Local account" not in stranger_view.text
    assert bob.get(f"/app/endpoints/{people['private']}").status_code == 404
    assert people["private"] not in bob.get("/app/endpoints").text
    assert alice.get(f"/app/endpoints/{people['private']}").status_code == 200


def test_text_from_the_network_is_escaped(api_service, people):
    alice = sign_in(api_service, people["alice"])
    listed = alice.get("/app/tasks").text
    assert HOSTILE_NAME not in listed and "&lt;img src=x onerror=alert(1)&gt;" in listed
    assert alice.get("/app/tasks.json").json()["tasks"][0]["function"] == HOSTILE_NAME
    bad = alice.get("/app/tasks", params={"status": "<script>x</script>"})
    assert bad.status_code == 400 and "<script>x" not in bad.text and "unknown status" in bad.text
    assert alice.get("/app/tasks", params={"endpoint": "x'"}).status_code == 400


def test_bearer_tokens_work_for_scripts_and_nothing_answers_without_one(api_service, people):
    anonymous = browser(api_service)
    assert anonymous.get("/app/tasks").headers["location"] == "/app/login"
    assert anonymous.get("/app/tasks.json").status_code == 401
    with api_service.api(api_service.token(people["alice"])) as script:
        rows = script.get("/app/tasks.json", params={"status": "pending"}).json()["tasks"]
        assert [r["id"] for r in rows] == [people["task"]]
        assert script.get("/app/tasks.json", params={"status": "success"}).json()["tasks"] == []
    with api_service.api("not-a-token") as forged:
        answer = forged.get("/app/tasks")
        assert answer.status_code == 401 and answer.json()["http_status_code"] == 401


def test_failed_sign_ins_go_through_the_login_limits(start_service, rabbit_vhost, tmp_path):
    svc = start_service(
        f"sqlite:///{tmp_path / 'limits.db'}",
        rabbit_vhost,
        "--amqp-prefix",
        "weblimits.",
        "--login-failures-per-client",
        "2",
        "--login-failure-window",
        "120",
    )
    creds = svc.add_client("limited@uni.edu")
    client = browser(svc)
    nonce = login_nonce(client)
    wrong = {"csrf": nonce, "client_id": creds["client_id"], "client_secret": "guess"}
    for _ in range(2):
        answer = client.post("/app/login", data=wrong)
        assert answer.status_code == 401 and "do not match" in answer.text
    right = {**wrong, "client_secret": creds["client_secret"]}
    locked = client.post("/app/login", data=right)
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.text
    assert 1 <= int(locked.headers["retry-after"]) <= 120
    token = httpx.post(
        f"{svc.url}/v2/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(creds["client_id"], creds["client_secret"]),
    )
    assert token.status_code == 429, "the token route and the sign-in page share one limit"
    assert "further attempts wait" in svc.log()


def test_a_link_from_another_site_does_not_sign_anyone_out(api_service, people):
    """A cross-site navigation arrives without the SameSite=Strict cookie: it is sent to
    sign in, but no Set-Cookie deletes the session the browser still holds."""
    stranger_link = browser(api_service).get(f"/app/tasks/{people['task']}")
    assert stranger_link.status_code == 303
    assert stranger_link.headers["location"] == "/app/login"
    assert not [
        h for h in stranger_link.headers.get_list("set-cookie") if h.startswith("ca_session=")
    ]
    refused = browser(api_service)
    refused.cookies.set("ca_session", "revoked-or-made-up", path="/app")
    answer = refused.get("/app/tasks")
    assert answer.status_code == 303
    assert "max-age=0" in set_cookie(answer, "ca_session").lower()
