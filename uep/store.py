"""The endpoint's memory on disk: accepted tasks and unconfirmed results.

One SQLite file in WAL mode with ``synchronous=FULL``, so a commit is on disk
when it returns, and one commit covers a whole batch (a fsync per batch, not per
task). Three tables:

- ``tasks``: accepted (about to be acked) and not yet answered. A task is
  journaled here *before* its delivery is acked, so a crash cannot lose it.
- ``results``: answers not yet confirmed by the broker. A result is written
  here *before* it is published and deleted only on the broker's confirm.
- ``answered``: ids already answered, so a redelivered copy of a task (the
  broker resends what it never saw acked) is not run or answered twice.

Storing a result removes its task and records the answer in one transaction.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

ANSWERED_KEEP_S = 14 * 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, body BLOB, headers TEXT);
CREATE TABLE IF NOT EXISTS results (task_id TEXT PRIMARY KEY, body BLOB);
CREATE TABLE IF NOT EXISTS answered (task_id TEXT PRIMARY KEY, at REAL);
"""


class Store:
    """Used from one thread only (the endpoint's event loop)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        with self._tx():
            self._db.execute("DELETE FROM answered WHERE at < ?", (time.time() - ANSWERED_KEEP_S,))

    def _tx(self):
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def known(self, task_id: str) -> bool:
        """True if the task is journaled, answered, or awaiting confirm."""
        row = self._db.execute(
            "SELECT 1 FROM tasks WHERE task_id=?1 UNION ALL SELECT 1 FROM answered"
            " WHERE task_id=?1 UNION ALL SELECT 1 FROM results WHERE task_id=?1 LIMIT 1",
            (task_id,),
        ).fetchone()
        return row is not None

    def journaled(self, task_id: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM tasks WHERE task_id=?", (task_id,)).fetchone()
            is not None
        )

    def accept(self, tasks: list[tuple[str, bytes, str]], results: list[tuple[str, bytes]]) -> None:
        """Journal accepted tasks and store immediate answers (rejections) at once."""
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO tasks VALUES (?, ?, ?)", tasks)
            self._add_results(db, results)

    def add_results(self, results: list[tuple[str, bytes]]) -> None:
        with self._tx() as db:
            self._add_results(db, results)

    @staticmethod
    def _add_results(db: sqlite3.Connection, results: list[tuple[str, bytes]]) -> None:
        now = time.time()
        db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", results)
        db.executemany("DELETE FROM tasks WHERE task_id=?", [(r[0],) for r in results])
        db.executemany(
            "INSERT OR REPLACE INTO answered VALUES (?, ?)", [(r[0], now) for r in results]
        )

    def confirmed(self, task_ids: list[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM results WHERE task_id=?", [(i,) for i in task_ids])

    def pending_results(self) -> list[tuple[str, bytes]]:
        return self._db.execute("SELECT task_id, body FROM results").fetchall()

    def unfinished_tasks(self) -> list[tuple[str, bytes, str]]:
        return self._db.execute("SELECT task_id, body, headers FROM tasks").fetchall()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, kind, value, tb) -> None:
        """Commit; on any failure (a full disk fails the commit itself) leave no
        transaction open, so the next one can begin once there is room."""
        try:
            if kind is None:
                self._db.execute("COMMIT")
                return
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
