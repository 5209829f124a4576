"""How many wrong client secrets a client id, or an address, may try before it must wait.

Every attempt that reaches the secret check costs the service an scrypt hash;
an attacker guessing one client's secret, or trying many client ids from one
address, is stopped after ``limit`` failures within ``window_s``: further
attempts get 429 (with the seconds to wait) before any hashing, until the
oldest failure leaves the window. A success clears the client id's count, not
the address's. Kept in memory, per service process; the number of keys tracked
is bounded, so random client ids cannot grow it without end.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable

MAX_KEYS = 100_000


class FailureWindow:
    """Recent failures per key (a client id or an address), thread-safe."""

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        failures = self._failures.get(key, collections.deque())
        while failures and now - failures[0] >= self.window_s:
            failures.popleft()
        return failures

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None if it may now."""
        with self._lock:
            now = self._clock()
            failures = self._recent(key, now)
            if len(failures) < self.limit:
                return None
            return max(1.0, self.window_s - (now - failures[0]))

    def failed(self, key: str) -> int:
        """Count a failure; how many ``key`` has in the window now."""
        with self._lock:
            now = self._clock()
            failures = self._recent(key, now)
            failures.append(now)
            self._failures[key] = failures
            self._failures.move_to_end(key)
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)
            return len(failures)

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


@dataclasses.dataclass
class LoginLimits:
    """Failures per client id and per address; either over its limit refuses."""

    clients: FailureWindow
    addresses: FailureWindow

    @classmethod
    def of(cls, per_client: int, per_address: int, window_s: float) -> LoginLimits:
        return cls(FailureWindow(per_client, window_s), FailureWindow(per_address, window_s))

    def retry_after(self, client_id: str, address: str) -> float | None:
        waits = [self.clients.retry_after(client_id), self.addresses.retry_after(address)]
        waits = [w for w in waits if w is not None]
        return max(waits) if waits else None

    def failed(self, client_id: str, address: str) -> tuple[int, int]:
        return self.clients.failed(client_id), self.addresses.failed(address)

    def succeeded(self, client_id: str) -> None:
        self.clients.forget(client_id)
