"""The token route: no hashing on the event loop, no timing tell for unknown ids, limited guessing.

Through real services (their own instances, so limits set for a test touch no
other test) and the real store.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import time
import uuid

import httpx
import pytest

from service import auth, store
from tests.fixtures_service import COMPUTE_SCOPE


def ask(url: str, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v2/oauth2/token",
        data={"grant_type": "client_credentials", "scope": COMPUTE_SCOPE},
        auth=(client_id, secret),
        timeout=60,
    )


def test_an_unknown_client_id_costs_the_same_hashing_as_a_known_one(tmp_path, monkeypatch):
    sessions = store.open_database(f"sqlite:///{tmp_path / 'auth.db'}")
    with sessions.begin() as s:
        client, _secret = auth.add_client(s, "timing@uni.edu", [], None)
        known = client.client_id
    auth._decoy_hash()  # made once per process, before any request
    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(1) or real(*a, **k))
    for client_id in (known, str(uuid.uuid4()), "not-even-a-uuid"):
        calls.clear()
        with sessions.begin() as s, pytest.raises(auth.AuthError):
            auth.authenticate_client(s, client_id, "wrong secret")
        assert len(calls) == 1, f"{client_id}: {len(calls)} hashes"
    store.dispose(sessions)


def test_hashing_secrets_does_not_hold_up_other_requests(start_service, rabbit_vhost, tmp_path):
    svc = start_service(f"sqlite:///{tmp_path / 'busy.db'}", rabbit_vhost)
    client = svc.add_client("busy@uni.edu")
    finished: list[str] = []

    def token(n: int) -> None:
        assert ask(svc.url, client["client_id"], client["client_secret"]).status_code == 200
        finished.append(f"token {n}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        tokens = [pool.submit(token, n) for n in range(16)]
        time.sleep(0.1)  # the token requests are in (on the old code: the loop is busy)
        assert httpx.get(f"{svc.url}/v2/version", timeout=60).status_code == 200
        finished.append("version")
        for future in tokens:
            future.result()
    assert finished.index("version") < 12, finished


def test_wrong_secrets_are_limited_per_client_id_and_per_address(
    start_service, rabbit_vhost, tmp_path
):
    svc = start_service(
        f"sqlite:///{tmp_path / 'limits.db'}",
        rabbit_vhost,
        "--login-failures-per-client",
        "3",
        "--login-failures-per-address",
        "6",
        "--login-failure-window",
        "120",
    )
    guessed, other = svc.add_client("guessed@uni.edu"), svc.add_client("other@uni.edu")
    for _ in range(3):
        assert ask(svc.url, guessed["client_id"], "guess").status_code == 401
    locked = ask(svc.url, guessed["client_id"], guessed["client_secret"])
    assert locked.status_code == 429, "even the right secret waits once the id is locked"
    body = locked.json()
    assert body["error"] == "too_many_requests" and body["errors"][0]["status"] == "429"
    assert 1 <= int(locked.headers["Retry-After"]) <= 120
    assert ask(svc.url, other["client_id"], other["client_secret"]).status_code == 200
    for _ in range(3):  # random ids from the same address: the address's limit
        assert ask(svc.url, str(uuid.uuid4()), "guess").status_code == 401
    assert ask(svc.url, other["client_id"], other["client_secret"]).status_code == 429
    assert "wrong secrets" in svc.log() and "further attempts wait" in svc.log()
