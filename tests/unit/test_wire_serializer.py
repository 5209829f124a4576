"""wire.serializer on its own: buffers, strategies, allow-lists, errors."""

import base64
import pickle

import dill
import pytest

from wire.errors import SerializationError
from wire.serializer import (
    MAX_RESULT_SIZE,
    STRATEGIES,
    deserialize,
    pack_buffers,
    parse_allowlist,
    serialize,
    serialize_result,
    strategy_by_name,
    unpack_buffers,
    unpack_task_buffer,
)


def double(x):
    return 2 * x


def test_pack_buffers_counts_characters_not_bytes():
    buffers = ["ünïcødé ✓", "", "plain\nwith newline"]
    packed = pack_buffers(buffers)
    assert packed.startswith("9\nünïcødé ✓0\n")
    assert unpack_buffers(packed) == buffers


@pytest.mark.parametrize("bad", ["x\nabc", "5\nabc", "3", "-1\nabc", "\u0661\na"])
def test_unpack_buffers_rejects_malformed(bad):
    with pytest.raises(SerializationError):
        unpack_buffers(bad)


def test_default_encodings_match_the_sdk_shapes():
    assert serialize(42) == "00\ngARLKi4=\n"
    assert serialize(double).startswith("01\n")
    assert serialize({"x": 1}, "11\n") == '11\n{"x": 1}'


def test_every_decodable_header_is_handled():
    src = "def double(x):\n    return 2 * x\n"
    b64 = lambda obj: base64.b64encode(dill.dumps(obj)).decode()  # noqa: E731
    cases = {
        "00\n": "00\n" + b64([1, 2]),
        "01\n": serialize(double),
        "02\n": "02\n" + base64.b64encode(pickle.dumps(double)).decode(),
        "03\n": "03\n" + b64(("double", src)),
        "04\n": "04\n" + b64(("double", src)),
        "st\n": "st\ndouble:" + src,
        "sd\n": "sd\ndouble:" + src,
        "10\n": "10\n" + ":".join(["01\n", serialize(double)[3:]]),
        "11\n": "11\n[1, 2]",
        "12\n": "12\n" + pack_buffers(["st\ndouble:" + src, serialize(double)]),
        "13\n": "13\n" + pack_buffers(["11\n[1, 2]", "00\n" + b64([1, 2])]),
    }
    assert set(cases) == set(STRATEGIES)
    for header, buffer in cases.items():
        value = deserialize(buffer)
        if callable(value):
            assert value(21) == 42, header
        else:
            assert value == [1, 2], header


def test_combo_falls_through_to_a_working_sub_buffer():
    broken = "st\nmissing:def other(): pass\n"
    assert deserialize("12\n" + pack_buffers([broken, serialize(double)]))(2) == 4


def test_task_buffer_needs_three_buffers_and_callable():
    good = pack_buffers([serialize(double), serialize((4,)), serialize({})])
    fn, args, kwargs = unpack_task_buffer(good)
    assert fn(*args, **kwargs) == 8
    with pytest.raises(SerializationError, match="3 buffers"):
        unpack_task_buffer(pack_buffers([serialize(double)]))
    with pytest.raises(SerializationError, match="not callable"):
        unpack_task_buffer(pack_buffers([serialize(1), serialize(()), serialize({})]))


def test_allowlist_needs_code_and_data_and_blocks_others():
    allowed = parse_allowlist(
        ["globus_compute_sdk.serialize.DillCode", "globus_compute_sdk.serialize.JSONData"]
    )
    assert allowed == {"01\n", "11\n"}
    assert deserialize("11\n3", allowed) == 3
    with pytest.raises(SerializationError, match="DillDataBase64 is disabled"):
        deserialize(serialize(3), allowed)
    with pytest.raises(SerializationError, match="one code and one data"):
        parse_allowlist(["globus_compute_sdk.serialize.DillCode"])
    wild = parse_allowlist(["globus_compute_sdk.*Code", "globus_compute_sdk.*Data"])
    assert "02\n" not in wild and {"00\n", "01\n", "11\n", "st\n"} <= wild
    with pytest.raises(SerializationError, match="cannot mix"):
        parse_allowlist(["globus_compute_sdk.*Code", "globus_compute_sdk.serialize.DillCode"])


def test_allowlist_judges_a_combo_by_its_own_name():
    combo = "12\n" + pack_buffers(["st\ndouble:def double(x):\n    return 2 * x\n"])
    only_dill = parse_allowlist(
        ["globus_compute_sdk.serialize.DillCode", "globus_compute_sdk.*Data"]
    )
    with pytest.raises(SerializationError, match="AllCodeStrategies is disabled"):
        deserialize(combo, only_dill)
    with_combo = parse_allowlist(
        ["globus_compute_sdk.serialize.AllCodeStrategies", "globus_compute_sdk.*Data"]
    )
    assert deserialize(combo, with_combo)(4) == 8


def test_strategy_names_accept_both_import_paths():
    short = strategy_by_name("globus_compute_sdk.serialize.JSONData")
    assert short is strategy_by_name("globus_compute_sdk.serialize.concretes.JSONData")
    with pytest.raises(SerializationError, match=r"unknown serialization strategy 'os\.system'"):
        strategy_by_name("os.system")


def test_result_serializers_follow_sdk_rules():
    json_first = [
        "globus_compute_sdk.serialize.JSONData",
        "globus_compute_sdk.serialize.DillDataBase64",
    ]
    assert serialize_result({"x": 1}, json_first) == '11\n{"x": 1}'
    assert serialize_result({1, 2}, json_first).startswith("00\n")
    assert serialize_result(double).startswith("01\n")
    with pytest.raises(SerializationError, match="every result serializer failed"):
        serialize_result({1}, ["globus_compute_sdk.serialize.JSONData"])
    assert deserialize(
        serialize_result([1], ["globus_compute_sdk.serialize.AllDataStrategies"])
    ) == [1]
    assert MAX_RESULT_SIZE == 10 * 1024 * 1024


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "zz\nstuff",
        "00\n!!!notbase64",
        "00\n" + base64.b64encode(b"\x80\x05garbage").decode(),
        "st\nno_colon",
        "st\nname:raise SystemExit(3)",
        "st\nname:this is not python",
        "11\n{",
        "03\n" + base64.b64encode(dill.dumps("not a pair")).decode(),
        "12\n5\nab",
        "10\nqq\n:xyz",
    ],
)
def test_garbage_raises_only_serialization_error(garbage):
    with pytest.raises(SerializationError):
        deserialize(garbage)


def test_non_string_input_is_refused():
    with pytest.raises(SerializationError, match="must be str"):
        deserialize(b"00\nabc")
