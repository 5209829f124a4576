"""Property-based fuzzing: wire's decoders fail only with wire's own errors.

A user endpoint or the service reads bytes from the broker that anybody with
queue access could have written; a decoder that raised KeyError or
RecursionError there would take the reader down instead of rejecting one message.
"""

import base64
import contextlib
import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wire.errors import MessageError, QueueInfoError, SerializationError
from wire.messages import MESSAGE_TYPES, unpack
from wire.queue_info import AmqpCreds
from wire.serializer import (
    STRATEGIES,
    deserialize,
    pack_buffers,
    unpack_buffers,
    unpack_task_buffer,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Headers whose decoders exec source text are fuzzed only with non-code payloads
# (digits and punctuation), so a random example can never be a runnable program.
SAFE_HEADERS = sorted(h for h in STRATEGIES if h not in ("st\n", "sd\n"))

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=25,
)


@FUZZ
@given(st.binary(max_size=300))
@example(b"\x01" + b"[" * 100_000)
def test_unpack_arbitrary_bytes(raw):
    with contextlib.suppress(MessageError):
        unpack(raw)


@FUZZ
@given(
    st.sampled_from(sorted(MESSAGE_TYPES)),
    st.dictionaries(st.text(max_size=15), json_like, max_size=6),
)
def test_unpack_arbitrary_data_for_each_type(message_type, data):
    raw = b"\x01" + json.dumps({"message_type": message_type, "data": data}).encode()
    with contextlib.suppress(MessageError):
        unpack(raw)


@FUZZ
@given(st.sampled_from(SAFE_HEADERS), st.binary(max_size=200))
def test_deserialize_base64_garbage(header, blob):
    with contextlib.suppress(SerializationError):
        deserialize(header + base64.b64encode(blob).decode())


@FUZZ
@given(st.sampled_from(SAFE_HEADERS), st.text(alphabet="0123456789\n:=+/", max_size=200))
def test_deserialize_text_garbage(header, payload):
    with contextlib.suppress(SerializationError):
        deserialize(header + payload)


@FUZZ
@given(st.text(max_size=300))
@example("9" * 400 + "\n")
def test_unpack_buffers_and_task_buffer(text):
    for decode in (unpack_buffers, unpack_task_buffer):
        with contextlib.suppress(SerializationError):
            decode(text.replace("st\n", "").replace("sd\n", ""))


@FUZZ
@given(st.lists(st.text(max_size=50), max_size=6))
def test_pack_unpack_buffers_is_identity(buffers):
    assert unpack_buffers(pack_buffers(buffers)) == buffers


@FUZZ
@given(json_like)
def test_amqp_creds_from_arbitrary_json(data):
    with contextlib.suppress(QueueInfoError):
        AmqpCreds.from_dict(data)
