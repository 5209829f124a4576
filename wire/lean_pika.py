"""pika without its asyncio adapter, for a long-lived process that never uses it.

``import pika`` runs ``pika.adapters``, which imports every adapter pika ships,
among them ``pika.adapters.asyncio_connection`` and through it :mod:`asyncio`
and :mod:`concurrent.futures`: 35 modules and about 1.5 MB of private memory
the endpoint manager would carry for weeks while it only ever opens a
``BlockingConnection``.

:func:`install`, called before pika is first imported, registers a stand-in
for that one module. Its ``AsyncioConnection`` refuses to be built, with a
message naming this module; every other adapter and the rest of pika load as
usual. Called after pika is loaded, it changes nothing.
"""

from __future__ import annotations

import sys
import types

ADAPTER = "pika.adapters.asyncio_connection"


class AsyncioConnection:
    """Stands in for pika's asyncio adapter in a process that left it out."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "pika's asyncio adapter is left out of this process (wire.lean_pika);"
            " use BlockingConnection or SelectConnection"
        )


def install() -> bool:
    """Put the stand-in in place; False if pika (or the adapter) is already loaded."""
    if "pika" in sys.modules or ADAPTER in sys.modules:
        return False
    stand_in = types.ModuleType(ADAPTER, __doc__)
    stand_in.AsyncioConnection = AsyncioConnection  # type: ignore[attr-defined]
    sys.modules[ADAPTER] = stand_in
    return True
