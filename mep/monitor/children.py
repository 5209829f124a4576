"""The monitor's children: one user endpoint per name, reaped, stopped as their own user.

Every exit, whether noticed after SIGCHLD or caused by :meth:`ChildTable.stop`,
comes out of :meth:`ChildTable.reap` exactly once, and becomes one ``exited``
event for the manager (which decides about restarts). Children are waited for
by pid, never with ``waitpid(-1)``: that would steal the exit status of
processes other code waits for (the manager itself, signal helpers).

Stopping sends SIGTERM to the user endpoint itself (our unreaped child, so its
pid cannot have been recycled), waits the grace period, then SIGKILL to its
process group through :func:`mep.monitor.spawn.signal_as_user`. Only the user
endpoint is asked to stop: the processes of its engine (a Parsl interchange
shares its process group) must keep serving while it finishes running tasks;
its cgroup (:mod:`mep.monitor.containment`) takes whatever is left afterwards. The
exit is observed with ``WNOWAIT`` so the zombie still holds the group id while
the final SIGKILL sweeps stragglers: the id cannot be recycled in between.

Not thread-safe: call it from the monitor's loop only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from identity.policy import LocalAccount
from mep.monitor.spawn import Spawned, signal_as_user

log = logging.getLogger(__name__)
POLL_S = 0.05
KILL_WAIT_S = 10.0


@dataclass(frozen=True)
class ExitRecord:
    name: str
    pid: int
    account: LocalAccount
    rc: int | None  # None when killed by a signal or when the status is unknown
    signal: int | None
    ran_s: float
    stop_requested: bool
    endpoint_id: str = ""

    @property
    def clean(self) -> bool:
        return self.rc == 0

    def describe(self) -> str:
        if self.signal is not None:
            return f"terminated by signal {_signal_name(self.signal)}"
        if self.rc is None:
            return "exit status unknown (reaped elsewhere)"
        return "stopped normally" if self.rc == 0 else f"return code {self.rc}"

    def event(self) -> dict:
        """What the manager is told (it decides about restarts)."""
        return {
            "event": "exited",
            "name": self.name,
            "pid": self.pid,
            "rc": self.rc,
            "signal": self.signal,
            "ran_s": round(self.ran_s, 3),
            "stop_requested": self.stop_requested,
        }


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


@dataclass
class Child:
    name: str
    spawned: Spawned
    started_at: float
    stop_requested: bool = False
    endpoint_id: str = ""


class ChildTable:
    """Running user endpoints by name."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._children: dict[str, Child] = {}
        self._exited: list[ExitRecord] = []

    def add(self, name: str, spawned: Spawned, endpoint_id: str = "") -> Child:
        if name in self._children:
            raise ValueError(f"user endpoint {name!r} is already running")
        child = Child(name, spawned, self._clock(), endpoint_id=endpoint_id)
        self._children[name] = child
        return child

    def get(self, name: str) -> Child | None:
        return self._children.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._children

    def __len__(self) -> int:
        return len(self._children)

    # ---- exits ---------------------------------------------------------
    def reap(self) -> list[ExitRecord]:
        """Collect every child that has exited (after SIGCHLD, or stopped meanwhile)."""
        for child in list(self._children.values()):
            self._collect(child)
        exited, self._exited = self._exited, []
        return exited

    def _collect(self, child: Child) -> bool:
        """Reap ``child`` if it has exited; True if it is gone."""
        try:
            pid, status = os.waitpid(child.spawned.pid, os.WNOHANG)
        except ChildProcessError:
            rc = sig = None
        else:
            if pid == 0:
                return False
            code = os.waitstatus_to_exitcode(status)
            rc, sig = (code, None) if code >= 0 else (None, -code)
        del self._children[child.name]
        ran = self._clock() - child.started_at
        record = ExitRecord(
            child.name,
            child.spawned.pid,
            child.spawned.account,
            rc,
            sig,
            ran,
            child.stop_requested,
            child.endpoint_id,
        )
        self._exited.append(record)
        return True

    # ---- orphans (no cgroups: the manager is their subreaper) ----------
    def reap_orphans(self, everyone: bool = False, spare: Iterable[int] = ()) -> list[int]:
        """Kill and reap processes reparented to us, once their account runs no user endpoint.

        Without cgroups a user endpoint's descendants that outlive their parent
        (provider blocks, daemons) are reparented to the manager, a child
        subreaper. Being our unreaped children, their pids cannot be recycled,
        so root may signal them directly. ``everyone`` (at stop) spares none of
        them; ``spare`` are children that are not user endpoints (the manager).
        """
        known = {c.spawned.pid for c in self._children.values()} | set(spare)
        busy = set() if everyone else {c.spawned.account.uid for c in self._children.values()}
        reaped = []
        for pid, uid, zombie in _adopted(os.getpid(), known):
            if not zombie and uid in busy:
                continue
            if not zombie:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            reaped.append(pid)
        if reaped:
            log.info("killed and reaped %d orphaned process(es) of user endpoints", len(reaped))
        return reaped

    # ---- stopping ------------------------------------------------------
    def stop(self, name: str, grace_s: float) -> bool:
        """SIGTERM, grace, SIGKILL; True once gone. The exit comes out of the next reap()."""
        child = self._children.get(name)
        if child is None:
            return True
        return not self._stop_group([child], grace_s)

    def terminate_all(self) -> None:
        """SIGTERM to every user endpoint, without waiting: the caller's loop reaps them."""
        for child in self._children.values():
            child.stop_requested = True
            if not _has_exited(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.spawned.pid, signal.SIGTERM)

    def kill_all(self) -> None:
        """SIGKILL to the process group of every user endpoint still here, as its user."""
        for child in self._children.values():
            self._signal(child, signal.SIGKILL)

    def stop_all(self, grace_s: float) -> None:
        """Stop every child at once: one grace period in total, not one per child."""
        left = self._stop_group(list(self._children.values()), grace_s)
        for child in left:
            log.error(
                "user endpoint %s (pid %d) survived SIGKILL for %.0f s (uninterruptible?)",
                child.name,
                child.spawned.pid,
                KILL_WAIT_S,
            )

    def _stop_group(self, children: list[Child], grace_s: float) -> list[Child]:
        for child in children:
            child.stop_requested = True
            if not _has_exited(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.spawned.pid, signal.SIGTERM)
        self._wait(children, grace_s, _has_exited)
        for child in children:
            self._signal(child, signal.SIGKILL)
        return self._wait(children, KILL_WAIT_S, self._collect)

    @staticmethod
    def _wait(
        children: Iterable[Child], timeout_s: float, done: Callable[[Child], bool]
    ) -> list[Child]:
        """Poll until ``done`` holds for every child or time is up; returns the rest."""
        deadline = time.monotonic() + timeout_s
        pending = [c for c in children if not done(c)]
        while pending and time.monotonic() < deadline:
            time.sleep(POLL_S)
            pending = [c for c in pending if not done(c)]
        return pending

    @staticmethod
    def _signal(child: Child, sig: int) -> None:
        spawned = child.spawned
        try:
            signal_as_user(spawned.account, spawned.pgid, sig)
        except ProcessLookupError:
            pass  # the group is already empty
        except OSError as e:
            log.warning(
                "could not send %s to user endpoint %s (pgid %d) as uid %d: %s",
                _signal_name(sig),
                child.name,
                spawned.pgid,
                spawned.account.uid,
                e,
            )


def _adopted(parent: int, known: set[int]) -> list[tuple[int, int, bool]]:
    """(pid, uid, is zombie) of every child of ``parent`` that the table did not start."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in known:
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        if int(status.get("PPid", "0").strip() or 0) != parent:
            continue
        zombie = status.get("State", "").strip().startswith("Z")
        found.append((int(entry.name), int(status["Uid"].split()[0]), zombie))
    return found


def _has_exited(child: Child) -> bool:
    """True once the child is a zombie, without reaping it (its pgid stays reserved)."""
    try:
        info = os.waitid(os.P_PID, child.spawned.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None
