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
of it, such as a researcher's task, works as usual. In the same way
``parsl.addresses`` gets a stand-in for ``requests`` (4.4 MB) that imports it
the first time the address lookup that needs it is called.

:func:`defer`, in the user endpoint and its worker pool, goes further: the
``__init__`` files of ``parsl``, ``parsl.executors``, ``parsl.monitoring`` and
``parsl.providers`` (the dataflow kernel, every executor and provider, the
monitoring hub) run only when something asks for a name they define. Both import
submodules, but for a few names Parsl's own modules take from a package, which
:data:`DEFINED_IN` loads from where they are defined. A user's whole tree went
from 103 to 84.7 MB of PSS (10 live GlobusComputeEngine user endpoints; the
pool's private memory 31 -> 20 MB, the endpoint's 35 -> 25): the pool's forked
workers and manager server, and the endpoint's forked interchange, share the
smaller images.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import runpy
import sys
import threading
import types
import typing as t

MODULE = "uep.lean_parsl"
# probing module -> the optional package it must not find
PROBES = {
    "parsl.monitoring.db_manager": "sqlalchemy",
    "parsl.executors.globus_compute": "globus_compute_sdk",
}
# importing module -> a module it imports for a function no user endpoint calls
# (``parsl.addresses.address_by_query``): it gets a stand-in that imports the
# real one on first use. requests is 4.4 MB of a worker pool's private memory.
STAND_INS = {"parsl.addresses": "requests"}
# Packages whose ``__init__`` a user endpoint and its worker pool never need:
# they import every executor, every provider (the cloud ones with their
# launchers), the dataflow kernel and the monitoring hub.
DEFERRED_PACKAGES = ("parsl", "parsl.executors", "parsl.monitoring", "parsl.providers")
# Names a deferred package's __init__ re-exports that Parsl's own modules import
# from the package (``parsl.jobs.strategy``: ``from parsl.executors import
# HighThroughputExecutor``; the executor: ``from parsl.providers import
# LocalProvider``), and where they are defined: only that submodule loads.
DEFINED_IN = {
    "parsl.executors": {
        "HighThroughputExecutor": "parsl.executors.high_throughput.executor",
        "MPIExecutor": "parsl.executors.high_throughput.mpi_executor",
    },
    "parsl.providers": {"LocalProvider": "parsl.providers.local.local"},
}


class _OnFirstUse(types.ModuleType):
    """Stands in for a module in one importer's namespace; imports it when used."""

    def __getattr__(self, attribute: str) -> t.Any:
        return getattr(importlib.import_module(self.__name__), attribute)


class _ProbeFinder(importlib.abc.MetaPathFinder):
    """Finds a probing (or importing) module with the usual finders and wraps its loader."""

    def find_spec(self, fullname: str, path: t.Any, target: t.Any = None) -> t.Any:
        if fullname in PROBES:
            name, replacement = PROBES[fullname], None
        elif fullname in STAND_INS:
            name = STAND_INS[fullname]
            replacement = _OnFirstUse(name)
        else:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HidingLoader(spec.loader, name, replacement)
                return spec
        return None


class _HidingLoader(importlib.abc.Loader):
    """Runs a module while ``sys.modules[hidden]`` is ``replacement`` (None: not found)."""

    def __init__(self, loader: t.Any, hidden: str, replacement: types.ModuleType | None) -> None:
        self._loader = loader
        self._hidden = hidden
        self._replacement = replacement

    def create_module(self, spec: t.Any) -> t.Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: t.Any) -> None:
        hidden = self._hidden
        if hidden in sys.modules:  # already loaded: hiding it would save nothing
            self._loader.exec_module(module)
            return
        sys.modules[hidden] = self._replacement  # type: ignore[assignment]
        try:
            self._loader.exec_module(module)
        finally:
            if hidden in sys.modules and sys.modules[hidden] is self._replacement:
                del sys.modules[hidden]


def _deferred_package(name: str) -> types.ModuleType:
    """Package ``name`` with its submodules importable and its ``__init__`` not yet run.

    The first time a name the package itself would define is asked for (``from
    parsl import python_app`` in a researcher's task, ``parsl.load``), its
    ``__init__`` runs in place and the name is looked up again, so no import
    anyone writes behaves differently; the package merely costs its memory then.
    """
    parent, _, child = name.rpartition(".")
    path = sys.modules[parent].__path__ if parent else None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"no package {name}", name=name)
    module = importlib.util.module_from_spec(spec)
    lock = threading.Lock()

    def complete(attribute: str) -> t.Any:
        defined_in = DEFINED_IN.get(name, {}).get(attribute)
        if defined_in is not None:
            value = getattr(importlib.import_module(defined_in), attribute)
            setattr(module, attribute, value)
            return value
        if importlib.machinery.PathFinder.find_spec(f"{name}.{attribute}", module.__path__):
            # a submodule: the import system loads it (``from parsl import curvezmq``)
            # or finds it half-loaded in sys.modules during a circular import
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        with lock:
            if module.__dict__.get("__getattr__") is complete:
                del module.__dict__["__getattr__"]
                spec.loader.exec_module(module)
        return getattr(module, attribute)

    module.__getattr__ = complete  # type: ignore[method-assign]
    sys.modules[name] = module
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def defer() -> None:
    """Before Parsl is imported: Parsl's package ``__init__`` files run only if
    something asks for a name they define (a task's ``from parsl import
    python_app`` gets all of Parsl, as without this)."""
    if not any(name in sys.modules for name in DEFERRED_PACKAGES):
        for name in DEFERRED_PACKAGES:
            _deferred_package(name)


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
