"""Parsl in user endpoints, without the SQLAlchemy its monitoring probes for.

When ``parsl.monitoring.db_manager`` is imported (every Parsl process imports
it, through ``parsl.executors.base``) it tries ``import sqlalchemy`` to see
whether its monitoring database could run. A user endpoint never runs that
database, but this package's environment holds SQLAlchemy for the service, so
the probe succeeded and loaded it: about 18 MB of private memory and 0.15 s of
start-up in each Parsl process of every user (measured with bench/compare.py).
The official endpoint's environment lacks SQLAlchemy and never pays this.

:func:`install` makes exactly that probe find nothing: SQLAlchemy is hidden
only while ``db_manager`` itself is being executed. Any other import of it,
such as a researcher's task, works as usual. ``python -m uep.lean_parsl MODULE
ARGS...`` runs a Parsl program (the interchange, the worker pool) this way,
and the processes it starts with multiprocessing's spawn (the task workers).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import multiprocessing.spawn as spawn
import runpy
import sys
import typing as t

MODULE = "uep.lean_parsl"
PROBE = "parsl.monitoring.db_manager"
HIDDEN = "sqlalchemy"


class _ProbeFinder(importlib.abc.MetaPathFinder):
    """Finds the probing module with the usual finders and wraps its loader."""

    def find_spec(self, fullname: str, path: t.Any, target: t.Any = None) -> t.Any:
        if fullname != PROBE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HidingLoader(spec.loader)
                return spec
        return None


class _HidingLoader(importlib.abc.Loader):
    def __init__(self, loader: t.Any) -> None:
        self._loader = loader

    def create_module(self, spec: t.Any) -> t.Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: t.Any) -> None:
        if HIDDEN in sys.modules:  # already loaded: hiding it would save nothing
            self._loader.exec_module(module)
            return
        sys.modules[HIDDEN] = None  # type: ignore[assignment]  # "import sqlalchemy" fails
        try:
            self._loader.exec_module(module)
        finally:
            if HIDDEN in sys.modules and sys.modules[HIDDEN] is None:
                del sys.modules[HIDDEN]


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


def main() -> None:
    install()
    _lean_spawned_children()
    module = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
