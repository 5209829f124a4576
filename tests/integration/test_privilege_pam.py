"""PAM mode through real libpam: account policy, and a session held for the endpoint's life.

Each test writes its own PAM service file under /etc/pam.d (removed afterwards).
``pam_exec`` appends ``$PAM_TYPE $PAM_USER`` to a file at each session event,
so the test can see when the session opens and when it closes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from pathlib import Path

import pytest

from mep.monitor import spawn as privilege
from mep.monitor.children import ChildTable
from mep.monitor.pam import PamError, PamSession
from mep.monitor.spawn import SpawnError
from tests.integration.test_privilege_parent_death import (
    alive,
    intermediates,  # noqa: F401 (fixture)
    reap_orphan,
    spawn_via_intermediate,
    subreaper,  # noqa: F401 (fixture)
)
from tests.integration.test_privilege_spawn import (  # noqa: F401 (fixtures)
    local_account,
    make_request,
    probe_dir,
    proc_status,
    spawn_user_endpoint,
    wait_for_log,
)
from tests.processes import zombie_children

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users and drop privileges"),
    pytest.mark.skipif(
        not Path("/lib/x86_64-linux-gnu/security/pam_exec.so").exists()
        and not Path("/usr/lib64/security/pam_exec.so").exists(),
        reason="pam_exec.so is not installed",
    ),
]


@pytest.fixture
def pam_service(probe_dir):  # noqa: F811
    """Write /etc/pam.d/<name> from an account rule; yields (name, session events file)."""
    created = []

    def make(account_rule: str = "account required pam_unix.so", hook_delay_s: float = 0):
        name = f"ca-pv-{secrets.token_hex(4)}"
        events = probe_dir / f"{name}.events"
        hook = probe_dir / f"{name}.sh"
        hook.write_text(
            f'#!/bin/sh\nsleep {hook_delay_s}\necho "$PAM_TYPE $PAM_USER" >> {events}\n'
        )
        hook.chmod(0o700)
        config = Path("/etc/pam.d") / name
        config.write_text(f"{account_rule}\nsession required pam_exec.so {hook}\n")
        created.append(config)
        return name, events

    yield make
    for config in created:
        config.unlink()


def events_of(path: Path) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().splitlines()
    return []


def wait_for_event(path: Path, event: str, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event in events_of(path):
            return events_of(path)
        time.sleep(0.05)
    raise AssertionError(f"{event!r} never appeared in {path}: {events_of(path)}")


def test_session_stays_open_for_the_endpoints_lifetime(pam_service, local_account, probe_dir):  # noqa: F811
    service, events = pam_service()
    req = make_request(local_account, probe_dir, use_pam=True, pam_service=service)
    spawned = spawn_user_endpoint(req)
    table = ChildTable()
    table.add("pam-ep", spawned)
    try:
        wait_for_log(os.path.join(req.log_dir, req.log_name), "ready")
        assert spawned.pgid != spawned.pid, "the PAM holder is the child, the endpoint its own"
        holder, endpoint = proc_status(spawned.pid), proc_status(spawned.pgid)
        assert holder["Uid"].split() == ["0"] * 4
        assert endpoint["Uid"].split() == [str(local_account.uid)] * 4
        assert sorted(map(int, endpoint["Groups"].split())) == sorted(local_account.groups)
        assert int(endpoint["CapEff"], 16) == 0
        assert os.getsid(spawned.pgid) == spawned.pgid
        assert events_of(events) == [f"open_session {local_account.name}"]
        time.sleep(0.5)
        assert events_of(events) == [f"open_session {local_account.name}"], "closed too early"
        assert table.stop("pam-ep", grace_s=10.0)
    finally:
        table.stop_all(grace_s=1.0)
    [record] = table.reap()
    assert record.signal == signal.SIGTERM, "the holder exits the way the endpoint did"
    assert events_of(events) == [
        f"open_session {local_account.name}",
        f"close_session {local_account.name}",
    ]
    assert not alive(spawned.pgid)


def test_pam_account_refusal_fails_at_pam_account(pam_service, local_account, probe_dir):  # noqa: F811
    service, events = pam_service("account required pam_deny.so")
    req = make_request(local_account, probe_dir, use_pam=True, pam_service=service)
    with pytest.raises(SpawnError) as caught:
        spawn_user_endpoint(req)
    err = caught.value
    assert err.step == "pam account"
    assert "pam_acct_mgmt" in err.admin_message and local_account.name in err.admin_message
    assert "account check" in err.user_message and "account policy" in err.user_message
    assert "pam" not in err.user_message.lower(), "PAM details stay with the admin"
    assert local_account.name not in err.user_message
    assert zombie_children() == [], "the failed child was reaped: no zombie is left"
    assert events_of(events) == []


def test_parent_death_closes_the_session_and_ends_the_endpoint(
    subreaper,  # noqa: F811
    intermediates,  # noqa: F811
    pam_service,
    local_account,  # noqa: F811
    probe_dir,  # noqa: F811
):
    service, events = pam_service()
    req = make_request(local_account, probe_dir)
    parent, holder, endpoint = spawn_via_intermediate(req, use_pam=True, pam_service=service)
    intermediates.append(parent)
    wait_for_log(os.path.join(req.log_dir, req.log_name), "ready")
    parent.kill()
    parent.wait(timeout=30)
    assert reap_orphan(holder) == -signal.SIGTERM, "the holder ends like its endpoint"
    assert not alive(endpoint)
    wait_for_event(events, f"close_session {local_account.name}")


def test_a_step_that_hangs_times_out_without_a_stray_process(
    pam_service,
    local_account,  # noqa: F811
    probe_dir,  # noqa: F811
    monkeypatch,
):
    """A hung session module (say, an unreachable home server) costs the manager a bounded wait."""
    monkeypatch.setattr(privilege, "SPAWN_TIMEOUT_S", 1.0)
    service, _ = pam_service(hook_delay_s=3)
    req = make_request(local_account, probe_dir, use_pam=True, pam_service=service)
    began = time.monotonic()
    with pytest.raises(SpawnError) as caught:
        spawn_user_endpoint(req)
    assert caught.value.step == "timeout"
    assert "too long" in caught.value.user_message
    assert time.monotonic() - began < 3
    assert zombie_children() == [], "the failed child was reaped: no zombie is left"


@pytest.mark.parametrize(
    ("service", "user"), [("", "someone"), ("login", ""), ("login", "x" * 513)]
)
def test_pam_session_refuses_nonsense_arguments(service, user):
    with pytest.raises(PamError):
        PamSession(service, user)


def test_pam_transaction_starts_once(pam_service, local_account):  # noqa: F811
    service, _ = pam_service()
    pam = PamSession(service, local_account.name)
    try:
        pam.check_account()
        with pytest.raises(PamError, match="already started"):
            pam.check_account()
    finally:
        pam.close()
