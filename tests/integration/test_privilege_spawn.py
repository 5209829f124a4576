"""The privileged edge through the real parts: real local users, real fork and setuid.

Each test creates its own local user (``useradd -m``) with a supplementary
group, starts a tiny probe program as that user through
:func:`mep.monitor.spawn.spawn`, and inspects the running process
from the outside via ``/proc``. The probe lives in a world-readable temporary
directory and runs under ``/usr/bin/python3``, which every user can execute.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from identity.policy import LocalAccount
from mep.monitor.channel import sealed_memfd
from mep.monitor.spawn import Spawned, SpawnError, SpawnRequest, signal_as_user, spawn
from tests.processes import zombie_children

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users and drop privileges"),
]

PYTHON = "/usr/bin/python3"
PROBE = """\
import hashlib, os, signal, sys, time
payload = sys.stdin.buffer.read()
mode = sys.argv[1] if len(sys.argv) > 1 else "sleep"
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode.startswith("exit="):
    sys.exit(int(mode[5:]))
print(f"payload {len(payload)} {hashlib.sha256(payload).hexdigest()}", flush=True)
print("ready", flush=True)
while True:
    time.sleep(60)
"""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def probe_dir():
    """A world-readable directory holding the probe program."""
    path = Path(tempfile.mkdtemp(prefix="ca-pv-probe-", dir="/tmp"))
    path.chmod(0o755)
    (path / "probe.py").write_text(PROBE)
    (path / "probe.py").chmod(0o644)
    yield path
    shutil.rmtree(path)


def _useradd_with_fresh_uid(user: str, group: str) -> None:
    """A random high uid: a recycled one could still own another suite's dying processes."""
    for _ in range(20):
        uid = str(20000 + secrets.randbelow(40000))
        done = subprocess.run(
            ["useradd", "-m", "-U", "-u", uid, "-G", group, "-s", "/bin/sh", user],
            capture_output=True,
            timeout=60,
        )
        if done.returncode == 0:
            return
    raise AssertionError(f"useradd {user} failed: {done.stderr!r}")


@pytest.fixture(scope="module")
def local_account():
    """A real local user with a home and one supplementary group; removed afterwards."""
    suffix = secrets.token_hex(4)
    user, group = f"ca-pv-{suffix}", f"ca-pg-{suffix}"
    _run("groupadd", group)
    try:
        _useradd_with_fresh_uid(user, group)
        try:
            entry = pwd.getpwnam(user)
            yield LocalAccount(
                name=user,
                uid=entry.pw_uid,
                gid=entry.pw_gid,
                groups=tuple(os.getgrouplist(user, entry.pw_gid)),
                home=entry.pw_dir,
                shell=entry.pw_shell,
            )
        finally:
            subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True, timeout=30)
            _run("userdel", "-r", user)
    finally:
        _run("groupdel", group)


def user_env(account: LocalAccount) -> dict[str, str]:
    return {
        "HOME": account.home,
        "USER": account.name,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "GLOBUS_COMPUTE_ENDPOINT_NAME": "probe",
    }


def make_request(account, probe_dir, *args, payload=b'{"config": "x"}', **overrides):
    """A request whose stdin is ``payload`` in a sealed memfd (the caller closes it)."""
    fields = dict(
        account=account,
        argv=(PYTHON, str(probe_dir / "probe.py"), *args),
        env=user_env(account),
        stdin_fd=sealed_memfd(payload),
        log_dir=f"{account.home}/.compute_agent/probe-{secrets.token_hex(3)}",
    )
    fields.update(overrides)
    return SpawnRequest(**fields)


def spawn_user_endpoint(req: SpawnRequest) -> Spawned:
    """Spawn, then close the request's stdin memfd (the child has its copy)."""
    try:
        return spawn(req)
    finally:
        os.close(req.stdin_fd)


def wait_for_log(path: str, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            content = Path(path).read_text()
            if text in content:
                return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def kill_and_reap(spawned) -> None:
    """Test cleanup: end the probe's group (as the user) and collect the child."""
    with contextlib.suppress(ProcessLookupError):
        signal_as_user(spawned.account, spawned.pgid, signal.SIGKILL)
    os.waitpid(spawned.pid, 0)


@pytest.fixture
def started(local_account, probe_dir):
    """Start probes; every one still running at the end is killed and reaped."""
    children = []

    def start(*args, **overrides):
        req = make_request(local_account, probe_dir, *args, **overrides)
        spawned = spawn_user_endpoint(req)
        children.append(spawned)
        log = os.path.join(req.log_dir, req.log_name)
        return spawned, req, log

    yield start
    for spawned in children:
        with contextlib.suppress(ChildProcessError):
            kill_and_reap(spawned)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if item)


def test_child_is_exactly_the_user(started, local_account):
    spawned, _, log = started()
    wait_for_log(log, "ready")
    status = proc_status(spawned.pid)
    acct = local_account
    assert status["Uid"].split() == [str(acct.uid)] * 4
    assert status["Gid"].split() == [str(acct.gid)] * 4
    assert sorted(map(int, status["Groups"].split())) == sorted(acct.groups)
    assert len(acct.groups) == 2, "the test user has its own group plus a supplementary one"
    for cap in ("CapPrm", "CapEff", "CapAmb"):
        assert int(status[cap], 16) == 0, cap
    assert status["Umask"] == "0077"
    assert os.getsid(spawned.pid) == spawned.pid == spawned.pgid
    assert os.getpgid(spawned.pid) == spawned.pid
    assert os.readlink(f"/proc/{spawned.pid}/cwd") == acct.home


def test_environment_is_exactly_the_one_given(started, local_account):
    os.environ["CA_PV_ROOT_SECRET"] = "must-not-leak"
    try:
        spawned, _, log = started()
    finally:
        del os.environ["CA_PV_ROOT_SECRET"]
    wait_for_log(log, "ready")
    assert proc_environ(spawned.pid) == user_env(local_account)


def test_only_stdio_and_passed_fds_are_inherited_at_3_and_up(started):
    leaked = os.open("/etc/hostname", os.O_RDONLY)  # inheritable, not close-on-exec
    os.set_inheritable(leaked, True)
    first = os.memfd_create("creds", os.MFD_CLOEXEC)
    second = os.memfd_create("note", os.MFD_CLOEXEC)
    try:
        # In the opposite order of their numbers here: placing must not clobber either.
        spawned, _, log = started(pass_fds=(second, first))
        wait_for_log(log, "ready")
        fds = {int(fd) for fd in os.listdir(f"/proc/{spawned.pid}/fd")}
        assert fds == {0, 1, 2, 3, 4}
        for number, fd in ((3, second), (4, first)):
            assert os.readlink(f"/proc/{spawned.pid}/fd/{number}") == os.readlink(
                f"/proc/self/fd/{fd}"
            )
        assert os.path.samefile(f"/proc/{spawned.pid}/fd/1", log)
        assert os.path.samefile(f"/proc/{spawned.pid}/fd/2", log)
    finally:
        for fd in (leaked, first, second):
            os.close(fd)


def test_log_dir_and_log_are_private_and_owned(started, local_account):
    _, req, log = started()
    wait_for_log(log, "ready")
    for path, mode in ((req.log_dir, 0o700), (os.path.dirname(req.log_dir), 0o700), (log, 0o600)):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (local_account.uid, local_account.gid), path
        assert st.st_mode & 0o7777 == mode, path


def test_one_mebibyte_payload_arrives_intact(started):
    payload = os.urandom(1 << 20)
    _, _, log = started(payload=payload)
    content = wait_for_log(log, "ready")
    assert f"payload {len(payload)} {hashlib.sha256(payload).hexdigest()}" in content


def _no_process_of(account: LocalAccount) -> bool:
    owners = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            owners.append(os.stat(f"/proc/{pid}").st_uid)
    return account.uid not in owners


def _assert_fails_at(step: str, req: SpawnRequest) -> SpawnError:
    with pytest.raises(SpawnError) as caught:
        spawn_user_endpoint(req)
    err = caught.value
    assert err.step == step, err.admin_message
    assert step in err.user_message and "administrator" in err.user_message
    assert req.account.name not in err.user_message, "local user names stay with the admin"
    assert req.account.name in err.admin_message
    assert zombie_children() == [], "the failed child was reaped: no zombie is left"
    assert _no_process_of(req.account)
    return err


def test_missing_account_fails_at_account(local_account, probe_dir):
    ghost = LocalAccount("ca-pv-nobody-here", 64999, 64999, (64999,), "/nonexistent", "/bin/sh")
    _assert_fails_at("account", make_request(ghost, probe_dir))


def test_root_is_refused_at_account(probe_dir):
    root = LocalAccount("root", 0, 0, (0,), "/root", "/bin/sh")
    with pytest.raises(SpawnError) as caught:
        spawn_user_endpoint(make_request(root, probe_dir))
    assert caught.value.step == "account"


def test_missing_home_fails_at_chdir_home(local_account, probe_dir):
    moved = LocalAccount(**{**local_account.__dict__, "home": "/nonexistent/ca-pv-home"})
    req = make_request(moved, probe_dir, log_dir="/tmp/ca-pv-never-created")
    err = _assert_fails_at("chdir home", req)
    assert "No such file" in err.admin_message
    assert not os.path.exists("/tmp/ca-pv-never-created")


def test_unwritable_log_dir_fails_at_open_log(local_account, probe_dir):
    root_owned = tempfile.mkdtemp(prefix="ca-pv-rootdir-", dir="/tmp")
    os.chmod(root_owned, 0o755)
    try:
        err = _assert_fails_at(
            "open log", make_request(local_account, probe_dir, log_dir=root_owned)
        )
        assert "Permission denied" in err.admin_message
        assert os.listdir(root_owned) == []
    finally:
        os.rmdir(root_owned)


def test_uncreatable_log_dir_fails_at_log_dir(local_account, probe_dir):
    req = make_request(local_account, probe_dir, log_dir="/ca-pv-no-permission/probe")
    _assert_fails_at("log dir", req)


def test_bad_argv_fails_at_exec(local_account, probe_dir):
    req = make_request(local_account, probe_dir, argv=("/nonexistent/bin/compute-endpoint",))
    err = _assert_fails_at("exec", req)
    assert "errno 2" in err.admin_message


def test_program_the_user_cannot_read_fails_at_exec(local_account, probe_dir):
    req = make_request(local_account, probe_dir, argv=("/root/ca-pv-not-reachable",))
    _assert_fails_at("exec", req)


def test_relative_argv_is_refused_before_forking(local_account, probe_dir):
    _assert_fails_at("request", make_request(local_account, probe_dir, argv=("python3", "-V")))


@pytest.mark.parametrize("planted", ["fifo", "symlink", "directory"])
def test_a_planted_log_fails_at_open_log_without_blocking(local_account, probe_dir, planted):
    """The user controls the log directory: a FIFO must not hang the manager, a link not redirect."""
    req = make_request(local_account, probe_dir)
    os.makedirs(req.log_dir, mode=0o700)
    for path in (os.path.dirname(req.log_dir), req.log_dir):
        os.chown(path, local_account.uid, local_account.gid)
    log = os.path.join(req.log_dir, req.log_name)
    if planted == "fifo":
        os.mkfifo(log, 0o600)
    elif planted == "symlink":
        os.symlink("/etc/hostname", log)
    else:
        os.mkdir(log)
    os.lchown(log, local_account.uid, local_account.gid)
    began = time.monotonic()
    _assert_fails_at("open log", req)
    assert time.monotonic() - began < 10


def test_signal_dispositions_and_mask_are_reset(started):
    """Python ignores SIGPIPE and the manager may block signals: neither reaches the exec."""
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        spawned, _, _ = started(argv=("/bin/sleep", "60"))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
        signal.signal(signal.SIGUSR1, previous)
    deadline = time.monotonic() + 30
    while proc_status(spawned.pid)["Name"] != "sleep" and time.monotonic() < deadline:
        time.sleep(0.02)
    status = proc_status(spawned.pid)
    assert status["Name"] == "sleep"
    # glibc reserves signals 32 and 33 for itself (no libc or Python call can set
    # them, and it installs its own handlers when it needs them): bits 31 and 32.
    glibc_reserved = (1 << 31) | (1 << 32)
    assert int(status["SigIgn"], 16) & ~glibc_reserved == 0
    assert int(status["SigBlk"], 16) & ~glibc_reserved == 0


@pytest.mark.parametrize(
    ("step", "overrides"),
    [
        ("request", {"env": {"A=B": "x"}}),
        ("request", {"env": {"A": "x\0y"}}),
        ("request", {"pass_fds": tuple(range(3, 12))}),
        ("request", {"log_dir": "relative/dir"}),
        ("request", {"log_name": "../escape.log"}),
        ("request", {"argv": ()}),
    ],
)
def test_malformed_requests_are_refused_before_forking(local_account, probe_dir, step, overrides):
    _assert_fails_at(step, make_request(local_account, probe_dir, **overrides))


def test_an_account_changed_since_lookup_is_refused(local_account, probe_dir):
    stale = LocalAccount(**{**local_account.__dict__, "uid": local_account.uid + 1})
    err = _assert_fails_at("account", make_request(stale, probe_dir))
    assert "passwd now says" in err.admin_message
