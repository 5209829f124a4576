"""The privileged edge: every syscall that changes who a process is lives here.

Read it as a checklist. A user endpoint is started by forking; the child then
runs the steps of :func:`_drop_steps` in order and execs. Each step has a name;
if one fails, the child writes ``step, errno, message`` on a close-on-exec
status pipe and exits, and the parent raises :class:`SpawnError` naming that
step. A successful exec closes the pipe, which the parent reads as "started".

The forked child runs only ``os`` calls on data the parent prepared (no
logging, no imports, no name-service lookups): a library thread in the manager
may have held a lock at the moment of the fork. PAM modules in the holder
(below) are the one exception, as upstream. The caller blocks until exec or
failure, at most ``SPAWN_TIMEOUT_S`` (a hung home server), then the child is
killed. The stdin payload is a sealed memfd: any size, and unlike a pipe it
needs no writer.

Supplementary groups come from ``LocalAccount.groups`` (what ``initgroups``
would compute, looked up by the caller) and are set with ``setgroups``: no
name-service lookup happens in the fork. Without PAM, capabilities vanish with
the change from uid 0 and "verify drop" checks CapPrm/CapEff/CapAmb are 0;
``PR_SET_NO_NEW_PRIVS`` is deliberately not set, since it breaks the setuid
helpers some batch schedulers need (upstream sets it, then tells sites with
such schedulers to turn PAM on).

With PAM, the first child stays root as a *PAM holder*: it opens the PAM
session, forks the user endpoint, waits for it and only then closes the
session, so the session lasts exactly as long as the user endpoint (the
official endpoint closes it before exec).

Root never signals a pid it did not verify: :func:`signal_as_user` forks a
helper that becomes the child's user first, so a recycled pid or process group
owned by someone else yields EPERM instead of a signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import pwd
import resource
import select
import signal
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from identity.policy import LocalAccount

PR_SET_PDEATHSIG = 1
SPAWN_TIMEOUT_S = 60.0
LIFT_FLOOR = 64  # what the monitor holds for a spawn sits here; passed fds go to 3..
MAX_PASSED = 8
_FAILED = 127
_LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class SpawnRequest:
    """Who to become and what to exec; descriptors stay the caller's (it closes them).

    ``pass_fds`` become descriptors 3, 4, 5... of the new process, in order,
    whatever their numbers here. Output goes to ``output_fd`` if given,
    otherwise to ``log_dir``/``log_name``, opened as the account.
    """

    account: LocalAccount
    argv: tuple[str, ...]
    env: dict[str, str]
    stdin_fd: int
    log_dir: str = ""
    log_name: str = "endpoint.log"
    output_fd: int | None = None
    pass_fds: tuple[int, ...] = ()
    workdir: str | None = None  # default: the account's home
    use_pam: bool = False
    pam_service: str = "compute-agent"
    cgroup_fds: tuple[int, ...] = ()  # cgroup.procs files the new process joins, as root


@dataclass(frozen=True)
class Spawned:
    pid: int
    pgid: int
    account: LocalAccount


class SpawnError(Exception):
    """A user endpoint did not start; ``step`` names the checklist item that failed.

    ``admin_message`` has the details (local user, paths, errno) for the log;
    ``user_message`` is safe to send to the person who asked for the endpoint.
    """

    def __init__(self, step: str, admin_message: str, user_message: str):
        super().__init__(admin_message)
        self.step = step
        self.admin_message = admin_message
        self.user_message = user_message


_USER_HINTS = {
    "request": "the endpoint manager built an invalid launch request",
    "account": "your local account is missing or not allowed to run endpoints",
    "account check": "the site's account policy refused your local account",
    "session setup": "the site's session setup failed for your local account",
    "chdir home": "your local home directory is missing or not accessible",
    "log dir": "the user endpoint's directory could not be created in your home",
    "open log": "the user endpoint's log file could not be opened",
    "exec": "the user endpoint program could not be executed",
    "join cgroup": "the endpoint host could not set up your user endpoint's resources",
    "timeout": "the user endpoint took too long to start",
    "prepare": "the endpoint host is short of resources",
    "fork": "the endpoint host is short of resources",
}


# Which PAM module or call failed is for the admin only, as upstream.
_USER_STEPS = {
    "pam account": "account check",
    "pam session": "session setup",
    "pam setcred": "session setup",
}


def _user_message(step: str) -> str:
    step = _USER_STEPS.get(step, step)
    hint = _USER_HINTS.get(step, "the endpoint could not switch to your local account")
    return (
        f"Failed to start your user endpoint (step: {step}): {hint}. "
        "Please contact the endpoint administrator."
    )


def _spawn_error(req: SpawnRequest, step: str, detail: str) -> SpawnError:
    acct = req.account
    admin = (
        f"user endpoint for local user {acct.name!r} (uid {acct.uid}) failed at step "
        f"{step!r}: {detail} [argv={list(req.argv)!r}, log_dir={req.log_dir!r}]"
    )
    return SpawnError(step, admin, _user_message(step))


def spawn(req: SpawnRequest) -> Spawned:
    """Fork, drop to ``req.account`` and exec ``req.argv``; raise SpawnError on any failure."""
    problem = _check_request(req)
    if problem:
        raise _spawn_error(req, *problem)
    pam = _pam_session(req)
    parent = os.getpid()
    lifted: list[int] = []
    try:
        status_r, status_w = _high_pipe()
        lifted += [status_r, status_w]
        fds = _Lifted(
            stdin=_lift(req.stdin_fd, lifted),
            output=None if req.output_fd is None else _lift(req.output_fd, lifted),
            passed=tuple(_lift(fd, lifted) for fd in req.pass_fds),
            cgroups=tuple(_lift(fd, lifted) for fd in req.cgroup_fds),
        )
    except OSError as exc:
        for fd in lifted:
            os.close(fd)
        raise _spawn_error(req, "prepare", str(exc)) from None
    try:
        pid = os.fork()
        if pid == 0:
            _run_child(req, status_w, fds, parent, pam)
    except OSError as exc:
        raise _spawn_error(req, "fork", str(exc)) from None
    finally:
        for fd in lifted:
            if fd != status_r:
                os.close(fd)
    try:
        records = _read_status(status_r, pid)
    finally:
        os.close(status_r)
    return _outcome(req, pid, records)


@dataclass(frozen=True)
class _Lifted:
    """The request's descriptors, copied above any number the child places them at."""

    stdin: int
    output: int | None
    passed: tuple[int, ...]
    cgroups: tuple[int, ...]

    def all(self) -> set[int]:
        output = () if self.output is None else (self.output,)
        return {self.stdin, *output, *self.passed, *self.cgroups}


def _lift(fd: int, owned: list[int]) -> int:
    """A close-on-exec copy numbered >= LIFT_FLOOR, so placing others at 3.. cannot clobber it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, LIFT_FLOOR)
    owned.append(high)
    return high


def _pam_session(req: SpawnRequest):
    """Load libpam in the parent (the child must not dlopen); None without PAM."""
    if not req.use_pam:
        return None
    from mep.monitor.pam import PamError, PamSession

    try:
        return PamSession(req.pam_service, req.account.name)
    except (OSError, PamError) as exc:
        raise _spawn_error(req, "pam account", f"cannot use PAM: {exc}") from None


def _check_request(req: SpawnRequest) -> tuple[str, str] | None:
    """Refuse, before forking, what no checklist step could make right."""
    acct = req.account
    if not req.argv or not os.path.isabs(req.argv[0]):
        return "request", f"argv[0] must be an absolute path, got {list(req.argv)!r}"
    if len(req.pass_fds) > MAX_PASSED:
        return "request", f"at most {MAX_PASSED} descriptors may be passed"
    if req.output_fd is None and (
        not os.path.isabs(req.log_dir) or "/" in req.log_name or req.log_name in ("", ".", "..")
    ):
        return "request", f"bad log location {req.log_dir!r} / {req.log_name!r}"
    if any("=" in k or "\0" in k + v for k, v in req.env.items()):
        return "request", "environment has a key with '=' or a NUL character"
    if acct.uid == 0 or acct.gid == 0:
        return "account", "refusing to run as root (uid or gid 0)"
    try:
        entry = pwd.getpwnam(acct.name)
    except KeyError:
        return "account", "no such local user in the password database"
    if (entry.pw_uid, entry.pw_gid) != (acct.uid, acct.gid):
        return "account", f"passwd now says uid {entry.pw_uid} gid {entry.pw_gid}"
    return None


def _high_pipe() -> tuple[int, int]:
    """A close-on-exec status pipe numbered above anything the child places."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        return tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, LIFT_FLOOR) for fd in (r, w))
    finally:
        os.close(r)
        os.close(w)


def _read_status(status_r: int, pid: int) -> list[tuple[str, ...]]:
    """Records the child(ren) wrote before exec closed the pipe; a stuck child is killed."""
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    poller = select.poll()
    poller.register(status_r, select.POLLIN)
    data = b""
    while True:
        left_ms = max(0, int((deadline - time.monotonic()) * 1000))
        if not poller.poll(left_ms):
            os.kill(pid, signal.SIGKILL)  # our own unreaped child: cannot be a recycled pid
            return [("timeout", "0", f"no exec after {SPAWN_TIMEOUT_S:.0f} s")]
        chunk = os.read(status_r, 65536)
        if not chunk:
            break
        data += chunk
    return [tuple(rec.decode(errors="replace").split("\0")) for rec in data.split(b"\n") if rec]


def _outcome(req: SpawnRequest, pid: int, records: list[tuple[str, ...]]) -> Spawned:
    failures = [r for r in records if r[0] != "pid"]
    if failures:
        os.waitpid(pid, 0)
        step, err, message = (*failures[0], "", "")[:3]
        detail = f"{message} (errno {err})" if err not in ("", "0") else message
        raise _spawn_error(req, step, detail)
    endpoint_pids = [int(r[1]) for r in records if r[0] == "pid"]
    pgid = endpoint_pids[0] if endpoint_pids else pid
    return Spawned(pid=pid, pgid=pgid, account=req.account)


def _report(status_w: int, step: str, exc: BaseException) -> None:
    err = getattr(exc, "errno", None) or 0
    text = (str(exc) or type(exc).__name__).replace("\n", " ").replace("\0", " ")
    os.write(status_w, f"{step}\0{err}\0{text}\n".encode())


def _run_steps(status_w: int, steps: list[tuple[str, Callable[[], object]]]) -> None:
    """Run named steps in order; on the first failure report it and exit the child."""
    for step, action in steps:
        try:
            action()
        except BaseException as exc:
            _report(status_w, step, exc)
            os._exit(_FAILED)


def _run_child(req: SpawnRequest, status_w: int, fds: _Lifted, parent: int, pam) -> None:
    """The forked child: never returns (it execs, or reports and exits)."""
    try:
        _run_steps(
            status_w,
            [
                ("clear environment", os.environ.clear),
                ("close descriptors", lambda: _close_all_but({status_w, *fds.all()})),
                ("place descriptors", lambda: _place(fds.passed)),
            ],
        )
        if pam is not None:
            _hold_pam_session(req, status_w, fds, parent, pam)
        _run_steps(status_w, _drop_steps(req, fds, parent, pam))
    finally:
        os._exit(_FAILED)


def _place(fds: tuple[int, ...]) -> None:
    """The passed descriptors become 3, 4, 5... and survive exec; their sources are all higher."""
    for target, fd in enumerate(fds, start=3):
        os.dup2(fd, target, inheritable=True)


def _hold_pam_session(req: SpawnRequest, status_w: int, fds: _Lifted, parent: int, pam):
    """Stay root holding the PAM session; fork the user endpoint; close it when it exits.

    SIGTERM is blocked first: the monitor's inherited Python handler must not
    swallow the parent-death signal; it waits for :func:`_wait_forwarding_stop`.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGCHLD})
    _title(f"compute-agent PAM session holder for {req.account.name} [{req.log_dir}]")
    _run_steps(
        status_w,
        [
            ("parent death signal", lambda: _die_with_parent(parent)),
            ("setsid", os.setsid),
            ("pam account", pam.check_account),
            ("pam session", pam.open_session),
        ],
    )
    holder, forked = os.getpid(), []
    _run_steps(status_w, [("fork", lambda: forked.append(os.fork()))])
    pid = forked[0]
    if pid == 0:
        _run_steps(status_w, _drop_steps(req, fds, holder, pam))
        os._exit(_FAILED)
    os.write(status_w, f"pid\0{pid}\0\n".encode())
    for fd in (status_w, *fds.all(), *range(3, 3 + len(fds.passed))):
        os.close(fd)
    status = _wait_forwarding_stop(pid)
    pam.close()
    _exit_like(status)


def _title(text: str) -> None:
    """Name the holder in ps, if the manager already loaded setproctitle (no imports here)."""
    module = sys.modules.get("setproctitle")
    if module is not None:
        module.setproctitle(text)


def _wait_forwarding_stop(pid: int, grace_s: float = 30.0) -> int:
    """Wait for the user endpoint; a SIGTERM to the holder stops it (TERM, then KILL its group)."""
    kill_at = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        info = signal.sigtimedwait({signal.SIGTERM, signal.SIGCHLD}, 0.5)
        if info is not None and info.si_signo == signal.SIGTERM and kill_at is None:
            kill_at = time.monotonic() + grace_s
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # our unreaped child: not recyclable
        if kill_at is not None and time.monotonic() >= kill_at:
            _killpg_quietly(pid, signal.SIGKILL)


def _killpg_quietly(pgid: int, sig: int) -> None:
    """Only for the holder's own unreaped child's group: its id cannot have been recycled."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _exit_like(status: int) -> None:
    """Exit the way the user endpoint did, so the manager's reaper sees its rc or signal."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {-code})
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


def _drop_steps(req: SpawnRequest, fds: _Lifted, parent: int, pam) -> list:
    """The checklist from root to the exec, in order."""
    acct = req.account
    output: list[int] = []
    drop = os.geteuid() == 0 or acct.uid != os.getuid()
    steps: list[tuple[str, Callable[[], object]]] = [
        ("join cgroup", lambda: _join_cgroups(fds.cgroups)),
        ("reset signals", _reset_signals),
    ]
    if drop:
        steps += [
            ("setresgid", lambda: os.setresgid(acct.gid, acct.gid, acct.gid)),
            ("initgroups", lambda: os.setgroups(list(acct.groups))),
        ]
        if pam is not None:
            steps.append(("pam setcred", pam.reestablish_credentials))
        steps.append(("setresuid", lambda: os.setresuid(acct.uid, acct.uid, acct.uid)))
    groups = ("exact" if pam is None else "at least") if drop else "any"
    steps += [
        ("verify drop", lambda: _prove_unprivileged(acct, groups)),
        ("setsid", os.setsid),
        ("umask", lambda: os.umask(0o077)),
        ("chdir home", lambda: os.chdir(req.workdir or acct.home)),
        ("parent death signal", lambda: _die_with_parent(parent)),
    ]
    if fds.output is None:
        steps += [
            ("log dir", lambda: _make_private_dirs(req.log_dir)),
            ("open log", lambda: output.append(_open_log(req.log_dir, req.log_name))),
        ]
    else:
        output.append(fds.output)
    steps += [
        ("stdio", lambda: _install_stdio(fds.stdin, output[0])),
        ("exec", lambda: os.execve(req.argv[0], list(req.argv), req.env)),
    ]
    return steps


def _join_cgroups(fds: tuple[int, ...]) -> None:
    """Move this process into its user endpoint's cgroups before it can start anything."""
    for fd in fds:
        os.write(fd, b"0")
        os.close(fd)


def _reset_signals() -> None:
    """Default dispositions, nothing blocked, before PDEATHSIG is armed.

    Blocked and ignored signals survive exec, and the manager's Python SIGTERM
    handler (inherited by the fork) would swallow the parent-death signal.
    """
    for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _close_all_but(keep: set[int]) -> None:
    """Close every inherited descriptor except 0-2 and ``keep``, up to the hard limit."""
    top = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    top = top if 0 < top < 2**31 - 1 else 2**31 - 1
    low = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, top)


def _prove_unprivileged(acct: LocalAccount, groups_rule: str) -> None:
    """Fail unless the process is exactly the account and can never become root again.

    ``groups_rule`` is "exact", "at least" (PAM modules may add groups) or "any"
    (an unprivileged manager starting its own user's endpoint changes nothing).
    """
    ids = (acct.uid,) * 3, (acct.gid,) * 3
    if (os.getresuid(), os.getresgid()) != ids:
        raise PermissionError(f"ids are {os.getresuid()} / {os.getresgid()}, wanted {ids}")
    groups, wanted = set(os.getgroups()), set(acct.groups)
    if (groups_rule == "exact" and groups != wanted) or (
        groups_rule == "at least" and not groups >= wanted
    ):
        raise PermissionError(f"groups are {sorted(groups)}, wanted {sorted(wanted)}")
    for regain in (os.setresuid, os.setresgid):
        try:
            regain(0, 0, 0)
        except PermissionError:
            continue
        raise PermissionError(f"{regain.__name__}(0, 0, 0) succeeded: root was regained")
    caps = _capabilities()
    if any(caps.values()):
        raise PermissionError(f"capabilities remain: {caps}")


def _capabilities() -> dict[str, int]:
    fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(fd, 1 << 16).decode()
    finally:
        os.close(fd)
    names = ("CapPrm", "CapEff", "CapAmb")
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: int(v.strip(), 16) for k, v in fields if k in names}


def _die_with_parent(parent: int) -> None:
    """Set PDEATHSIG now (a credential change clears it), then catch a parent already gone."""
    if _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    if os.getppid() != parent:
        os._exit(_FAILED)


def _make_private_dirs(path: str) -> None:
    """Create missing components 0700 as the user; an existing directory is left alone."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        os.mkdir(directory, 0o700)


def _open_log(log_dir: str, log_name: str) -> int:
    """Open the log as the user; a FIFO or device planted there must not block or redirect."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(os.path.join(log_dir, log_name), flags, 0o600)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(errno.EPERM, "log exists and is not a regular file of the user")
    os.set_blocking(fd, True)
    return fd


def _install_stdio(stdin_fd: int, output_fd: int) -> None:
    """Lifted copies are close-on-exec: exec closes them."""
    os.dup2(stdin_fd, 0)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)


def signal_as_user(account: LocalAccount, pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid`` from a helper running as ``account``.

    Raises ProcessLookupError if the group is gone and PermissionError if it now
    belongs to someone else (a recycled id): either way nobody else is hit. An
    unprivileged manager may only signal as itself.
    """
    if pgid <= 1 or account.uid == 0:
        raise ValueError(f"refusing to signal process group {pgid} as uid {account.uid}")
    privileged = os.geteuid() == 0
    if not privileged and account.uid != os.getuid():
        raise PermissionError(errno.EPERM, f"uid {os.getuid()} cannot act as uid {account.uid}")
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()  # never a member of the group it signals
            if privileged:
                os.setresgid(account.gid, account.gid, account.gid)
                os.setgroups([account.gid])
                os.setresuid(account.uid, account.uid, account.uid)
            os.killpg(pgid, sig)
            os._exit(0)
        except OSError as exc:
            os._exit(exc.errno if 0 < (exc.errno or 0) < 126 else _FAILED)
        finally:
            os._exit(_FAILED)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == errno.ESRCH:
        raise ProcessLookupError(errno.ESRCH, f"no process group {pgid}")
    if code == errno.EPERM:
        raise PermissionError(errno.EPERM, f"process group {pgid} is not uid {account.uid}'s")
    if code != 0:
        raise OSError(f"signal helper for process group {pgid} exited with {code}")
