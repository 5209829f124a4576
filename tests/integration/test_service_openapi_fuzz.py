"""Schemathesis against the service's own OpenAPI document: no 500s, every error official.

Every operation the service publishes gets generated requests (valid and not)
with a real token; whatever is sent, the answer is never a server error, and
every error body has the official shape (``code``, ``reason``,
``http_status_code``), never Globus Auth's re-login shape.
"""

from __future__ import annotations

import contextlib

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def openapi(api_service):
    client = api_service.add_client("fuzzy@uni.edu")
    token = api_service.token(client)
    loaded = schemathesis.openapi.from_url(f"{api_service.url}/openapi.json")
    loaded.config.update(base_url=api_service.url, headers={"Authorization": f"Bearer {token}"})
    return loaded


def official_error_shape(response, label: str) -> None:
    """Non-2xx answers carry the official ErrorResponse fields and no re-login hint
    (the Globus Auth routes answer in Globus Auth's OAuth error shape)."""
    if response.status_code < 400:
        return
    body = response.json()
    if " /v2/oauth2/" in label and "errors" in body:
        assert body["error"] and body["errors"][0]["status"] == str(response.status_code)
        return
    for key in ("code", "reason", "http_status_code"):
        assert key in body, f"{label}: {response.status_code} body lacks {key}: {body}"
    assert body["http_status_code"] == response.status_code
    assert "authorization_parameters" not in body


def _fuzz(operation, mode) -> int:
    """Run generated requests for one operation; returns how many were sent."""
    sent = []

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call(timeout=30)
        sent.append(1)
        label = f"{case.method} {case.formatted_path}"
        assert response.status_code < 500, f"{label}: {response.text[:300]}"
        official_error_shape(response, label)

    # Unsatisfiable: nothing of this mode exists (a negative case of an operation without input)
    with contextlib.suppress(Unsatisfiable):
        run()
    return len(sent)


def test_no_request_gets_a_server_error(openapi):
    operations = [result.ok() for result in openapi.get_all_operations()]
    assert len(operations) >= 15, "the OpenAPI document lost operations"
    sent = sum(
        _fuzz(operation, mode)
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    )
    assert sent >= len(operations) * 10, sent
    print(f"{sent} generated requests over {len(operations)} operations, none a server error")


def test_the_service_still_answers(api_service):
    assert httpx.get(f"{api_service.url}/v2/version", timeout=10).status_code == 200
