"""A ProcessPoolEngine worker starts with only what it runs tasks with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Started with -c, so the spawned worker has no main module of ours to import again.
PROGRAM = """
import json, sys, tempfile
from pathlib import Path
from uep.engines.pools import ProcessPoolEngine

FAMILIES = ("uep", "templates", "wire", "yaml", "jinja2", "jsonschema", "pika", "parsl")
probe = f"sorted(m for m in __import__('sys').modules if m.split('.')[0] in {FAMILIES!r})"
engine = ProcessPoolEngine(max_workers=1)
engine.start("00000000-0000-0000-0000-000000000000", Path(tempfile.mkdtemp()))
try:
    print(json.dumps(engine._current_pool().submit(eval, probe).result(timeout=60)))
finally:
    engine.shutdown()
"""


def test_a_fresh_worker_loads_its_initializer_and_nothing_of_the_engine():
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["uep", "uep.pool_worker"]
