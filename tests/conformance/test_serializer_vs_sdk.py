"""wire.serializer and the official SDK's ComputeSerializer agree both ways.

Payloads are built exactly as the SDK's Executor builds them: the registered
function's ``function_code`` is ``pack_buffers([serialize(fn)])``; each task
payload is ``pack_buffers([serialize(args), serialize(kwargs)])``; the service
concatenates the two into the Task's ``task_buffer``.
"""

import pytest
from globus_compute_sdk.serialize import ComputeSerializer
from globus_compute_sdk.serialize import concretes as sdk

from tests.conformance import sample_functions as fns
from wire import serializer as ours

CODE_STRATEGIES = [
    sdk.DillCode,
    sdk.DillCodeSource,
    sdk.DillCodeTextInspect,
    sdk.PureSourceTextInspect,
    sdk.PureSourceDill,
    sdk.CombinedCode,
    sdk.AllCodeStrategies,
]
DATA_STRATEGIES = [sdk.DillDataBase64, sdk.JSONData, sdk.AllDataStrategies]


def task_buffer(fn, args, kwargs, code=None, data=None):
    sdk_ser = ComputeSerializer(strategy_code=code and code(), strategy_data=data and data())
    function_code = sdk_ser.pack_buffers([sdk_ser.serialize(fn)])
    payload = sdk_ser.pack_buffers([sdk_ser.serialize(args), sdk_ser.serialize(kwargs)])
    return function_code + payload


def run(buffer):
    fn, args, kwargs = ours.unpack_task_buffer(buffer)
    return fn(*args, **kwargs)


@pytest.mark.parametrize("code", CODE_STRATEGIES, ids=lambda c: c.__name__)
def test_every_code_strategy_decodes_and_runs(code):
    assert run(task_buffer(fns.add, (2,), {"b": 40}, code=code)) == 42


@pytest.mark.parametrize("data", DATA_STRATEGIES, ids=lambda c: c.__name__)
def test_every_data_strategy_decodes(data):
    assert run(task_buffer(fns.add, [20], {"b": 22}, data=data)) == 42


def test_non_ascii_source_via_st_counts_characters():
    buffer = task_buffer(fns.greet, ("Welt",), {}, code=sdk.PureSourceTextInspect)
    assert "Grüß" in buffer
    assert run(buffer) == "Grüß Gott, Welt! ✓ 漢字"


def test_closures_and_lambdas_and_kwargs():
    assert run(task_buffer(fns.make_multiplier(7), (6,), {})) == 42
    assert run(task_buffer(lambda x, y=0: x - y, (50,), {"y": 8})) == 42


def test_large_data_arguments():
    blob = "x" * (8 * 1024 * 1024)
    assert run(task_buffer(fns.total_size, (blob,), {"extra": "yz"})) == len(blob) + 2


def test_remote_exception_is_the_functions_own():
    with pytest.raises(ValueError, match="from the task"):
        run(task_buffer(fns.fails, ("from the task",), {}))


def test_sdk_allowlist_names_parse_to_our_headers():
    names = ["globus_compute_sdk.serialize.DillCode", "globus_compute_sdk.serialize.JSONData"]
    ComputeSerializer(allowed_deserializer_types=names)  # the SDK accepts the same list
    assert ours.parse_allowlist(names) == {sdk.DillCode.identifier, sdk.JSONData.identifier}


RESULTS = [42, "ü✓", {"nested": [1, 2.5, None]}, list(range(1000)), {1, 2}, fns.add]


@pytest.mark.parametrize("value", RESULTS, ids=lambda v: type(v).__name__)
def test_sdk_deserializes_our_results(value):
    back = ComputeSerializer().deserialize(ours.serialize_result(value))
    if callable(value):
        assert back(1, b=2) == 3
    else:
        assert back == value


@pytest.mark.parametrize(
    "serializers",
    [
        ["globus_compute_sdk.serialize.JSONData"],
        ["globus_compute_sdk.serialize.concretes.JSONData"],
        ["globus_compute_sdk.serialize.AllDataStrategies"],
        ["globus_compute_sdk.serialize.JSONData", "globus_compute_sdk.serialize.DillDataBase64"],
    ],
)
def test_result_serializers_named_by_the_sdk(serializers):
    encoded = ours.serialize_result({"x": [1, "ü"]}, serializers)
    assert ComputeSerializer().deserialize(encoded) == {"x": [1, "ü"]}
    expected = ComputeSerializer.serialize_from_list({"x": [1, "ü"]}, serializers)
    assert encoded == expected


def test_our_default_encoding_is_byte_identical_to_the_sdk():
    for value in (42, "text", [1, {"a": None}]):
        assert ours.serialize(value) == ComputeSerializer().serialize(value)
