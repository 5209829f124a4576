"""Every process a user endpoint starts lives in its cgroup, and goes with it.

Provider blocks start in sessions of their own, worker pools daemonize,
researchers double-fork: process groups and parent links do not hold a user
endpoint's processes together, a cgroup does. In the cgroup v2 ("unified")
hierarchy the monitor keeps

    <its own cgroup>/compute-agent.<endpoint key>/<local account>/<user endpoint>

Each user endpoint joins its *cell* right after fork, while still root and
before it can start anything; when it exits, is killed, or the monitor stops,
``cgroup.kill`` takes every process of the cell at once (no pid is read and then
signalled, so nothing recycled can be hit). Per-account limits (memory,
processes) sit on the ``<local account>`` level, in v2 when its controllers are
available there, otherwise in the cgroup v1 ``memory`` and ``pids``
hierarchies, laid out the same way.

If the monitor dies (kill -9 included), its *warden*, a small shell child that
only waits for the end of a pipe the monitor holds (``warden.sh``), gives the
user endpoints a moment to stop on their own and then kills every cell. Without cgroup v2 the monitor becomes a child
subreaper instead (see :mod:`mep.monitor.children`): a user endpoint's orphans are
reparented to the monitor, which kills them once that account runs no user
endpoint; a monitor killed with SIGKILL leaves them to init there.

Parsing /proc is pure (:func:`read_layout`); everything else writes cgroupfs.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import logging
import os
import signal
import time
import typing as t
from pathlib import Path

log = logging.getLogger(__name__)
RELEASE_WAIT_S = 5.0
WARDEN_TITLE = "compute-agent warden"
WARDEN_SCRIPT = Path(__file__).with_name("warden.sh")
_WARDEN_IGNORES = {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM}
_POLL_S = 0.05
_LIMIT_FILES = {
    # controller: (v2 file, v1 file)
    "memory": ("memory.max", "memory.limit_in_bytes"),
    "pids": ("pids.max", "pids.max"),
}


class ContainmentError(Exception):
    """A cgroup could not be made or joined; the message names the path."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where our own cgroups are: the v2 directory, and v1 ones by controller."""

    unified: Path | None
    unified_controllers: frozenset[str] = frozenset()
    v1: t.Mapping[str, Path] = dataclasses.field(default_factory=dict)


def _mounts(mountinfo: str) -> tuple[tuple[str, Path] | None, dict[str, tuple[str, Path]]]:
    """(root, mount point) of the v2 mount and of each v1 controller's mount."""
    unified, v1 = None, {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        root, point = fields[3], Path(fields[4])
        if tail[0] == "cgroup2" and unified is None:
            unified = (root, point)
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                v1.setdefault(option, (root, point))
    return unified, v1


def _join(mount: tuple[str, Path], own: str) -> Path:
    """Our cgroup as a directory: its path made relative to what the mount shows."""
    root, point = mount
    relative = own[len(root) :] if root != "/" and own.startswith(root) else own
    return point / relative.lstrip("/")


def read_layout(proc_cgroup: str, mountinfo: str, controllers: str = "") -> Layout:
    """The layout from ``/proc/self/cgroup``, ``/proc/self/mountinfo`` and our v2
    ``cgroup.controllers``."""
    unified_mount, v1_mounts = _mounts(mountinfo)
    unified, v1 = None, {}
    for line in proc_cgroup.splitlines():
        number, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if number == "0" and not names and unified_mount is not None:
            unified = _join(unified_mount, path)
        for name in filter(None, names.split(",")):
            if name in _LIMIT_FILES and name in v1_mounts:
                v1[name] = _join(v1_mounts[name], path)
    return Layout(unified, frozenset(controllers.split()), v1)


def current_layout() -> Layout:
    def read(path: str) -> str:
        with contextlib.suppress(OSError), open(path) as f:
            return f.read()
        return ""

    layout = read_layout(read("/proc/self/cgroup"), read("/proc/self/mountinfo"))
    if layout.unified is None:
        return layout
    controllers = read(str(layout.unified / "cgroup.controllers"))
    return dataclasses.replace(layout, unified_controllers=frozenset(controllers.split()))


def _component(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ContainmentError(f"{name!r} cannot name a cgroup")
    return name


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@dataclasses.dataclass
class Cell:
    """One user endpoint's cgroups: v2 holds it together, v1 ones only carry limits."""

    name: str
    unified: Path | None
    others: tuple[Path, ...] = ()

    @property
    def dirs(self) -> tuple[Path, ...]:
        return ((self.unified,) if self.unified else ()) + self.others

    def join_fds(self) -> tuple[int, ...]:
        """``cgroup.procs`` of each directory, open for the forked child to write "0" to."""
        fds = []
        try:
            for directory in self.dirs:
                fds.append(os.open(directory / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        except OSError as e:
            for fd in fds:
                os.close(fd)
            raise ContainmentError(f"cannot open {directory}/cgroup.procs: {e}") from None
        return tuple(fds)

    def populated(self) -> bool:
        if self.unified is None:
            return False
        try:
            events = (self.unified / "cgroup.events").read_text()
        except FileNotFoundError:
            return False
        return "populated 1" in events

    def kill(self) -> None:
        if self.unified is not None:
            with contextlib.suppress(FileNotFoundError):
                _write(self.unified / "cgroup.kill", "1")

    def remove(self) -> None:
        for directory in self.dirs:
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()


class Containment:
    """The cells of one manager's user endpoints."""

    def __init__(
        self,
        layout: Layout,
        endpoint_key: str,
        memory_per_user: int | None = None,
        processes_per_user: int | None = None,
    ) -> None:
        self.layout = layout
        self.tag = f"compute-agent.{_component(endpoint_key)}"
        self.limits = {"memory": memory_per_user, "pids": processes_per_user}
        self.cells: dict[str, Cell] = {}
        self.unified_base: Path | None = None
        self.v1_bases: dict[str, Path] = {}
        self.warden_pid: int | None = None
        self._warden_pipe: int | None = None

    @property
    def contained(self) -> bool:
        """True when cells hold user endpoints together; False on the subreaper floor."""
        return self.unified_base is not None

    @property
    def _wanted(self) -> set[str]:
        return {c for c, v in self.limits.items() if v is not None}

    @property
    def _in_unified(self) -> set[str]:
        return self._wanted & self.layout.unified_controllers if self.unified_base else set()

    # ---- set-up --------------------------------------------------------
    def prepare(self) -> None:
        """Make the base directories (sweeping a dead predecessor's cells), or fall back."""
        if self.layout.unified is not None:
            try:
                wanted = self._wanted & self.layout.unified_controllers
                self.unified_base = _unified_base(self.layout.unified, self.tag, wanted)
            except OSError as e:
                log.warning(
                    "no cgroup v2 containment (%s); orphans of user endpoints are killed"
                    " through the monitor as their subreaper instead",
                    e,
                )
        for controller in sorted(self._wanted - self._in_unified):
            own = self.layout.v1.get(controller)
            if own is None:
                log.warning("limit on %s not enforced: no cgroup offers it", controller)
                continue
            base = own / self.tag
            _sweep(base)
            base.mkdir(exist_ok=True)
            self.v1_bases[controller] = base
        if self.unified_base is None:
            _become_subreaper()

    # ---- cells ---------------------------------------------------------
    def cell(self, account: str, name: str) -> Cell:
        """The cell for user endpoint ``name`` of ``account`` (made, with its account's limits)."""
        account, name = _component(account), _component(name)
        try:
            unified = None
            if self.unified_base is not None:
                limits = {c: self.limits[c] for c in self._in_unified}
                unified = _level(self.unified_base, account, limits, v2=True) / name
                unified.mkdir(exist_ok=True)
            others = []
            for controller, base in sorted(self.v1_bases.items()):
                limit = {controller: self.limits[controller]}
                others.append(_level(base, account, limit, v2=False) / name)
                others[-1].mkdir(exist_ok=True)
        except OSError as e:
            raise ContainmentError(f"cannot make the cgroup of {name}: {e}") from None
        cell = Cell(name, unified, tuple(others))
        self.cells[name] = cell
        return cell

    def release(self, name: str) -> None:
        """Kill whatever is left in ``name``'s cell and remove it (and an emptied account level)."""
        cell = self.cells.pop(name, None)
        if cell is None:
            return
        cell.kill()
        deadline = time.monotonic() + RELEASE_WAIT_S
        while cell.populated() and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if cell.populated():
            log.error(
                "the cgroup of %s still has processes %.0f s after cgroup.kill",
                name,
                RELEASE_WAIT_S,
            )
        cell.remove()
        for directory in cell.dirs:
            with contextlib.suppress(OSError):
                directory.parent.rmdir()  # succeeds once the account has no cells left

    def close(self) -> None:
        """At manager stop: release every cell, stop the warden, remove the bases."""
        for name in list(self.cells):
            self.release(name)
        self._stop_warden()
        for base in (self.unified_base, *self.v1_bases.values()):
            if base is not None:
                _sweep(base)

    # ---- the warden ----------------------------------------------------
    def start_warden(self) -> None:
        """Start the process that kills every cell if the monitor dies.

        A fork that at once becomes ``/bin/sh`` running ``warden.sh`` as root, with
        only the read end of a pipe (its standard input) and /dev/null: the
        monitor holds the write end, close-on-exec, so no user endpoint or
        manager keeps the pipe open when the monitor is gone.
        """
        if not self.contained:
            return
        if not WARDEN_SCRIPT.is_file():
            log.error(
                "%s is missing (a broken installation): if the monitor is killed, what"
                " its user endpoints started outlives it",
                WARDEN_SCRIPT,
            )
            return
        bases = [str(b) for b in (self.unified_base, *self.v1_bases.values()) if b]
        read_end, write_end = os.pipe()
        argv = [f"{WARDEN_TITLE} {bases[0]}", str(WARDEN_SCRIPT), *bases]
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WARDEN_IGNORES)
        pid = os.fork()
        if pid == 0:
            _exec_warden(read_end, argv, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(read_end)
        self.warden_pid, self._warden_pipe = pid, write_end

    def _stop_warden(self) -> None:
        """Tell the warden this is a normal stop, and reap it."""
        if self._warden_pipe is not None:
            with contextlib.suppress(OSError):
                os.write(self._warden_pipe, b"stop\n")
            os.close(self._warden_pipe)
            self._warden_pipe = None
        if self.warden_pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.warden_pid, 0)
            self.warden_pid = None


def _exec_warden(pipe: int, argv: list[str], mask: set) -> t.NoReturn:
    """In the forked child: the pipe becomes stdin, /dev/null the rest, then exec.

    The stop signals were blocked across the fork and are ignored before they
    are unblocked, so no handler of the monitor's ever runs in this copy of it.
    """
    try:
        for sig in _WARDEN_IGNORES:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        null = os.open(os.devnull, os.O_RDWR)  # hold no one's pipe (start waits on stdout)
        os.dup2(pipe, 0)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.execve("/bin/sh", argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    finally:
        os._exit(127)


def _write_controllers(cgroup: Path, controllers: t.Iterable[str]) -> None:
    names = sorted(controllers)
    if names:
        _write(cgroup / "cgroup.subtree_control", " ".join(f"+{c}" for c in names))


def _unified_base(own: Path, tag: str, controllers: set[str]) -> Path:
    """``<own>/<tag>``, with ``controllers`` reaching the account levels below it."""
    is_root = not (own / "cgroup.type").exists()
    if controllers and not is_root and (own / "cgroup.procs").read_text().split():
        # The "no internal processes" rule: controllers reach the children only of
        # a cgroup that holds no process itself, so the monitor steps into a leaf.
        leaf = own / "manager"
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", "0")
    base = own / tag
    _sweep(base)
    _write_controllers(own, controllers)
    base.mkdir()
    _write_controllers(base, controllers)
    return base


def _level(base: Path, account: str, limits: dict[str, int], *, v2: bool) -> Path:
    """The account's directory under ``base``, made with its limits the first time."""
    level = base / account
    if not level.is_dir():
        level.mkdir()
        for controller, value in limits.items():
            v2_file, v1_file = _LIMIT_FILES[controller]
            _write(level / (v2_file if v2 else v1_file), str(value))
    return level


def _sweep(base: Path) -> None:
    """Kill every process under ``base`` (v2) and remove its directories, deepest first.

    A v1 base only carries limits: its members are the v2 cells' and leave with them.
    """
    if not base.is_dir():
        return
    with contextlib.suppress(OSError):
        if (base / "cgroup.kill").exists():
            _write(base / "cgroup.kill", "1")
    deadline = time.monotonic() + RELEASE_WAIT_S
    for root, _dirs, _files in os.walk(base, topdown=False):
        while True:
            try:
                os.rmdir(root)
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    break
                time.sleep(_POLL_S)


_PR_SET_CHILD_SUBREAPER = 36
_LIBC = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _LIBC.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _become_subreaper() -> None:
    try:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    except OSError as e:
        log.error("cannot become a child subreaper (%s): user endpoints may leave orphans", e)
