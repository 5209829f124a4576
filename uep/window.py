"""How many tasks a user endpoint lets its engine hold at once.

The first delivery rule of :mod:`uep.endpoint` is that the engine is never
handed more than it can start soon: whatever it holds beyond what runs is what
a stop answers as "state unknown" (or re-runs), while tasks left in the broker
simply wait for the next session. A window of the engine's capacity plus a
small slack keeps that promise for tasks of any length, but for short tasks it
keeps the pipeline shallow: every refill waits for a result to come back and
free room, and for the broker to send the next deliveries. Measured with
2,000 no-op tasks through two GlobusComputeEngine workers, that round trip,
not the engine, set the pace.

So the window is the floor plus what the engine actually finished in the last
``SOON_S`` seconds, up to a ceiling. Tasks that take seconds or hours leave it
at the floor; no-op tasks open it to the ceiling. Either way, what the engine
holds beyond the floor is at most about ``SOON_S`` of work at the pace it
just showed.

The broker's prefetch bounds the deliveries a session holds in memory before
the engine has room for them, and a task can be megabytes. It starts at the
floor and rises to the ceiling once per session, only when the window has
opened and the tasks seen so far are small (:meth:`Window.sends_ahead`):
RabbitMQ applies a changed per-consumer prefetch only to new consumers, so
the session has to consume again to raise it (:mod:`uep.session`).
"""

from __future__ import annotations

import collections

SOON_S = 0.25
SLACK = 16  # tasks the engine may queue beyond its capacity, whatever their length
OPENING = 256  # how far completions can widen the window beyond its floor
MAX_PREFETCH = 65535  # AMQP's prefetch count is a 16-bit field
SMALL_TASK_BYTES = 64 * 1024  # tasks this small on average may be sent ahead to the ceiling


class Window:
    """The engine's window: a floor from its capacity, widened by recent completions."""

    def __init__(self, capacity: int) -> None:
        self.floor = min(MAX_PREFETCH, max(2 * capacity, capacity + SLACK))
        self.ceiling = min(MAX_PREFETCH, self.floor + OPENING)
        self._finished: collections.deque[tuple[float, int]] = collections.deque()
        self._recent = 0

    def finished(self, count: int, now: float) -> None:
        """``count`` tasks came back from the engine at ``now`` (a monotonic clock)."""
        if count > 0:
            self._finished.append((now, count))
            self._recent += count

    def size(self, now: float) -> int:
        """How many tasks the engine may hold at ``now``."""
        while self._finished and self._finished[0][0] <= now - SOON_S:
            self._recent -= self._finished.popleft()[1]
        return min(self.ceiling, self.floor + self._recent)

    def sends_ahead(self, now: float, mean_task_bytes: float) -> bool:
        """Whether the broker may send up to the ceiling: the engine is finishing tasks
        faster than the floor can feed it, and holding a ceiling of them costs little."""
        return self.size(now) > self.floor + SLACK and mean_task_bytes <= SMALL_TASK_BYTES
