"""Queue descriptions, the amqp_creds bundle, port rewriting and redaction."""

import copy
import logging
import uuid

import pytest

from wire.amqp import connection_parameters, publish_kwargs
from wire.errors import QueueInfoError
from wire.queue_info import AmqpCreds, BrokerAddress, ReadQueueInfo, WriteQueueInfo, rewrite_port
from wire.redaction import RedactingFilter, redact

URL = "amqp://svc:s3cret@broker.example.org:5672/vhost"


def creds(**overrides):
    write = {
        "connection_url": URL,
        "exchange": "results",
        "queue": "results",
        "queue_publish_kwargs": {
            "exchange": "results",
            "routing_key": "x.results",
            "mandatory": True,
            "properties": {"delivery_mode": 2},
        },
    }
    data = {
        "endpoint_id": str(uuid.uuid4()),
        "task_queue_info": {"connection_url": URL, "exchange": "tasks", "queue": "x.tasks"},
        "result_queue_info": write,
        "heartbeat_queue_info": dict(
            copy.deepcopy(write), exchange="heartbeats", queue="heartbeats"
        ),
    }
    data.update(overrides)
    return data


def test_amqp_creds_round_trip():
    data = creds()
    parsed = AmqpCreds.from_dict(data)
    assert parsed.to_dict() == data
    assert isinstance(parsed.result_queue_info, WriteQueueInfo)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (
            lambda d: d.pop("task_queue_info"),
            "amqp_creds: missing required field 'task_queue_info'",
        ),
        (lambda d: d.update(endpoint_id="nope"), "amqp_creds.endpoint_id: 'nope' is not a UUID"),
        (
            lambda d: d["task_queue_info"].pop("queue"),
            "task_queue_info: missing required field 'queue'",
        ),
        (
            lambda d: d["task_queue_info"].update(connection_url="http://h/"),
            "task_queue_info.connection_url: expected an amqp:// or amqps:// URL",
        ),
        (
            lambda d: d["result_queue_info"]["queue_publish_kwargs"].update(body="x"),
            "result_queue_info.queue_publish_kwargs: unknown key(s) ['body']",
        ),
        (
            lambda d: d["result_queue_info"]["queue_publish_kwargs"]["properties"].update(evil=1),
            "queue_publish_kwargs.properties: unknown AMQP propert(ies) ['evil']",
        ),
        (
            lambda d: d["heartbeat_queue_info"]["queue_publish_kwargs"].update(mandatory="yes"),
            "heartbeat_queue_info.queue_publish_kwargs.mandatory: expected true or false",
        ),
        (lambda d: d.update(result_queue_info=[]), "result_queue_info: expected an object"),
    ],
)
def test_invalid_creds_name_the_path(mutate, fragment):
    data = creds()
    mutate(data)
    with pytest.raises(QueueInfoError) as err:
        AmqpCreds.from_dict(data)
    assert fragment in str(err.value)
    assert "s3cret" not in str(err.value)


def test_bad_port_message_hides_password():
    with pytest.raises(QueueInfoError) as err:
        ReadQueueInfo.from_dict({"connection_url": "amqp://u:pw@h:99999/", "queue": "q"})
    assert "pw" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "port", "expected"),
    [
        (URL, 5671, "amqp://svc:s3cret@broker.example.org:5671/vhost"),
        ("amqps://h/v?heartbeat=5", 443, "amqps://h:443/v?heartbeat=5"),
        ("amqp://u:p@[::1]:5672/", 5673, "amqp://u:p@[::1]:5673/"),
        (URL, None, URL),
    ],
)
def test_rewrite_port(url, port, expected):
    assert rewrite_port(url, port) == expected


def test_creds_port_rewrite_applies_to_all_three():
    rewritten = AmqpCreds.from_dict(creds()).with_port(5671)
    urls = [v["connection_url"] for k, v in rewritten.to_dict().items() if k != "endpoint_id"]
    assert all(":5671/" in u for u in urls)


def test_redact_hides_every_password():
    text = f"failed {URL} and postgresql://a:b@db/x but not amqp://host/ or amqp://user@h/"
    out = redact(text)
    assert "s3cret" not in out and ":b@" not in out
    assert "amqp://svc:***@broker.example.org" in out
    assert "amqp://host/" in out and "amqp://user@h/" in out


def test_redacting_filter_scrubs_args_and_tracebacks():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "connect %s", (URL,), None)
    try:
        raise RuntimeError(f"cannot reach {URL}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert "s3cret" not in formatted
    assert "svc:***@" in formatted


def test_connection_parameters_defaults_and_url_overrides():
    params = connection_parameters(URL, port=5999)
    assert params.port == 5999 and params.heartbeat == 60
    assert connection_parameters(URL + "?heartbeat=7").heartbeat == 7
    with pytest.raises(QueueInfoError):
        connection_parameters("nope://x")


def test_publish_kwargs_build_real_properties():
    info = AmqpCreds.from_dict(creds()).result_queue_info
    kwargs = publish_kwargs(info, properties={"content_type": "application/json"})
    assert kwargs["routing_key"] == "x.results" and kwargs["mandatory"] is True
    assert kwargs["properties"].delivery_mode == 2
    assert kwargs["properties"].content_type == "application/json"


@pytest.mark.parametrize(
    "url",
    [
        URL + "?heartbeat=30",
        URL + "?heartbeat=0&channel_max=10",
        URL,
    ],
)
def test_harmless_url_parameters_pass(url):
    assert ReadQueueInfo.from_dict({"connection_url": url, "queue": "q"}).connection_url == url


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("ssl_options=%7B%7D", "'ssl_options' is not allowed"),
        ("blocked_connection_timeout=1e9", "'blocked_connection_timeout' is not allowed"),
        ("connection_attempts=1000000", "not allowed"),
        ("retry_delay=3600", "not allowed"),
        ("heartbeat=-1", "whole number"),
        ("heartbeat=3601", "up to 3600"),
        ("frame_max=99999999", "up to"),
        ("heartbeat", "malformed"),
        ("&&", "malformed"),
    ],
)
def test_url_parameters_that_change_tls_or_timeouts_are_refused(query, fragment):
    with pytest.raises(QueueInfoError, match=fragment) as caught:
        ReadQueueInfo.from_dict({"connection_url": f"{URL}?{query}", "queue": "q"})
    assert "s3cret" not in str(caught.value)


def test_broker_address_ignores_credentials_and_defaults_the_port():
    a = BrokerAddress.of("amqp://a:b@Broker.Example.org/vh%2Fx")
    assert a == BrokerAddress.of("amqp://c:d@broker.example.org:5672/vh%2Fx")
    assert a.vhost == "vh/x" and a.port == 5672
    assert BrokerAddress.of("amqps://h").port == 5671 and BrokerAddress.of("amqps://h").vhost == "/"
    assert a != BrokerAddress.of("amqps://a:b@broker.example.org:5672/vh%2Fx")
