"""wire.lean_pika: pika loads without asyncio, and its asyncio adapter says why it is missing."""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """\
import json, sys
from wire import lean_pika
first = lean_pika.install()
import pika
from pika.adapters.asyncio_connection import AsyncioConnection
try:
    AsyncioConnection(None)
    refusal = None
except RuntimeError as e:
    refusal = str(e)
print(json.dumps({
    "installed": first,
    "again": lean_pika.install(),
    "asyncio": sorted(m for m in sys.modules if m.split(".")[0] == "asyncio"),
    "blocking": pika.BlockingConnection.__module__,
    "select": pika.SelectConnection.__module__,
    "refusal": refusal,
}))
"""


def _run(program: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_pika_loads_without_asyncio_and_the_adapter_refuses_with_a_reason():
    seen = _run(PROGRAM)
    assert seen["installed"] is True and seen["again"] is False
    assert seen["asyncio"] == []
    assert seen["blocking"] == "pika.adapters.blocking_connection"
    assert seen["select"] == "pika.adapters.select_connection"
    assert "left out of this process (wire.lean_pika)" in seen["refusal"]


def test_installing_after_pika_changes_nothing():
    seen = _run(
        "import json, sys, pika\n"
        "from wire import lean_pika\n"
        "print(json.dumps([lean_pika.install(), 'asyncio' in sys.modules,"
        " sys.modules['pika.adapters.asyncio_connection'].__file__.endswith('.py')]))\n"
    )
    assert seen == [False, True, True]
