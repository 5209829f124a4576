"""The fault suite's table: printed after the run and written to bench/results/faults.json."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from tests.faults.harness import Row

ROWS: list[Row] = []
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "faults.json"
COLUMNS = (
    "fault",
    "submitted",
    "results",
    "errors",
    "lost",
    "answered_twice",
    "duplicates",
    "ran_twice",
    "seconds",
)


def table(rows: list[Row]) -> str:
    lines = [" | ".join(COLUMNS)]
    for row in rows:
        values = row.as_dict()
        lines.append(" | ".join(str(values[c]) for c in COLUMNS))
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter) -> None:
    if ROWS:
        terminalreporter.section("faults: one fault in the middle of a batch")
        terminalreporter.write_line(table(ROWS))


def pytest_sessionfinish(session) -> None:
    if not ROWS:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "what": "a batch from the official SDK with one fault in the middle, per row",
        "command": ".venv/bin/python -m pytest tests/faults",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "rows": [r.as_dict() for r in ROWS],
    }
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
