"""The user endpoint renders its config in a forked child and gets plain data back."""

import os
import sys

from templates.render_request import RenderRequest
from uep import launch

TEMPLATE = "engine:\n  type: ThreadPoolEngine\n  max_workers: {{ workers }}\n"
SCHEMA = {"type": "object", "properties": {"workers": {"type": "integer"}}}


def _request(options: dict) -> RenderRequest:
    return RenderRequest(TEMPLATE, options, {}, {}, {}, schema=SCHEMA)


def test_a_render_comes_back_as_the_text_and_loads_nothing_here():
    loaded_before = {"jinja2", "jsonschema"} & set(sys.modules)
    outcome = launch._render_in_child(_request({"workers": 3}))
    assert outcome == {"yaml_text": "engine:\n  type: ThreadPoolEngine\n  max_workers: 3"}
    assert {"jinja2", "jsonschema"} & set(sys.modules) == loaded_before


def test_a_refusal_comes_back_with_both_messages_and_the_step():
    refused = launch._render_in_child(_request({"workers": "many"}))["refused"]
    assert refused["step"] == "schema"
    assert "many" in refused["admin_message"] and refused["user_message"]


def test_a_child_that_dies_is_a_refusal_for_the_admin_to_read(monkeypatch):
    monkeypatch.setattr(launch, "_rendered", lambda request: os._exit(3))
    refused = launch._render_in_child(_request({"workers": 3}))["refused"]
    assert refused["step"] == "child"
    assert "wait status" in refused["admin_message"]
    assert "administrator" in refused["user_message"]
