"""Parsl in user endpoints, without the optional packages it probes for.

Importing Parsl runs two probes for optional packages a user endpoint never
uses, and each loads the package when it is installed:

- ``parsl.monitoring.db_manager`` (imported by every Parsl process, through
  ``parsl.executors.base``) tries ``import sqlalchemy`` to see whether its
  monitoring database could run. This package's environment holds SQLAlchemy
  for the service: about 18 MB of private memory and 0.15 s of start-up.
- ``parsl.executors.globus_compute`` (imported by ``parsl.executors``) tries
  ``from globus_compute_sdk import Executor`` for Parsl's executor that
  *submits to* Globus Compute. Wherever the SDK is installed beside us (a
  site's shared environment, our test and bench environment) it pulls in the
  SDK, globus-sdk's auth clients and pydantic: about 26 MB and 0.25 s more.

Measured with ``bench/compare.py``, per Parsl process of every user: the user
endpoint, the interchange, the worker pool and each task worker.

:func:`install` makes exactly those probes find nothing: a probed package is
hidden only while its probing module itself is being executed. Any other import
of it, such as a researcher's task, works as usual. ``python -m uep.lean_parsl
MODULE ARGS...`` runs a Parsl program (the interchange, the worker pool) this
way, and the processes it starts with multiprocessing's spawn (the task workers),
and spares the pool's manager server process from importing Parsl at all.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import multiprocessing.spawn as spawn
import runpy
import sys
import typing as t

MODULE = "uep.lean_parsl"
MANAGER_SERVER = "SyncManager-"  # the name multiprocessing gives a SyncManager's process
# probing module -> the optional package it must not find
PROBES = {
    "parsl.monitoring.db_manager": "sqlalchemy",
    "parsl.executors.globus_compute": "globus_compute_sdk",
}


class _ProbeFinder(importlib.abc.MetaPathFinder):
    """Finds the probing module with the usual finders and wraps its loader."""

    def find_spec(self, fullname: str, path: t.Any, target: t.Any = None) -> t.Any:
        hidden = PROBES.get(fullname)
        if hidden is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HidingLoader(spec.loader, hidden)
                return spec
        return None


class _HidingLoader(importlib.abc.Loader):
    def __init__(self, loader: t.Any, hidden: str) -> None:
        self._loader = loader
        self._hidden = hidden

    def create_module(self, spec: t.Any) -> t.Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: t.Any) -> None:
        hidden = self._hidden
        if hidden in sys.modules:  # already loaded: hiding it would save nothing
            self._loader.exec_module(module)
            return
        sys.modules[hidden] = None  # type: ignore[assignment]  # its import fails
        try:
            self._loader.exec_module(module)
        finally:
            if hidden in sys.modules and sys.modules[hidden] is None:
                del sys.modules[hidden]


def install() -> None:
    """Put the finder first on the import path, once per process."""
    if not any(isinstance(f, _ProbeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _ProbeFinder())


def command(module: str) -> list[str]:
    """How to run a Parsl program ``module`` with this interpreter, the lean way."""
    return [sys.executable, "-m", MODULE, module]


def _lean_spawned_children() -> None:
    """Children started by multiprocessing's spawn (the worker pool's task workers)
    install the finder before anything else, too.

    Spawn starts ``python -c "from multiprocessing.spawn import spawn_main; ..."``,
    which imports the pool's module, and so Parsl, before any code of ours could
    run; the finder's installation is put at the front of that ``-c`` program.
    """
    original = spawn.get_command_line

    def command_line(**kwds: t.Any) -> list[str]:
        line = original(**kwds)
        if "-c" in line:
            program = line.index("-c") + 1
            line[program] = f"import {MODULE}; {MODULE}.install(); {line[program]}"
        return line

    spawn.get_command_line = command_line


def _manager_server_without_main() -> None:
    """A multiprocessing manager's server process does not import the main program.

    The worker pool starts a ``SyncManager`` (a server process holding a dict
    and a queue for its workers). Spawn would have that process import the
    pool's module again as its main module, and with it all of Parsl: about
    0.6 s of CPU and 30 MB for a process that runs only the standard library's
    server. Anything a client sends it still arrives, as pickle imports by name
    whatever it needs. The task workers keep their main module: their target
    function is defined there.
    """
    original = spawn.get_preparation_data

    def preparation_data(name: str) -> dict:
        data = original(name)
        if name.startswith(MANAGER_SERVER):
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    spawn.get_preparation_data = preparation_data


def main() -> None:
    install()
    _lean_spawned_children()
    _manager_server_without_main()
    module = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
