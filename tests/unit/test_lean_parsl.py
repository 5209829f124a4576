"""Parsl imported the lean way loads neither SQLAlchemy nor the Globus Compute SDK,
and a task can still import both."""

from __future__ import annotations

import json
import subprocess
import sys
import typing as t
from pathlib import Path

from uep import lean_parsl

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
{setup}
import parsl.executors.high_throughput.process_worker_pool
from parsl.monitoring import monitoring
from parsl.executors import globus_compute
loaded_with_parsl = sorted({{"sqlalchemy", "globus_compute_sdk"}} & set(sys.modules))
import sqlalchemy
import globus_compute_sdk
missing = type(monitoring._db_manager_excepts).__name__
print(json.dumps([
    loaded_with_parsl,
    missing,
    globus_compute._globus_compute_enabled,
    sqlalchemy.__name__,
    globus_compute_sdk.Executor.__name__,
]))
"""


def _run(setup: str) -> list:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_parsl_alone_loads_both_here():
    """The premise: in this environment Parsl's probes find both packages and load them."""
    assert _run("") == [
        ["globus_compute_sdk", "sqlalchemy"],
        "NoneType",
        True,
        "sqlalchemy",
        "Executor",
    ]


def test_lean_parsl_hides_it_from_the_probe_only():
    """Parsl sees what it sees where neither is installed (as in a production
    install); the researcher's imports afterwards work."""
    assert _run("from uep import lean_parsl; lean_parsl.install()") == [
        [],
        "OptionalModuleMissing",
        False,
        "sqlalchemy",
        "Executor",
    ]


def test_a_program_run_through_it_gets_its_arguments(tmp_path):
    done = subprocess.run(
        [*lean_parsl.command("json.tool"), "--compact"],
        input='{"a": [1, 2]}',
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == '{"a":[1,2]}'


SPAWNING_PROGRAM = """
import json, multiprocessing, sys

def child(queue):
    import parsl.executors.high_throughput.process_worker_pool
    queue.put(sorted({"sqlalchemy", "globus_compute_sdk"} & set(sys.modules)))

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=child, args=(queue,))
    process.start()
    print(json.dumps({"child_loaded_sqlalchemy": queue.get(timeout=60)}))
    process.join(60)
"""


def _last_json(command: list[str], directory: Path, **env: str) -> t.Any:
    """Run a program of ``directory`` in a clean environment; its last line, as JSON."""
    done = subprocess.run(
        command,
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PYTHONPATH": f"{REPO}:{directory}", "PATH": "/usr/bin:/bin", **env},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_processes_it_spawns_import_parsl_lean_too(tmp_path):
    """The worker pool's task workers are started by spawn: they get the finder first."""
    program = tmp_path / "spawner.py"
    program.write_text(SPAWNING_PROGRAM)
    for command, loaded in (
        ([sys.executable, str(program)], ["globus_compute_sdk", "sqlalchemy"]),
        ([*lean_parsl.command("spawner")], []),
    ):
        assert _last_json(command, tmp_path) == {"child_loaded_sqlalchemy": loaded}


MANAGER_PROGRAM = """
import json, multiprocessing, os, sys

with open(os.environ["IMPORTS_LOG"], "a") as log:  # each import of this module, by pid
    log.write(f"{os.getpid()}\\n")

def child():
    pass

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    manager = ctx.Manager()
    shared = manager.dict()
    shared["task"] = {"buffer": b"x" * 10}
    process = ctx.Process(target=child)
    process.start()
    process.join(60)
    print(json.dumps({"server": manager._process.pid, "worker": process.pid,
                      "kept": shared["task"]["buffer"].decode()}))
    manager.shutdown()
"""


def test_the_pools_manager_server_does_not_import_the_main_program(tmp_path):
    """Only through lean_parsl: the server skips the main module, a worker keeps it."""
    (tmp_path / "managing.py").write_text(MANAGER_PROGRAM)
    for command, server_imports in (
        ([sys.executable, str(tmp_path / "managing.py")], True),
        ([*lean_parsl.command("managing")], False),
    ):
        log = tmp_path / f"imports-{server_imports}.log"
        seen = _last_json(command, tmp_path, IMPORTS_LOG=str(log))
        pids = {int(p) for p in log.read_text().split()}
        assert seen["kept"] == "xxxxxxxxxx"
        assert seen["worker"] in pids
        assert (seen["server"] in pids) is server_imports
