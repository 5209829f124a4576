"""The engine's window: a floor for tasks of any length, opened by what the engine finishes."""

from __future__ import annotations

import pytest

from uep.window import MAX_PREFETCH, OPENING, SLACK, SMALL_TASK_BYTES, SOON_S, Window


@pytest.mark.parametrize(
    ("capacity", "floor"),
    [(1, 1 + SLACK), (2, 2 + SLACK), (SLACK, 2 * SLACK), (100, 200), (MAX_PREFETCH, MAX_PREFETCH)],
)
def test_the_floor_is_the_capacity_plus_a_slack_and_fits_sixteen_bits(capacity, floor):
    window = Window(capacity)
    assert window.floor == floor
    assert window.ceiling == min(MAX_PREFETCH, floor + OPENING)
    assert window.size(0.0) == floor


def test_tasks_that_finish_slowly_leave_the_window_at_its_floor():
    window = Window(2)
    for second in range(1, 100):
        window.finished(2, float(second))  # two workers, one-second tasks
        assert window.size(second + SOON_S) == window.floor


def test_what_finished_within_soon_s_opens_the_window():
    window = Window(2)
    window.finished(10, 5.0)
    window.finished(30, 5.1)
    assert window.size(5.1) == window.floor + 40
    assert window.size(5.0 + SOON_S) == window.floor + 30, "the first batch is older than SOON_S"
    assert window.size(5.1 + SOON_S) == window.floor


def test_the_window_never_opens_past_its_ceiling():
    window = Window(2)
    window.finished(10 * OPENING, 1.0)
    assert window.size(1.0) == window.ceiling == window.floor + OPENING


def test_nothing_finished_counts_as_nothing():
    window = Window(4)
    window.finished(0, 1.0)
    window.finished(-3, 1.0)
    assert window.size(1.0) == window.floor


def test_the_broker_sends_ahead_only_small_tasks_that_finish_quickly():
    window = Window(2)
    assert not window.sends_ahead(1.0, 100), "nothing finished yet"
    window.finished(SLACK + 1, 1.0)
    assert window.sends_ahead(1.0, 100)
    assert window.sends_ahead(1.0, SMALL_TASK_BYTES)
    assert not window.sends_ahead(1.0, SMALL_TASK_BYTES + 1)
    assert not window.sends_ahead(1.0 + SOON_S, 100), "the burst is over"
