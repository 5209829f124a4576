"""What a ProcessPoolEngine worker process loads before its first task.

Workers are started with multiprocessing's spawn: each is a fresh interpreter
that imports the modules of whatever it is handed. Its initializer lives here,
apart from :mod:`uep.engines`, so that a worker imports only this and, with its
first task, :mod:`uep.execution`: not the engine machinery, the config models
or YAML, which it never uses (about 45 ms and several megabytes per worker,
and a worker's start is on the path of an endpoint's first task).
"""

from __future__ import annotations

import os
import threading
import time


def die_with_parent(parent: int) -> None:
    """Pool workers leave when the endpoint is gone, even if it was killed -9:
    a killed endpoint must not leave idle workers behind."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
