"""How times, ages, durations and sizes read on a page: pure, so tests pin them down."""

from __future__ import annotations

import datetime as dt


def when(epoch: float | None) -> str:
    """An instant in UTC, to the second; a dash when it has not happened, or is no date
    (a heartbeat's ``start_unix`` comes from a researcher's process: it may be anything)."""
    if epoch is None:
        return "—"
    try:
        return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError, TypeError):
        return "—"


def span(seconds: float | None) -> str:
    """A duration, precise when short and rounded when long."""
    if seconds is None:
        return "—"
    if seconds < 0:
        seconds = 0.0
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


def age(then: float | None, now: float) -> str:
    """How long ago, or "never"."""
    if then is None:
        return "never"
    return f"{span(max(0.0, now - then))} ago"


def size(count: int | None) -> str:
    """A byte count in the unit a person reads fastest."""
    if count is None:
        return "—"
    for unit, scale in (("MB", 1 << 20), ("kB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"
