"""The pure restart policy: backoff for quick clean exits, a circuit breaker for failures."""

from __future__ import annotations

import pytest

from mep.restart_policy import (
    ExitFacts,
    History,
    RestartPolicy,
    Verdict,
    after_exit,
    after_start_failure,
    before_start,
)

POLICY = RestartPolicy(
    base_delay_s=1.0,
    max_delay_s=8.0,
    healthy_run_s=60.0,
    max_failures=3,
    window_s=600.0,
    cooldown_s=900.0,
)
QUICK_CLEAN = ExitFacts(clean=True, ran_s=2.0, stop_requested=False, description="stopped normally")
LONG_CLEAN = ExitFacts(clean=True, ran_s=3600.0, stop_requested=False)
CRASH = ExitFacts(clean=False, ran_s=2.0, stop_requested=False, description="return code 1")
STOPPED = ExitFacts(clean=False, ran_s=5.0, stop_requested=True, description="SIGTERM")


def test_clean_exit_with_work_after_a_healthy_run_restarts_now():
    d = after_exit("ep", LONG_CLEAN, True, History(), 100.0, POLICY)
    assert d.verdict is Verdict.RESTART and d.restart
    assert d.delay_s == 0.0
    assert d.history.failures == ()


def test_clean_exit_without_work_stays_stopped_and_forgets_restarts():
    d = after_exit("ep", LONG_CLEAN, False, History(restarts=4), 100.0, POLICY)
    assert d.verdict is Verdict.STAY_STOPPED
    assert d.history == History()


def test_a_short_idle_shutdown_is_not_a_failure():
    history = History()
    for now in range(10):
        d = after_exit("ep", QUICK_CLEAN, False, history, float(now), POLICY)
        assert d.verdict is Verdict.STAY_STOPPED
        history = d.history
    assert history == History()
    assert before_start("ep", history, 10.0, POLICY) is None


def test_a_crash_with_work_waiting_is_restarted_and_counts_as_a_failure():
    d = after_exit("ep", CRASH, True, History(), 100.0, POLICY)
    assert d.verdict is Verdict.RESTART and d.delay_s == 0.0
    assert d.history.failures == (100.0,)
    assert "return code 1" in d.admin_message
    again = after_exit("ep", CRASH, True, d.history, 101.0, POLICY)
    assert again.restart and again.delay_s == 1.0


def test_a_crash_with_nothing_waiting_is_restarted_to_answer_what_it_had_taken():
    d = after_exit("ep", CRASH, False, History(), 100.0, POLICY)
    assert d.verdict is Verdict.RESTART and d.history.failures == (100.0,)
    assert d.user_message == "" and "return code 1" in d.admin_message


def test_a_clean_idle_stop_says_nothing_to_anyone():
    d = after_exit("ep", QUICK_CLEAN, False, History(), 100.0, POLICY)
    assert d.verdict is Verdict.STAY_STOPPED and d.user_message == ""


def test_a_stop_the_manager_asked_for_is_not_a_failure():
    d = after_exit("ep", STOPPED, True, History(), 100.0, POLICY)
    assert d.verdict is Verdict.STAY_STOPPED
    assert d.history == History()


def test_quick_clean_exits_with_work_back_off_exponentially_up_to_the_cap():
    policy = RestartPolicy(max_failures=100, max_delay_s=8.0, base_delay_s=1.0)
    history, delays, now = History(), [], 0.0
    for _ in range(7):
        d = after_exit("ep", QUICK_CLEAN, True, history, now, policy)
        assert d.restart
        delays.append(d.delay_s)
        history, now = d.history, now + 1.0
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_healthy_run_resets_the_backoff():
    policy = RestartPolicy(max_failures=100)
    history = History(restarts=5)
    d = after_exit("ep", LONG_CLEAN, True, history, 0.0, policy)
    assert d.delay_s == 0.0 and d.history.restarts == 1


def test_failures_within_the_window_open_the_circuit_with_two_messages():
    history, now = History(), 1000.0
    for _ in range(POLICY.max_failures - 1):
        d = after_exit("my-ep", CRASH, True, history, now, POLICY)
        assert d.verdict is Verdict.RESTART
        history, now = d.history, now + 10
    d = after_exit("my-ep", QUICK_CLEAN, True, history, now, POLICY)
    assert d.verdict is Verdict.CIRCUIT_OPEN and not d.restart
    assert d.history.open_until == now + POLICY.cooldown_s
    assert "'my-ep'" in d.user_message and "15 minute" in d.user_message
    assert "administrator" in d.user_message
    assert "circuit open" in d.admin_message and "3 failures" in d.admin_message


def test_old_failures_age_out_of_the_window():
    history = History(failures=(0.0, 10.0))
    d = after_exit("ep", CRASH, True, history, 10.0 + POLICY.window_s, POLICY)
    assert d.verdict is Verdict.RESTART
    assert d.history.failures == (10.0 + POLICY.window_s,)


def test_an_open_circuit_refuses_new_starts_until_the_cooldown_ends():
    opened = History(failures=(1.0, 2.0, 3.0), open_until=903.0)
    refused = before_start("ep", opened, 500.0, POLICY)
    assert refused is not None and refused.verdict is Verdict.CIRCUIT_OPEN
    assert "7 minute" in refused.user_message
    assert before_start("ep", opened, 903.0, POLICY) is None
    assert before_start("ep", History(), 0.0, POLICY) is None


def test_an_open_circuit_also_blocks_restarts():
    opened = History(failures=(1.0, 2.0, 3.0), open_until=903.0)
    d = after_exit("ep", LONG_CLEAN, True, opened, 500.0, POLICY)
    assert d.verdict is Verdict.CIRCUIT_OPEN
    assert d.history.open_until == 903.0, "exits while open do not extend the cooldown"


def test_after_the_cooldown_the_history_starts_fresh():
    opened = History(failures=(1.0, 2.0, 3.0), restarts=3, open_until=903.0)
    d = after_exit("ep", LONG_CLEAN, True, opened, 1000.0, POLICY)
    assert d.restart and d.delay_s == 0.0
    assert d.history == History(restarts=1)


def test_failed_spawns_count_towards_the_circuit():
    history = History()
    for now in (1.0, 2.0):
        d = after_start_failure("ep", history, now, POLICY)
        assert d.verdict is Verdict.STAY_STOPPED
        history = d.history
    d = after_start_failure("ep", history, 3.0, POLICY)
    assert d.verdict is Verdict.CIRCUIT_OPEN


@pytest.mark.parametrize(
    "bad", [dict(max_failures=0), dict(base_delay_s=0), dict(window_s=-1), dict(cooldown_s=0)]
)
def test_nonsense_limits_are_refused(bad):
    with pytest.raises(ValueError):
        RestartPolicy(**bad)


def test_a_user_endpoint_that_refused_its_options_is_neither_restarted_nor_a_failure():
    refused = ExitFacts(False, 0.5, False, "return code 65", refused=True)
    history = History()
    for now in range(10):
        d = after_exit("ep", refused, True, history, float(now), POLICY)
        assert d.verdict is Verdict.STAY_STOPPED and not d.restart
        assert "refused" in d.admin_message and not d.user_message
        history = d.history
    assert history.failures == ()
    assert before_start("ep", history, 10.0, POLICY) is None


def test_a_user_endpoint_that_cannot_start_is_not_restarted_but_counts_as_a_failure():
    final = ExitFacts(False, 0.5, False, "return code 78", final=True)
    d = after_exit("ep", final, True, History(), 100.0, POLICY)
    assert d.verdict is Verdict.STAY_STOPPED and d.history.failures == (100.0,)
    assert "could not start" in d.admin_message
    for now in (101.0, 102.0):
        d = after_exit("ep", final, True, d.history, now, POLICY)
    assert d.verdict is Verdict.CIRCUIT_OPEN and d.user_message
    assert before_start("ep", d.history, 103.0, POLICY) is not None
