"""The user endpoint's loop without a broker: waking sessions, its window, giving up.

Fakes stand in for the engine and for sessions; the store is the real one on a
temporary file.
"""

from __future__ import annotations

import time
from concurrent.futures import Future

import pytest

from uep import endpoint as uep_endpoint
from uep.endpoint import Settings, UserEndpoint, reconnect_delay
from uep.store import Store
from uep.window import MAX_PREFETCH, SOON_S

SETTINGS = Settings(
    heartbeat_period=30,
    idle_soft=0,
    idle_hard=0,
    amqp_port=None,
    allowed_functions=None,
    stop_grace_s=1,
    rerun_unfinished=False,
)


class FakeEngine:
    type_name = "FakeEngine"
    max_retries = 0
    outstanding = 0

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity

    def status(self) -> dict:
        return {}


class FakeSession:
    """A session whose ioloop runs what it is given only when told to."""

    def __init__(self, alive: bool = True) -> None:
        self.alive = alive
        self.calls: list = []

    def call_threadsafe(self, fn) -> bool:
        if self.alive:
            self.calls.append(fn)
        return self.alive

    def collect_results(self) -> None:
        """Stands in for the real one: only its identity matters here."""


@pytest.fixture
def endpoint(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    ep = UserEndpoint(
        engine=FakeEngine(),
        store=store,
        credentials=lambda: None,
        endpoint_id="00000000-0000-0000-0000-000000000001",
        ep_info={},
        settings=SETTINGS,
    )
    yield ep
    store.close()


def done(value: bytes) -> Future:
    future = Future()
    future.set_result(value)
    return future


def test_a_result_finished_between_sessions_still_wakes_the_next_session(endpoint):
    endpoint._session = FakeSession(alive=False)  # connection down: the wake-up is dropped
    endpoint._engine_done("t1", done(b"r1"))
    live = FakeSession()
    endpoint._session = live
    endpoint._engine_done("t2", done(b"r2"))
    assert live.calls, "a dropped wake-up left every later result waiting in memory"
    endpoint._session = None
    endpoint._engine_done("t3", done(b"r3"))
    assert endpoint._results.qsize() == 3


def test_the_window_fits_amqps_sixteen_bit_prefetch(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    try:
        big = UserEndpoint(
            engine=FakeEngine(capacity=100_000),
            store=store,
            credentials=lambda: None,
            endpoint_id="00000000-0000-0000-0000-000000000002",
            ep_info={},
            settings=SETTINGS,
        )
        assert big.window.floor == big.window.ceiling == MAX_PREFETCH == 65535
    finally:
        store.close()


def test_reconnect_delays_grow_to_thirty_seconds_and_never_stop():
    delays = [reconnect_delay(n) for n in range(1, 40)]
    assert delays[0] < 1.5 and max(delays) <= 30.0 * 1.2
    assert min(delays[10:]) >= 30.0 * 0.8


class Outage:
    """Sessions that fail for ``down`` attempts, then open and stop the endpoint."""

    def __init__(self, down: int, refused: bool) -> None:
        self.down, self.refused, self.made = down, refused, 0

    def __call__(self, ep):
        outage = self

        class Session:
            refused = outage.refused and outage.made <= outage.down

            def run(self) -> bool:
                outage.made += 1
                if outage.made <= outage.down:
                    return False
                ep.note_stop("test over")
                return True

        return Session()


def test_a_long_outage_is_waited_out_and_refusals_are_not(endpoint, monkeypatch):
    monkeypatch.setattr(endpoint, "_wait_offline", lambda _s: None)
    monkeypatch.setattr(uep_endpoint, "Session", Outage(down=50, refused=False))
    assert endpoint.run() == 0, "a broker outage made the endpoint give up"
    endpoint.stop_reason = None
    monkeypatch.setattr(uep_endpoint, "Session", Outage(down=50, refused=True))
    assert endpoint.run() == 1
    assert "refused" in endpoint.stop_reason


def test_results_the_engine_hands_back_widen_the_window(endpoint):
    """Only stored results of journaled tasks count: a late answer is not the engine's pace."""
    floor = endpoint.window.floor
    endpoint.store.accept([(f"t{n}", b"task", "{}") for n in range(3)], [])
    for n in range(3):
        endpoint._results.put((f"t{n}", b"result"))
    endpoint._results.put(("never-journaled", b"result"))
    now = time.monotonic()
    assert len(endpoint.take_results()) == 3
    assert endpoint.window.size(now) == floor + 3
    assert endpoint.window.size(now + SOON_S + 1) == floor
