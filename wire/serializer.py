"""The payload format of the official Globus Compute SDK.

Every serialized value is a ``str``: a three-character strategy header (two id
characters and a newline) and the payload. Several values travel together as
``pack_buffers`` output, where each buffer is prefixed by its length counted in
characters (code points), not bytes.

We decode every strategy the SDK has ever produced, encode the three the
endpoint side needs (``00`` dill data, ``01`` dill code, ``11`` JSON), and
enforce an optional allow-list of deserializers. Whatever the input, failures
surface as :class:`~wire.errors.SerializationError` only.

Decoding runs code by design (dill, and ``exec`` for source strategies): call it
only where the submitter's code is meant to run, i.e. as the submitter.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import inspect
import json
import typing as t

import dill

from wire.errors import SerializationError

MAX_RESULT_SIZE = 10 * 1024 * 1024

SDK_MODULE = "globus_compute_sdk.serialize"


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One of the SDK's serialization strategies, known by header and class name."""

    header: str
    name: str
    for_code: bool
    selectable: bool = True

    @property
    def import_path(self) -> str:
        return f"{SDK_MODULE}.concretes.{self.name}"


STRATEGIES = {
    s.header: s
    for s in (
        Strategy("00\n", "DillDataBase64", for_code=False),
        Strategy("01\n", "DillCode", for_code=True),
        Strategy("02\n", "PickleCode", for_code=True, selectable=False),
        Strategy("03\n", "DillCodeTextInspect", for_code=True),
        Strategy("04\n", "DillCodeSource", for_code=True),
        Strategy("st\n", "PureSourceTextInspect", for_code=True),
        Strategy("sd\n", "PureSourceDill", for_code=True),
        Strategy("10\n", "CombinedCode", for_code=True),
        Strategy("11\n", "JSONData", for_code=False),
        Strategy("12\n", "AllCodeStrategies", for_code=True),
        Strategy("13\n", "AllDataStrategies", for_code=False),
    )
}
_BY_NAME = {s.name: s for s in STRATEGIES.values()}
_ENCODABLE = {"00\n", "01\n", "11\n", "st\n", "12\n", "13\n"}
WILDCARD_CODE = f"{SDK_MODULE.split('.')[0]}.*Code"
WILDCARD_DATA = f"{SDK_MODULE.split('.')[0]}.*Data"


def pack_buffers(buffers: t.Iterable[str]) -> str:
    """Join buffers as ``<length>\\n<buffer>`` with lengths in characters."""
    return "".join(f"{len(b)}\n{b}" for b in buffers)


def unpack_buffers(packed: str) -> list[str]:
    """Split a ``pack_buffers`` string; raises SerializationError if malformed."""
    if not isinstance(packed, str):
        raise SerializationError(f"packed buffers must be str, not {type(packed).__name__}")
    buffers, pos = [], 0
    while pos < len(packed):
        newline = packed.find("\n", pos)
        size_text = packed[pos:newline] if newline >= 0 else packed[pos:]
        if newline < 0 or not size_text.isascii() or not size_text.isdigit():
            raise SerializationError(f"bad buffer length {size_text[:20]!r} at offset {pos}")
        start, end = newline + 1, newline + 1 + int(size_text)
        if end > len(packed):
            raise SerializationError(f"buffer at offset {pos} is truncated")
        buffers.append(packed[start:end])
        pos = end
    return buffers


def strategy_by_name(name: str) -> Strategy:
    """Resolve an SDK import path (``globus_compute_sdk.serialize.JSONData``...)."""
    module, _, cls = name.rpartition(".")
    strategy = _BY_NAME.get(cls)
    if strategy is None or module not in (SDK_MODULE, f"{SDK_MODULE}.concretes"):
        known = ", ".join(sorted(f"{SDK_MODULE}.{n}" for n in _BY_NAME))
        raise SerializationError(f"unknown serialization strategy {name!r}; known: {known}")
    return strategy


def parse_allowlist(names: t.Iterable[str] | None) -> frozenset[str]:
    """Turn an allow-list of import paths or wildcards into a set of headers.

    Empty means everything is allowed. As upstream, a non-empty list must allow
    at least one code and one data strategy, and a wildcard cannot be mixed with
    specific strategies of its own kind.
    """
    names = list(names or [])
    if not names:
        return frozenset()
    wildcards = {WILDCARD_CODE: True, WILDCARD_DATA: False}
    chosen = {strategy_by_name(n) for n in names if n not in wildcards}
    for name, for_code in wildcards.items():
        if name not in names:
            continue
        if any(s.for_code == for_code for s in chosen):
            raise SerializationError(f"cannot mix {name!r} with specific deserializers")
        chosen |= {s for s in STRATEGIES.values() if s.for_code == for_code and s.selectable}
    if {s.for_code for s in chosen} != {True, False}:
        raise SerializationError(
            f"a deserializer allow-list needs at least one code and one data strategy (got {names})"
        )
    return frozenset(s.header for s in chosen)


def _b64(payload: str) -> bytes:
    try:
        return base64.b64decode(payload)
    except (binascii.Error, ValueError) as e:
        raise SerializationError(f"payload is not base64: {e}") from None


def _exec_source(name: str, source: str) -> t.Any:
    namespace: dict = {}
    exec(source, namespace)
    if name not in namespace:
        raise SerializationError(f"source does not define {name!r}")
    return namespace[name]


def _split_named_source(payload: str) -> tuple[str, str]:
    name, sep, source = payload.partition(":")
    if not sep:
        raise SerializationError("source payload lacks the 'name:' prefix")
    return name, source


def _decode_dill_source(payload: str) -> t.Any:
    pair = dill.loads(_b64(payload))
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise SerializationError("source payload is not a (name, source) pair")
    return _exec_source(*pair)


def _decode_combined(payload: str) -> t.Any:
    parts = payload.split(":")
    pairs = list(zip(parts[0::2], parts[1::2], strict=False))
    for sub_header, body in pairs:
        if sub_header not in ("01\n", "03\n", "04\n", "sd\n", "st\n"):
            raise SerializationError(f"invalid sub-strategy {sub_header!r} in combined code")
        try:
            return _decode_one(sub_header + body, frozenset())
        except SerializationError:
            continue
    raise SerializationError(f"combined code: none of {len(pairs)} variants decoded")


def _decode_combo(payload: str) -> t.Any:
    """Try each sub-buffer; allowing the combo allows what it carries (as upstream)."""
    errors = []
    for buffer in unpack_buffers(payload):
        try:
            return _decode_one(buffer, frozenset())
        except SerializationError as e:
            errors.append(str(e))
    raise SerializationError("no sub-strategy decoded: " + "; ".join(errors or ["empty"]))


_DECODERS: dict[str, t.Callable[[str], t.Any]] = {
    "00\n": lambda p: dill.loads(_b64(p)),
    "01\n": lambda p: dill.loads(_b64(p)),
    "02\n": lambda p: dill.loads(_b64(p)),
    "03\n": _decode_dill_source,
    "04\n": _decode_dill_source,
    "st\n": lambda p: _exec_source(*_split_named_source(p)),
    "sd\n": lambda p: _exec_source(*_split_named_source(p)),
    "10\n": _decode_combined,
    "11\n": json.loads,
}


def _decode_one(buffer: str, allowed: frozenset[str]) -> t.Any:
    header, payload = buffer[:3], buffer[3:]
    strategy = STRATEGIES.get(header)
    if strategy is None:
        raise SerializationError(f"unknown strategy header {header!r}")
    if allowed and header not in allowed:
        kind = "code" if strategy.for_code else "data"
        names = ", ".join(sorted(STRATEGIES[h].name for h in allowed))
        raise SerializationError(
            f"{kind} serializer {strategy.name} is disabled by this endpoint's"
            f" configuration; allowed serializers: {names}"
        )
    if header in ("12\n", "13\n"):
        return _decode_combo(payload)
    try:
        return _DECODERS[header](payload)
    except SerializationError:
        raise
    except (Exception, SystemExit) as e:
        raise SerializationError(
            f"{strategy.name} could not decode: {type(e).__name__}: {e}"
        ) from e


def deserialize(buffer: str, allowed: frozenset[str] = frozenset()) -> t.Any:
    """Decode one serialized value, honouring the ``allowed`` headers if non-empty."""
    if not isinstance(buffer, str):
        raise SerializationError(f"serialized data must be str, not {type(buffer).__name__}")
    try:
        return _decode_one(buffer, allowed)
    except RecursionError as e:
        raise SerializationError(f"payload nested too deeply: {e}") from None


def unpack_task_buffer(
    task_buffer: str, allowed: frozenset[str] = frozenset()
) -> tuple[t.Callable, tuple, dict]:
    """Decode ``function_code + payload`` into ``(function, args, kwargs)``."""
    buffers = unpack_buffers(task_buffer)
    if len(buffers) != 3:
        raise SerializationError(
            f"a task holds 3 buffers (function, args, kwargs), got {len(buffers)}"
        )
    fn, args, kwargs = (deserialize(b, allowed) for b in buffers)
    if not callable(fn):
        raise SerializationError(f"the task's function is a {type(fn).__name__}, not callable")
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise SerializationError("the task's arguments are not a (list, dict) pair")
    return fn, tuple(args), kwargs


def _encode_combo(obj: t.Any, sub_headers: tuple[str, ...]) -> str:
    buffers = []
    for sub in sub_headers:
        try:
            buffers.append(_encode(obj, sub))
        except Exception:
            continue
    if not buffers:
        raise SerializationError("no sub-strategy could encode the value")
    return pack_buffers(buffers)


def _encode(obj: t.Any, header: str) -> str:
    if header == "11\n":
        return header + json.dumps(obj)
    if header == "st\n":
        return header + f"{obj.__name__}:{inspect.getsource(obj)}"
    if header == "12\n":
        return header + _encode_combo(obj, ("st\n", "01\n"))
    if header == "13\n":
        return header + _encode_combo(obj, ("11\n", "00\n"))
    return header + codecs.encode(dill.dumps(obj), "base64").decode()


def serialize(obj: t.Any, strategy: str | None = None) -> str:
    """Encode with the given header (``00``, ``01``, ``11``...) or the SDK default."""
    header = strategy or ("01\n" if callable(obj) else "00\n")
    if header not in _ENCODABLE:
        raise SerializationError(f"cannot encode with strategy {header!r}")
    try:
        return _encode(obj, header)
    except Exception as e:
        raise SerializationError(
            f"{STRATEGIES[header].name} failed: {type(e).__name__}: {e}"
        ) from e


def serialize_result(obj: t.Any, result_serializers: t.Iterable[str] | None = None) -> str:
    """Encode a task's return value as the submitter asked (SDK semantics).

    Each named strategy is tried in order; one meant for code is skipped for
    data and vice versa; the first that works wins. No names means dill data,
    then dill code.
    """
    names = list(result_serializers or [])
    candidates = names or [f"{SDK_MODULE}.DillDataBase64", f"{SDK_MODULE}.DillCode"]
    failures = []
    for name in candidates:
        try:
            strategy = strategy_by_name(name)
            if strategy.for_code != callable(obj):
                raise SerializationError(f"{strategy.name} is not for this kind of value")
            if strategy.header not in _ENCODABLE:
                raise SerializationError(f"{strategy.name} is not supported for results")
            return _encode(obj, strategy.header)
        except Exception as e:
            failures.append(f"{name}: {e}")
    raise SerializationError("every result serializer failed: " + "; ".join(failures))
