"""ThreadPoolEngine and ProcessPoolEngine: tasks run in this host's pools.

Neither imports Parsl, so an endpoint on these engines starts in a blink.

A process that dies breaks a ``ProcessPoolExecutor`` for every task in it, and
the official engine never recovers. Here the pool is rebuilt, and each task
caught in the breakage is re-run alone in a one-worker quarantine pool: only a
task that breaks its quarantine pool is the culprit, and only it fails.
"""

from __future__ import annotations

import collections
import functools
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from uep.engines.base import Engine
from uep.pool_worker import die_with_parent


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _status(engine: Engine, workers: int) -> dict:
    return {
        "engine_type": engine.type_name,
        "label": engine.label,
        "total_workers": workers,
        "max_workers_per_node": workers,
        "outstanding_tasks": engine.outstanding,
        "total_cores": _cpu_count(),
        "total_mem": _total_mem(),
    }


def _total_mem() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


class ThreadPoolEngine(Engine):
    """Threads of the endpoint process; tasks keep the process working directory."""

    type_name = "ThreadPoolEngine"
    change_dir = False

    def __init__(self, *, max_workers: int | None = None, **options) -> None:
        pool_options = {
            k: options.pop(k) for k in ("thread_name_prefix", "initializer") if k in options
        }
        super().__init__(**options)
        self.max_workers = max_workers or min(32, _cpu_count() + 4)
        self._pool_options = pool_options
        self._pool: ThreadPoolExecutor | None = None

    @property
    def capacity(self) -> int:
        return self.max_workers

    def _start(self, endpoint_dir: Path) -> None:
        self._pool = ThreadPoolExecutor(self.max_workers, **self._pool_options)

    def _submit(self, call: functools.partial, packed_task: bytes, resource_spec: dict) -> Future:
        return self._pool.submit(call, packed_task)

    def status(self) -> dict:
        return _status(self, self.max_workers)

    def shutdown(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)


class ProcessPoolEngine(Engine):
    """Spawned child processes: they never inherit the broker connection."""

    type_name = "ProcessPoolEngine"

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        max_tasks_per_child: int | None = None,
        **options,
    ) -> None:
        options.pop("mp_context", None)
        super().__init__(**options)
        self.max_workers = max_workers or _cpu_count()
        self.max_tasks_per_child = max_tasks_per_child
        self._pool: ProcessPoolExecutor | None = None
        self._quarantine = _Quarantine(lambda: self._new_pool(1))
        self._pool_lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")
        self.rebuilds = 0

    @property
    def capacity(self) -> int:
        return self.max_workers

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            workers,
            mp_context=self._context,
            initializer=die_with_parent,
            initargs=(os.getpid(),),
            max_tasks_per_child=self.max_tasks_per_child,
        )

    def _start(self, endpoint_dir: Path) -> None:
        self._pool = self._new_pool(self.max_workers)
        for _ in range(self.max_workers):  # start the workers while the broker connects
            self._pool.submit(os.getpid)

    def _current_pool(self) -> ProcessPoolExecutor:
        """The main pool, rebuilt if a dead worker broke it."""
        with self._pool_lock:
            if self._pool._broken:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool(self.max_workers)
                self.rebuilds += 1
            return self._pool

    def _submit(self, call: functools.partial, packed_task: bytes, resource_spec: dict) -> Future:
        answer: Future = Future()

        def in_main(inner: Future) -> None:
            if isinstance(inner.exception(), BrokenProcessPool):
                self._quarantine.run(call, packed_task, answer)
            else:
                _relay(inner, answer)

        try:
            inner = self._current_pool().submit(call, packed_task)
        except BrokenProcessPool:  # broke since we looked: the next look rebuilds it
            inner = self._current_pool().submit(call, packed_task)
        inner.add_done_callback(in_main)
        return answer

    def status(self) -> dict:
        return _status(self, self.max_workers)

    def shutdown(self) -> None:
        for pool in (self._pool, self._quarantine.pool):
            if pool is not None:
                for process in list((pool._processes or {}).values()):
                    process.terminate()
                pool.shutdown(wait=False, cancel_futures=True)


def _relay(inner: Future, answer: Future) -> None:
    error = inner.exception()
    if error is None:
        answer.set_result(inner.result())
    else:
        answer.set_exception(error)


class _Quarantine:
    """Re-runs suspects one at a time in a one-worker pool.

    Strictly one at a time: if two suspects shared the pool, the innocent one
    would break with the culprit and be blamed too.
    """

    def __init__(self, new_pool) -> None:
        self._new_pool = new_pool
        self.pool: ProcessPoolExecutor | None = None
        self._waiting: collections.deque = collections.deque()
        self._busy = False
        self._lock = threading.Lock()

    def run(self, call: functools.partial, packed_task: bytes, answer: Future) -> None:
        with self._lock:
            self._waiting.append((call, packed_task, answer))
            if self._busy:
                return
            self._busy = True
        self._next()

    def _next(self) -> None:
        with self._lock:
            if not self._waiting:
                self._busy = False
                return
            call, packed_task, answer = self._waiting.popleft()
            if self.pool is None or self.pool._broken:
                if self.pool is not None:
                    self.pool.shutdown(wait=False)
                self.pool = self._new_pool()
        try:
            inner = self.pool.submit(call, packed_task)
        except Exception as e:
            answer.set_exception(e)
            self._next()
            return

        def done(inner: Future) -> None:
            _relay(inner, answer)
            self._next()

        inner.add_done_callback(done)
