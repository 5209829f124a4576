"""Proportional set size (PSS) of process trees, read from ``/proc``.

PSS charges each shared page to the processes sharing it in equal parts, so the
PSS of a set of processes is what that set costs the machine: the sum over all
users' trees plus the manager is the memory the appliance occupies.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

PROC = Path("/proc")


def _pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def _field(pid: int, name: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return line.split(":", 1)[1].strip()
    return None


def smaps_kib(pid: int, field: str) -> int:
    """One field of the process's ``smaps_rollup`` in KiB (``Pss``, ``Shared_Dirty``
    ...); 0 for a process that has gone (or a kernel thread)."""
    with contextlib.suppress(OSError):
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    """The process's PSS in KiB; 0 for a process that has gone (or a kernel thread)."""
    return smaps_kib(pid, "Pss")


def pids_of_uid(uid: int) -> list[int]:
    """Every process whose real uid is ``uid``: an account's whole user endpoint tree."""
    return [pid for pid in _pids() if uid_of(pid) == uid]


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        ppid = _field(pid, "PPid")
        if ppid is not None:
            children.setdefault(int(ppid), []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_pss_mib(pids: list[int]) -> float:
    return sum(pss_kib(pid) for pid in pids) / 1024


def manager_tree(root: int, user_uids: set[int]) -> list[int]:
    """The manager: the tree under ``root`` but the user endpoints (processes of
    ``user_uids``). Ours has a root monitor and warden and an unprivileged manager."""
    return [pid for pid in descendants(root) if uid_of(pid) not in user_uids]


def uid_of(pid: int) -> int | None:
    uids = _field(pid, "Uid")
    return int(uids.split()[0]) if uids else None
