"""What the test process's own children are doing, read from /proc.

Checking "the failed child was reaped" with ``waitpid(-1, WNOHANG)`` would
both reap someone else's zombie and trip over legitimate children such as the
session's compute-service subprocess; reading /proc does neither.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def _stat_fields(entry: Path) -> list[str]:
    """``/proc/PID/stat`` after the command name (which may hold spaces and parentheses):
    state, parent, process group, session, ..."""
    return (entry / "stat").read_text().rsplit(")", 1)[1].split()


def zombie_children(parent: int | None = None) -> list[int]:
    """Pids of ``parent``'s (default: this process's) children that exited unreaped."""
    parent = os.getpid() if parent is None else parent
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(entry)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent and fields[0] == "Z":
            zombies.append(int(entry.name))
    return zombies


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = _stat_fields(Path(f"/proc/{pid}"))[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def processes_of(uid: int) -> dict[int, str]:
    """Every live (non-zombie) process of ``uid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid and alive(int(entry.name)):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (FileNotFoundError, ProcessLookupError):
            continue
    return {pid: cmd.decode(errors="replace") for pid, cmd in found.items()}


def mentioning(text: str) -> dict[int, str]:
    """Every process whose command line or working directory mentions ``text``:
    pid -> "uid, parent, directory: command line".

    For tests that run user endpoints without a monitor (no cgroup to take
    what they started): Parsl's provider runs blocks in sessions of their own,
    which outlive a killed endpoint. Their command lines and working
    directories name the test's temporary directory.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            if text not in cmdline and not f"{cwd}/".startswith(text):  # the directory too
                continue
            found[int(entry.name)] = (
                f"uid {entry.stat().st_uid}, parent {_stat_fields(entry)[1]}, in {cwd}: {cmdline}"
            )
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def kill_mentioning(text: str) -> dict[int, str]:
    """SIGKILL every process :func:`mentioning` finds; returns what was killed, so a
    report says which test's process it was."""
    killed = {}
    for pid, what in mentioning(text).items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed[pid] = what
    return killed
