"""Idle shutdown, decided once per heartbeat (UEP.md §1.8, same semantics).

Pure: the endpoint passes in its running totals and gets back the new state,
the process-title suffix, and whether to stop.

- ``soft == 0`` turns idle shutdown off (``hard`` is then ignored).
- Movement (a task received or a result forwarded) resets both counters.
- No movement after work has moved and every task is answered: the soft counter
  grows; at ``soft`` the endpoint stops.
- No movement otherwise (work outstanding, or nothing ever received): the hard
  counter grows; past ``max(soft + 1, hard)`` the endpoint stops.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class IdleState:
    received: int = 0
    forwarded: int = 0
    soft: int = 0
    hard: int = 0


@dataclasses.dataclass(frozen=True)
class IdleVerdict:
    state: IdleState
    title: str
    stop: str | None = None


def idle_tick(
    state: IdleState,
    received: int,
    forwarded: int,
    *,
    soft_limit: int,
    hard_limit: int,
    period: float,
) -> IdleVerdict:
    """Advance the idle counters by one heartbeat."""
    if soft_limit <= 0:
        return IdleVerdict(dataclasses.replace(state, received=received, forwarded=forwarded), "")
    moved = received != state.received or forwarded != state.forwarded
    if moved:
        return IdleVerdict(IdleState(received, forwarded), "")
    if received > 0 and forwarded >= received:
        soft = state.soft + 1
        left = max(0, soft_limit - soft) * period
        new = dataclasses.replace(state, soft=soft)
        stop = "soft" if soft >= soft_limit else None
        return IdleVerdict(new, f"[idle; shut down in {left:.0f}s]", stop)
    hard = state.hard + 1
    effective = max(soft_limit + 1, hard_limit)
    new = dataclasses.replace(state, hard=hard)
    title = ""
    if hard > soft_limit:
        title = f"[possibly idle; shut down in {max(0, effective + 1 - hard) * period:.0f}s]"
    return IdleVerdict(new, title, "hard" if hard > effective else None)
