"""An unprivileged manager: it may start endpoints as itself only, with no identity change.

The manager stand-in runs as a real local user (``setpriv``) from a
world-readable copy of ``mep/``; it spawns the probe and prints the outcome.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from identity.policy import LocalAccount
from tests.conftest import REPO
from tests.integration.test_privilege_parent_death import (  # noqa: F401 (fixture)
    reap_orphan,
    subreaper,
)
from tests.integration.test_privilege_spawn import (  # noqa: F401 (fixtures)
    local_account,
    make_request,
    probe_dir,
    proc_environ,
    proc_status,
    wait_for_log,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users"),
]

MANAGER = """\
import json, os, signal, sys
from identity.policy import LocalAccount
from mep.monitor.channel import sealed_memfd
from mep.monitor.spawn import SpawnError, SpawnRequest, signal_as_user, spawn
args = json.loads(sys.argv[1])
request = SpawnRequest(LocalAccount(*args["account"]), tuple(args["argv"]), args["env"],
                       sealed_memfd(b""), args["log_dir"])
try:
    spawned = spawn(request)
except SpawnError as e:
    print(json.dumps({"step": e.step}), flush=True)
    sys.exit(0)
print(json.dumps({"pid": spawned.pid}), flush=True)
if sys.stdin.readline().strip() == "stop":
    signal_as_user(spawned.account, spawned.pgid, signal.SIGUSR1)
    _, status = os.waitpid(spawned.pid, 0)
    print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def code_copy():
    """``mep/`` and ``identity/`` (which it imports) copied where any user can read them."""
    path = Path(tempfile.mkdtemp(prefix="ca-pv-code-", dir="/tmp"))
    for package in ("mep", "identity"):
        shutil.copytree(
            REPO / package, path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
    yield path
    shutil.rmtree(path)


def passwd_account(name: str) -> LocalAccount:
    e = pwd.getpwnam(name)
    return LocalAccount(e.pw_name, e.pw_uid, e.pw_gid, (e.pw_gid,), e.pw_dir, e.pw_shell)


def run_manager_as(account, code_copy, req):
    args = {
        "account": [
            getattr(req.account, f) for f in ("name", "uid", "gid", "groups", "home", "shell")
        ],
        "argv": list(req.argv),
        "env": req.env,
        "log_dir": req.log_dir,
    }
    setpriv = ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups"]
    return subprocess.Popen(
        [*setpriv, "/usr/bin/python3", "-c", MANAGER, json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(code_copy), "PATH": "/usr/bin:/bin", "HOME": account.home},
        cwd="/",
    )


def test_an_unprivileged_manager_starts_its_own_endpoint(
    subreaper,  # noqa: F811
    local_account,  # noqa: F811
    probe_dir,  # noqa: F811
    code_copy,
):
    req = make_request(local_account, probe_dir)
    manager = run_manager_as(local_account, code_copy, req)
    try:
        outcome = json.loads(manager.stdout.readline())
        pid = outcome["pid"]
        wait_for_log(os.path.join(req.log_dir, req.log_name), "ready")
        assert proc_status(pid)["Uid"].split() == [str(local_account.uid)] * 4
        assert proc_environ(pid) == req.env
        assert os.getsid(pid) == pid
    finally:
        manager.stdin.close()
        manager.wait(timeout=30)
    assert reap_orphan(pid) == -signal.SIGTERM, "the endpoint dies with its manager"


def test_an_unprivileged_manager_signals_its_own_endpoint(local_account, probe_dir, code_copy):  # noqa: F811
    req = make_request(local_account, probe_dir)
    manager = run_manager_as(local_account, code_copy, req)
    try:
        json.loads(manager.stdout.readline())
        wait_for_log(os.path.join(req.log_dir, req.log_name), "ready")
        manager.stdin.write("stop\n")
        manager.stdin.flush()
        assert json.loads(manager.stdout.readline()) == {"exit": -signal.SIGUSR1}
    finally:
        manager.stdin.close()
        manager.wait(timeout=30)


def test_an_unprivileged_manager_cannot_become_someone_else(local_account, probe_dir, code_copy):  # noqa: F811
    nobody = passwd_account("nobody")
    req = make_request(nobody, probe_dir, log_dir="/tmp/ca-pv-never")
    manager = run_manager_as(local_account, code_copy, req)
    outcome = json.loads(manager.stdout.readline())
    manager.stdin.close()
    manager.wait(timeout=30)
    assert outcome == {"step": "setresgid"}
    assert not os.path.exists("/tmp/ca-pv-never")
