"""What every party wrote down during a fault run, kept for a failure message.

The user endpoints' logs and journals live in the homes of accounts the test
removes when it ends, and the service's and manager's logs in pytest's
temporary directories; :func:`collect` copies them all to one directory first,
so a lost task can be followed through every hop after the run: submitted at
the service, journaled by the user endpoint, its result stored, published,
confirmed, recorded and forwarded.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
from pathlib import Path

from tests.e2e.appliance import Manager

JOURNAL = "uep_state.sqlite3"
MENTIONS_PER_TASK = 12
ALARMS_PER_LOG = 40
_STAMPED = re.compile(r"^\d{4}-\d\d-\d\d ")
_ALARM = re.compile(r" (WARNING|ERROR|CRITICAL) ")


def _user_endpoint_dirs(mgr: Manager, config: dict) -> list[Path]:
    """Every directory holding a user endpoint's journal or log."""
    roots = [Path(account.pw_dir, ".compute_agent") for account in mgr.users]
    if config.get("state_dir"):
        roots.append(Path(config["state_dir"]))
    found = set()
    for root in roots:
        for pattern in (f"**/{JOURNAL}", "**/endpoint.log"):
            found.update(path.parent for path in root.glob(pattern))
    return sorted(found)


def _copy(source: Path, target: Path) -> None:
    """Copy one file if it is there (a party that never started wrote nothing)."""
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def collect(mgr: Manager, config: dict, keep: Path) -> Path:
    """Copy the service's, the manager's and each user endpoint's logs and journals to ``keep``."""
    keep.mkdir(parents=True, exist_ok=True)
    _copy(mgr.service.log_path, keep / "service.log")
    _copy(mgr.dir / "endpoint.log", keep / "manager" / "endpoint.log")
    _copy(mgr.root / "manager.out", keep / "manager" / "manager.out")
    for n, directory in enumerate(_user_endpoint_dirs(mgr, config)):
        for path in directory.iterdir():
            if path.name in (JOURNAL, f"{JOURNAL}-wal") or path.suffix == ".log":
                _copy(path, keep / f"uep-{n}-{directory.name}" / path.name)
    return keep


def journal_rows(keep: Path, task_id: str) -> dict[str, list[str]]:
    """Which tables of each copied user endpoint journal hold ``task_id``."""
    rows = {}
    for journal in sorted(keep.glob(f"uep-*/{JOURNAL}")):
        try:
            db = sqlite3.connect(journal)
            try:
                rows[journal.parent.name] = [
                    table
                    for table in ("tasks", "results", "answered")
                    if db.execute(f"SELECT 1 FROM {table} WHERE task_id=?", (task_id,)).fetchone()
                ]
            finally:
                db.close()
        except sqlite3.Error as e:
            rows[journal.parent.name] = [f"unreadable: {e}"]
    return rows


def mentions(keep: Path, task_id: str) -> list[str]:
    """The log lines, in every kept log, that name ``task_id``."""
    found = []
    for path in sorted(keep.rglob("*")):
        if path.suffix not in (".log", ".out"):
            continue
        for line in path.read_text(errors="replace").splitlines():
            if task_id in line:
                found.append(f"{path.relative_to(keep)}: {line[:300]}")
    return found[:MENTIONS_PER_TASK]


def alarms(keep: Path) -> list[str]:
    """Each user endpoint's warnings and errors, tracebacks included: a failed session
    names no task, yet it is often the reason one was lost."""
    found = []
    for path in sorted(keep.glob("uep-*/*.log")):
        lines, keeping = [], False
        for line in path.read_text(errors="replace").splitlines():
            if _STAMPED.match(line):
                keeping = bool(_ALARM.search(line))
            if keeping:
                lines.append(f"{path.relative_to(keep)}: {line[:300]}")
        found += lines[-ALARMS_PER_LOG:]
    return found
