"""Idle shutdown decisions (UEP.md §1.8), one heartbeat at a time."""

from uep.idle import IdleState, idle_tick


def run(ticks, soft, hard, period=5.0):
    """Feed (received, forwarded) totals per beat; the beat index that stops, and titles."""
    state, titles = IdleState(), []
    for n, (received, forwarded) in enumerate(ticks, 1):
        verdict = idle_tick(
            state, received, forwarded, soft_limit=soft, hard_limit=hard, period=period
        )
        state = verdict.state
        titles.append(verdict.title)
        if verdict.stop:
            return n, verdict.stop, titles
    return None, None, titles


def test_soft_zero_disables_idle_shutdown():
    assert run([(0, 0)] * 100, soft=0, hard=1)[0] is None


def test_soft_limit_counts_quiet_beats_after_all_work_is_answered():
    beat, reason, titles = run([(0, 0), (1, 1), (1, 1), (1, 1), (1, 1)], soft=2, hard=100)
    assert (beat, reason) == (4, "soft")
    assert titles[2] == "[idle; shut down in 5s]"
    assert titles[1] == ""


def test_outstanding_work_counts_toward_hard_not_soft():
    ticks = [(1, 0)] * 10
    beat, reason, titles = run(ticks, soft=2, hard=4)
    assert (beat, reason) == (6, "hard")
    assert titles[2] == "" and titles[3] == "[possibly idle; shut down in 10s]"


def test_effective_hard_limit_is_at_least_soft_plus_one():
    beat, reason, _ = run([(0, 0)] * 10, soft=3, hard=1)
    assert (beat, reason) == (5, "hard")


def test_movement_resets_both_counters():
    ticks = [(1, 1), (1, 1), (2, 2), (2, 2), (2, 2)]
    beat, reason, _ = run(ticks, soft=2, hard=100)
    assert (beat, reason) == (5, "soft")
