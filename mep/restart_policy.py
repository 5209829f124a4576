"""When to start a user endpoint again after it exits: backoff and a circuit breaker.

Pure: facts and history in, a :class:`Decision` (with the new history) out.

Upstream restarts a cleanly exited user endpoint at once and never one that
failed, and has nothing against a start-fail-start loop driven by new start
commands: ALCF documents the resulting runaway batch-job submission, stoppable
only by deleting a PID file. Here:

- a clean exit with nothing waiting is an idle shutdown, however short the
  run, and never counts;
- a crash (an OOM kill, a segfault, a non-zero exit) is restarted, even with
  nothing waiting in its queue: only its journal knows which tasks it had taken
  and not answered, and the new run answers them (their results may also still
  be on their way, which a notice from the manager would overtake);
- a clean exit with tasks waiting in its queue is restarted too;
- restarts come at once after a healthy run and with exponential backoff when
  exits keep happening quickly;
- ``max_failures`` failures within ``window_s`` open the circuit: no restart
  and no new start until ``cooldown_s`` has passed, with a message saying so to
  the user and to the admin.

A failure is a non-zero exit or a signal, a failed spawn, or a quick clean exit
while work was pending. Two exit statuses of a user endpoint are never restarted,
since a rerun with the same start command repeats them: 65 (it refused its
input: the submitter's options failed rendering, told to the submitter, and
not counted as a failure) and 78 (it could not start with that config, e.g.
``endpoint_setup`` failed; counted).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from templates.manager_config import RestartPolicy

REFUSED_EXIT = 65  # EX_DATAERR, from the user endpoint
FINAL_EXIT = 78  # EX_CONFIG


@dataclass(frozen=True)
class ExitFacts:
    """What the policy needs to know about one exit."""

    clean: bool  # exit code 0
    ran_s: float
    stop_requested: bool  # the manager stopped it: never a failure, never restarted
    description: str = ""  # e.g. "return code 1", for the messages
    refused: bool = False  # it refused its input (rendering, payload): a rerun repeats that
    final: bool = False  # it cannot start with this config: a rerun fails the same way


@dataclass(frozen=True)
class History:
    """Per user endpoint name; the manager keeps one and replaces it with each decision's."""

    failures: tuple[float, ...] = ()  # times of recent failures, oldest first
    restarts: int = 0  # automatic restarts since the last healthy run
    open_until: float | None = None  # circuit open (no starts) until this time


class Verdict(enum.Enum):
    RESTART = "restart"  # after ``delay_s`` (0: now)
    STAY_STOPPED = "stay stopped"
    CIRCUIT_OPEN = "circuit open"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    history: History
    delay_s: float = 0.0
    user_message: str = ""
    admin_message: str = ""

    @property
    def restart(self) -> bool:
        return self.verdict is Verdict.RESTART


def _prune(history: History, now: float, policy: RestartPolicy) -> History:
    """Forget failures outside the window and a circuit whose cooldown is over."""
    recent = tuple(t for t in history.failures if now - t < policy.window_s)
    if history.open_until is not None and now >= history.open_until:
        return History(failures=(), restarts=0, open_until=None)
    return replace(history, failures=recent)


def _circuit_open(history: History, now: float, name: str, policy: RestartPolicy) -> Decision:
    wait_min = max(1, round((history.open_until - now) / 60))
    window_min = max(1, round(policy.window_s / 60))
    return Decision(
        Verdict.CIRCUIT_OPEN,
        history,
        user_message=(
            f"Your user endpoint {name!r} failed {len(history.failures)} times within "
            f"{window_min} minute(s), so "
            f"new starts are paused for about {wait_min} minute(s) to avoid a runaway loop "
            "(for example of batch jobs). Check your configuration and the endpoint's log, "
            "or ask the endpoint administrator."
        ),
        admin_message=(
            f"circuit open for user endpoint {name!r}: {len(history.failures)} failures "
            f"within the window; no restarts or starts for {history.open_until - now:.0f} s"
        ),
    )


def _failure(history: History, now: float, name: str, policy: RestartPolicy) -> History | Decision:
    """One more failure: the new history, or the open circuit it leads to."""
    history = replace(history, failures=(*history.failures, now))
    if len(history.failures) < policy.max_failures:
        return history
    return _circuit_open(replace(history, open_until=now + policy.cooldown_s), now, name, policy)


def after_exit(
    name: str,
    facts: ExitFacts,
    has_pending_work: bool,
    history: History,
    now: float,
    policy: RestartPolicy,
) -> Decision:
    """Decide what follows an exit: restart, stay stopped (an idle stop), or open the circuit."""
    history = _prune(history, now, policy)
    if facts.stop_requested:
        return Decision(Verdict.STAY_STOPPED, history)
    if history.open_until is not None:
        return _circuit_open(history, now, name, policy)
    if facts.refused:  # its submitter was told why; the next start command tries again
        note = f"user endpoint {name!r} refused its start ({facts.description}); not restarted"
        return Decision(Verdict.STAY_STOPPED, history, admin_message=note)
    if facts.final:
        failed = _failure(history, now, name, policy)
        if isinstance(failed, Decision):
            return failed
        note = f"user endpoint {name!r} could not start ({facts.description}); not restarted"
        return Decision(Verdict.STAY_STOPPED, failed, admin_message=note)
    if facts.clean and not has_pending_work:  # however short: the normal way to end
        return Decision(
            Verdict.STAY_STOPPED,
            replace(history, restarts=0),
            admin_message=f"user endpoint {name!r} stopped normally",
        )
    long_run = facts.ran_s >= policy.healthy_run_s
    if not (facts.clean and long_run):
        failed = _failure(history, now, name, policy)
        if isinstance(failed, Decision):
            return failed
        history = failed
    restarts = 0 if long_run else history.restarts
    delay = (
        0.0 if restarts == 0 else min(policy.max_delay_s, policy.base_delay_s * 2 ** (restarts - 1))
    )
    return Decision(
        Verdict.RESTART,
        replace(history, restarts=restarts + 1),
        delay_s=delay,
        admin_message=(
            f"user endpoint {name!r} {facts.description or 'exited'}"
            f"{' with work pending' if has_pending_work else ''}; restart in {delay:.1f} s"
        ),
    )


def before_start(name: str, history: History, now: float, policy: RestartPolicy) -> Decision | None:
    """None if a new start may go ahead; a CIRCUIT_OPEN decision while the circuit is open."""
    history = _prune(history, now, policy)
    if history.open_until is not None:
        return _circuit_open(history, now, name, policy)
    return None


def after_start_failure(name: str, history: History, now: float, policy: RestartPolicy) -> Decision:
    """A spawn that failed before exec counts as a failure; its submitter is told already."""
    history = _prune(history, now, policy)
    if history.open_until is not None:
        return _circuit_open(history, now, name, policy)
    failed = _failure(history, now, name, policy)
    if isinstance(failed, Decision):
        return failed
    return Decision(Verdict.STAY_STOPPED, failed, admin_message=f"{name!r} failed to start")


def exit_facts(rc: int | None, sig: int | None, ran_s: float, stop_requested: bool) -> ExitFacts:
    """The facts of one exit, as the monitor reported it."""
    if sig is not None:
        description = f"terminated by signal {sig}"
    elif rc is None:
        description = "exit status unknown"
    else:
        description = "stopped normally" if rc == 0 else f"return code {rc}"
    return ExitFacts(
        rc == 0,
        ran_s,
        stop_requested,
        description,
        refused=rc == REFUSED_EXIT,
        final=rc == FINAL_EXIT,
    )


class RestartBook:
    """Each user endpoint name's history, replaced with every decision's (the rules are above)."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._history: dict[str, History] = {}

    def after_exit(self, name: str, facts: ExitFacts, has_pending_work: bool) -> Decision:
        return self._decide(
            name,
            lambda h, now: after_exit(name, facts, has_pending_work, h, now, self.policy),
        )

    def before_start(self, name: str) -> Decision | None:
        """None if ``name`` may start; a CIRCUIT_OPEN decision (with messages) if not."""
        return before_start(name, self._history.get(name, History()), self._clock(), self.policy)

    def after_start_failure(self, name: str) -> Decision:
        return self._decide(name, lambda h, now: after_start_failure(name, h, now, self.policy))

    def _decide(self, name: str, rule: Callable[[History, float], Decision]) -> Decision:
        decision = rule(self._history.get(name, History()), self._clock())
        if decision.history == History():
            self._history.pop(name, None)
        else:
            self._history[name] = decision.history
        return decision
