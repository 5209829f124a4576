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
MODULE ARGS...`` runs a Parsl program (the interchange) this way; the worker
pool runs through :mod:`uep.worker_pool`, whose task workers are forked from it
and so inherit the finder.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import runpy
import sys
import typing as t

MODULE = "uep.lean_parsl"
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


def run(module: str, argv: list[str]) -> None:
    """Run ``module`` as the main program with arguments ``argv``, lean."""
    install()
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def main() -> None:
    run(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    main()
