"""User endpoints die with their parent, and signals go out only as the child's user.

The parent here is an intermediate process the test starts (a stand-in for the
manager): it spawns a probe as a real local user, reports the pid and sleeps
until the test SIGKILLs it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mep.monitor.spawn import signal_as_user
from tests.conftest import REPO
from tests.integration.test_privilege_spawn import (  # noqa: F401 (fixtures)
    local_account,
    make_request,
    probe_dir,
    started,
    wait_for_log,
)
from tests.processes import alive

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users and drop privileges"),
]

INTERMEDIATE = """\
import json, os, pwd, sys, time
from identity.policy import LocalAccount
from mep.monitor.channel import sealed_memfd
from mep.monitor.spawn import SpawnRequest, spawn
args = json.loads(sys.argv[1])
e = pwd.getpwnam(args["user"])
groups = tuple(os.getgrouplist(e.pw_name, e.pw_gid))
account = LocalAccount(e.pw_name, e.pw_uid, e.pw_gid, groups, e.pw_dir, e.pw_shell)
request = SpawnRequest(account, tuple(args["argv"]), args["env"], sealed_memfd(b""),
                       args["log_dir"], use_pam=args["use_pam"], pam_service=args["pam_service"])
spawned = spawn(request)
print(spawned.pid, spawned.pgid, flush=True)
time.sleep(600)
"""


PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper():
    """Orphans of the stand-in manager become this process's children, so the test
    reaps them and sees how they died (instead of leaving zombies to pid 1)."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def reap_orphan(pid: int, timeout: float = 30.0) -> int | None:
    """Wait until ``pid`` (re-parented to us) exits; its exit code, or None if it did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not re-parented to us yet (its parent still exits)
            done, status = 0, 0
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


def spawn_via_intermediate(req, use_pam=False, pam_service="compute-agent"):
    """Start the intermediate parent; returns (Popen, pid, pgid) of the spawned probe."""
    args = {
        "user": req.account.name,
        "argv": list(req.argv),
        "env": req.env,
        "log_dir": req.log_dir,
        "use_pam": use_pam,
        "pam_service": pam_service,
    }
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    parent = subprocess.Popen(
        [sys.executable, "-c", INTERMEDIATE, json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = parent.stdout.readline()
    if not line:
        parent.wait(timeout=30)
        raise AssertionError(f"intermediate exited with {parent.returncode} before spawning")
    pid, pgid = map(int, line.split())
    return parent, pid, pgid


@pytest.fixture
def intermediates():
    parents = []
    yield parents
    for parent in parents:
        if parent.poll() is None:
            parent.kill()
        parent.wait(timeout=30)


def test_killing_the_parent_kills_the_user_endpoint(
    subreaper,
    intermediates,
    local_account,  # noqa: F811
    probe_dir,  # noqa: F811
):
    req = make_request(local_account, probe_dir)
    parent, pid, pgid = spawn_via_intermediate(req)
    intermediates.append(parent)
    assert pid == pgid
    wait_for_log(os.path.join(req.log_dir, req.log_name), "ready")
    assert alive(pid)
    parent.kill()
    parent.wait(timeout=30)
    assert reap_orphan(pid) == -signal.SIGTERM, "PDEATHSIG did not end the user endpoint"


def test_signal_as_user_cannot_hit_another_users_group(started, local_account):  # noqa: F811
    """A pgid that now belongs to someone else (here: root's own group) yields EPERM."""
    with pytest.raises(PermissionError):
        signal_as_user(local_account, os.getpgid(0), signal.SIGTERM)
    assert alive(os.getpid())


def test_signal_as_user_reports_a_vanished_group(local_account):  # noqa: F811
    with pytest.raises(ProcessLookupError):
        signal_as_user(local_account, 2**22 - 1, signal.SIGTERM)


def test_signal_as_user_refuses_root_and_pgid_1(local_account):  # noqa: F811
    root = local_account.__class__("root", 0, 0, (0,), "/root", "/bin/sh")
    for account, pgid in ((root, 12345), (local_account, 1), (local_account, 0)):
        with pytest.raises(ValueError):
            signal_as_user(account, pgid, signal.SIGTERM)


def test_signal_as_user_reaches_the_users_group(started):  # noqa: F811
    spawned, _, log = started()
    wait_for_log(log, "ready")
    signal_as_user(spawned.account, spawned.pgid, signal.SIGUSR1)
    _, status = os.waitpid(spawned.pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGUSR1
