"""Creating and removing local accounts in tests (we run as root).

Several test sessions may run on one machine; ``useradd`` and friends fail
while another holds the password-database lock, so each call is retried
briefly on exactly that error and fails loudly on any other.
"""

from __future__ import annotations

import subprocess
import time


def admin_command(*argv: str) -> None:
    """Run useradd/userdel/groupadd/groupdel, retrying while the passwd lock is held."""
    for _ in range(20):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return
        if "lock" not in done.stderr:
            break
        time.sleep(0.5)
    raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
