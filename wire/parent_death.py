"""Forked children that must not outlive the process that forked them.

Linux sends a child its parent-death signal (``PR_SET_PDEATHSIG``) when the
thread that forked it ends, however it ends, ``kill -9`` included; nothing in
Python's standard library sets it. A change of credentials clears it, so a
child that drops privileges arms it after the drop, and a parent that died
before it was armed is caught by comparing ``getppid()`` with the parent's pid
read before the fork.
"""

from __future__ import annotations

import ctypes
import os

PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent: int, signum: int, orphan_exit: int) -> None:
    """In a forked child: receive ``signum`` when ``parent`` ends; exit at once if it already has."""
    if _LIBC.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    if os.getppid() != parent:
        os._exit(orphan_exit)
