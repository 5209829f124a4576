"""The stdin launch payload and the 4.19 encrypted credential memfd."""

import json
import os
import uuid

import pytest
from cryptography.fernet import Fernet

from uep.payload import PayloadError, credential_source, parse_payload


def creds(password="pw"):
    url = f"amqp://u:{password}@127.0.0.1:5672/v"
    write = {
        "connection_url": url,
        "exchange": "x",
        "queue": "q",
        "queue_publish_kwargs": {"routing_key": "k"},
    }
    return {
        "endpoint_id": str(uuid.uuid4()),
        "task_queue_info": {"connection_url": url, "queue": "t"},
        "result_queue_info": write,
        "heartbeat_queue_info": write,
    }


def test_full_payload_parses():
    payload = parse_payload(
        json.dumps(
            {
                "amqp_creds": creds(),
                "config": "engine: {type: ThreadPoolEngine}\n",
                "ep_info": {"posix_ppid": 1},
                "allowed_functions": ["a"],
                "audit_fd": 4,
            }
        )
    )
    assert payload.allowed_functions == ("a",)
    assert payload.audit_fd == 4 and payload.ep_info == {"posix_ppid": 1}


@pytest.mark.parametrize(
    "bad, words",
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"amqp_creds": null, "config": "x"}', "amqp_creds"),
        ('{"config": 3}', "config"),
        ('{"config": "x", "mem_fd": 3}', "enckey"),
        ('{"amqp_creds": null}', "one of render"),
        ('{"config": "x", "render": {"template": "x"}}', "one of render"),
        ('{"render": []}', "render: expected an object"),
        ('{"render": {"template": 3}}', "render.template"),
        ('{"render": {"template": "x", "include_dir": "rel"}}', "render.include_dir"),
        ('{"render": {"template": "x", "includes": {}}}', "unknown fields"),
        ('{"render": {"template": "x", "schema": "y"}}', "render.schema"),
        ('{"render": {"template": "x", "options": [1]}}', "render.options"),
    ],
)
def test_bad_payloads_say_what_is_wrong(bad, words):
    with pytest.raises(PayloadError, match=words):
        parse_payload(bad)


def test_a_render_request_arrives_whole():
    document = {
        "template": "engine: {type: ThreadPoolEngine}\n# {{ label }}\n",
        "include_dir": "/etc/compute-agent/ep",
        "schema": {"type": "object"},
        "options": {"label": "a"},
        "user_runtime": {},
        "mapped_identity": {"local": {"uname": "alice"}},
        "parent_config": {"amqp_port": None},
    }
    payload = parse_payload(json.dumps({"amqp_creds": creds(), "render": document, "note_fd": 5}))
    assert payload.config_text is None and payload.note_fd == 5
    assert payload.render.to_document() == document
    rendered = payload.render.render()
    assert '# "a"' in rendered.yaml_text


def test_large_payload_has_no_pipe_size_limit():
    config = "engine: {type: ThreadPoolEngine}\n" + "# padding\n" * 20000
    payload = parse_payload(json.dumps({"amqp_creds": creds(), "config": config}))
    assert len(payload.config_text) > 64 * 1024


def test_memfd_credentials_are_reread_on_every_call():
    key = Fernet.generate_key()
    fd = os.memfd_create("creds", 0)
    try:

        def publish(c):
            os.ftruncate(fd, 0)
            os.pwrite(fd, Fernet(key).encrypt(json.dumps({"amqp_creds": c}).encode()), 0)

        first = creds("one")
        publish(first)
        source = credential_source(
            parse_payload(json.dumps({"config": "x", "mem_fd": fd, "enckey": key.decode()}))
        )
        assert "one@" in source().task_queue_info.connection_url
        publish(creds("two"))
        assert "two@" in source().task_queue_info.connection_url
    finally:
        os.close(fd)
