"""User endpoints die with their parent, and signals go out only as the child's user.

The parent here is an intermediate process the test starts (a stand-in for the
manager): it spawns a probe as a real local user, reports the pid and sleeps
until the test SIGKILLs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mep.privilege import signal_as_user
from tests.conftest import REPO
from tests.integration.test_privilege_spawn import (  # noqa: F401 (fixtures)
    local_account,
    make_request,
    probe_dir,
    started,
    wait_for_log,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users and drop privileges"),
]

INTERMEDIATE = """\
import json, os, pwd, sys, time
from mep.privilege import LocalAccount, SpawnRequest, spawn_user_endpoint
args = json.loads(sys.argv[1])
e = pwd.getpwnam(args["user"])
groups = tuple(os.getgrouplist(e.pw_name, e.pw_gid))
account = LocalAccount(e.pw_name, e.pw_uid, e.pw_gid, groups, e.pw_dir, e.pw_shell)
request = SpawnRequest(account, tuple(args["argv"]), args["env"], b"", args["log_dir"],
                       use_pam=args["use_pam"], pam_service=args["pam_service"])
spawned = spawn_user_endpoint(request)
print(spawned.pid, spawned.pgid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


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


def test_killing_the_parent_kills_the_user_endpoint(intermediates, local_account, probe_dir):  # noqa: F811
    req = make_request(local_account, probe_dir)
    parent, pid, pgid = spawn_via_intermediate(req)
    intermediates.append(parent)
    assert pid == pgid
    wait_for_log(os.path.join(req.log_dir, req.log_name), "ready")
    assert alive(pid)
    parent.kill()
    parent.wait(timeout=30)
    assert wait_gone(pid), "PDEATHSIG did not end the user endpoint"


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
