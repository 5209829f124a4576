"""The failure windows behind the token route's limits, on a fake clock."""

from __future__ import annotations

from service import login_limits
from service.login_limits import FailureWindow, LoginLimits


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_waits_until_its_oldest_failure_leaves_the_window():
    clock = Clock()
    window = FailureWindow(3, 60.0, clock)
    for expected in (1, 2, 3):
        assert window.retry_after("id") is None
        assert window.failed("id") == expected
        clock.now += 10
    assert window.retry_after("id") == 30.0  # the first failure, at 1000, leaves at 1060
    clock.now += 30
    assert window.retry_after("id") is None
    assert window.failed("id") == 3  # the first has left; three in the window again


def test_a_success_clears_the_client_id_but_not_the_address():
    limits = LoginLimits(FailureWindow(2, 60.0, Clock()), FailureWindow(2, 60.0, Clock()))
    limits.failed("id", "10.0.0.1")
    limits.failed("id", "10.0.0.1")
    assert limits.retry_after("id", "10.0.0.2") is not None
    limits.succeeded("id")
    assert limits.retry_after("id", "10.0.0.2") is None
    assert limits.retry_after("another", "10.0.0.1") is not None


def test_random_keys_cannot_grow_it_without_end(monkeypatch):
    monkeypatch.setattr(login_limits, "MAX_KEYS", 100)
    window = FailureWindow(3, 60.0, Clock())
    for n in range(1000):
        window.failed(f"id-{n}")
    assert len(window._failures) == 100
