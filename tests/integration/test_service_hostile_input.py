"""Hostile request bodies through the real service: clear refusals, never a 500.

Deep nesting, NUL characters (PostgreSQL cannot store them), bodies that are
not UTF-8, bodies and submits too big: each gets an error in the official
shape naming what is wrong, and the service goes on serving.
"""

from __future__ import annotations

import http.client
import json
import uuid

import pytest

from service.request_limits import MAX_BODY_BYTES, MAX_DEPTH, json_problem
from service.routes_tasks import MAX_TASKS_PER_SUBMIT
from wire import serializer

CODE = serializer.pack_buffers([serializer.serialize(len)])
PAYLOAD = serializer.pack_buffers([serializer.serialize(("x",)), serializer.serialize({})])


@pytest.fixture(scope="module")
def api(api_service):
    client = api_service.add_client(f"mal-{uuid.uuid4().hex[:6]}@uni.edu")
    with api_service.api(api_service.token(client)) as api:
        api.endpoint_id = api.post("/v3/endpoints", json={"endpoint_name": "h"}).json()[
            "endpoint_id"
        ]
        fid = api.post("/v3/functions", json={"function_name": "f", "function_code": CODE})
        api.function_id = fid.json()["function_uuid"]
        yield api


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def refused(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["http_status_code"] == status and body["code"] and body["reason"]
    for fragment in fragments:
        assert fragment in body["reason"], body["reason"]


def test_deep_nesting_anywhere_is_refused_by_name(api):
    submit = f"/v3/endpoints/{api.endpoint_id}/submit"
    body = {"tasks": {api.function_id: [PAYLOAD]}, "user_endpoint_config": nested(MAX_DEPTH + 5)}
    refused(api.post(submit, json=body), 400, "user_endpoint_config.a.a", "levels deep")
    raw = "[" * 50_000 + "]" * 50_000
    headers = {"content-type": "application/json"}
    refused(api.post("/v3/functions", content=raw, headers=headers), 400, "levels deep")
    ok = {"tasks": {api.function_id: [PAYLOAD]}, "user_endpoint_config": nested(10)}
    assert api.post(submit, json=ok).status_code == 200


@pytest.mark.parametrize(
    ("route", "body", "where"),
    [
        ("/v3/functions", {"function_name": "a\x00b", "function_code": CODE}, "function_name"),
        ("/v3/endpoints", {"endpoint_name": "e", "metadata": {"k\x00": 1}}, "a key in metadata"),
        ("/v3/endpoints", {"endpoint_name": "e", "metadata": {"k": ["\x00"]}}, "metadata.k[0]"),
    ],
)
def test_nul_characters_are_refused_by_name(api, route, body, where):
    refused(api.post(route, json=body), 400, where, "NUL")


def test_nul_in_a_payload_or_option_is_refused(api):
    submit = f"/v3/endpoints/{api.endpoint_id}/submit"
    bad_payload = {"tasks": {api.function_id: [PAYLOAD + "\x00"]}}
    refused(api.post(submit, json=bad_payload), 400, f"tasks.{api.function_id}[0]", "NUL")
    bad_option = {"tasks": {api.function_id: [PAYLOAD]}, "user_endpoint_config": {"x": "\x00"}}
    refused(api.post(submit, json=bad_option), 400, "user_endpoint_config.x")


def test_bodies_that_are_not_utf8_are_refused(api):
    headers = {"content-type": "application/json"}
    refused(api.post("/v3/functions", content=b'{"a": "\xff\xfe"}', headers=headers), 400, "UTF-8")


def test_too_many_tasks_in_one_submit_is_413(api):
    body = {"tasks": {api.function_id: [PAYLOAD] * (MAX_TASKS_PER_SUBMIT + 1)}}
    refused(api.post(f"/v3/endpoints/{api.endpoint_id}/submit", json=body), 413, "at most")


def test_a_body_declared_too_big_is_413_before_it_is_read(api_service):
    connection = http.client.HTTPConnection("127.0.0.1", api_service.port, timeout=30)
    try:
        connection.putrequest("POST", "/v3/functions")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        connection.endheaders()
        connection.send(b"{}")
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413 and body["code"] == "PAYLOAD_TOO_LARGE"
    assert "MiB" in body["reason"]


def test_a_chunked_body_that_grows_too_big_is_413(api_service):
    connection = http.client.HTTPConnection("127.0.0.1", api_service.port, timeout=60)
    chunk = b"x" * (8 << 20)
    try:
        connection.putrequest("POST", "/v3/functions")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        try:
            for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service answered and closed before we finished
        response = connection.getresponse()
        status = response.status
    finally:
        connection.close()
    assert status == 413


def test_the_service_serves_on(api):
    assert api.get("/v2/version").status_code == 200


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", None),
        (b'{"a": 1}', None),
        (b"not json", None),  # FastAPI names the field it expected
        (b'{"a": "\\u0000"}', "a holds a NUL character"),
        (b'{"a": "\\\\u0000"}', None),  # a backslash and "u0000": ordinary text
        (b'{"\\u0000": 1}', "a key in the request body"),
        (b"[" * 70 + b"]" * 70, "nests more than 64"),
        (b'"\xc3\x28"', "not UTF-8"),
    ],
)
def test_json_problem(raw, problem):
    found = json_problem(raw)
    assert (found is None) if problem is None else (problem in found), found
