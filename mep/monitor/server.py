"""The monitor: the one process of an endpoint that stays root, and all it does.

``compute-endpoint start`` as root becomes this process. It forks the manager,
which drops to its own unprivileged account (``manager_user``, by default
``compute-agent``) and does everything that parses: AMQP, start commands,
identity mapping, templates, registration. The monitor serves the manager's
requests from the closed table of :mod:`mep.monitor.requests` and otherwise:

1. re-checks the account policy for every user endpoint it is asked to start
   (never root, never the manager's account, never below ``min_uid``, never a
   denied account), whatever the manager decided;
2. forks and drops privileges (:mod:`mep.monitor.spawn`), with PAM if set;
3. keeps each user endpoint in its cgroup (:mod:`mep.monitor.containment`);
4. reaps its children and tells the manager who exited;
5. appends the audit log (:mod:`mep.monitor.audit`);
6. opens the admin's files the manager needs, read-only, by name, never by a
   path the manager chose.

If the manager dies, the monitor stops every user endpoint (they have no one
to refresh their credentials or restart them), then starts a new manager,
which registers again and receives fresh start commands for waiting work; a
manager that keeps dying ends the monitor (and systemd decides). A request
outside the table ends the session at once: the manager is killed, every user
endpoint stopped, the monitor exits 70. SIGTERM stops the manager and every
user endpoint (with a grace period for running tasks) and ends the monitor.

The monitor imports no parser beyond :mod:`json` and nothing that talks to
the network (a test checks its ``sys.modules``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import select
import shutil
import signal
import socket
import stat
import sys
import time
import typing as t
import zlib
from pathlib import Path

from identity.policy import LocalAccount, Refused, check_account, local_account, passwd_lookup
from mep.monitor import channel
from mep.monitor.audit import AuditLog, AuditWriteError, record_line, session_line
from mep.monitor.children import ChildTable, ExitRecord
from mep.monitor.containment import Containment, ContainmentError, current_layout
from mep.monitor.requests import (
    DEFAULT_PATH,
    Read,
    Registered,
    Request,
    Spawn,
    State,
    Status,
    Violation,
    next_state,
    parse_request,
)
from mep.monitor.settings import MonitorSettings
from mep.monitor.spawn import SpawnError, SpawnRequest, spawn
from templates.paths import user_endpoint_paths

log = logging.getLogger("mep.monitor")
EX_SOFTWARE = 70
EX_CONFIG = 78
LOOP_TICK_S = 0.5
KILL_WAIT_S = 10.0
CLOSED_GRACE_S = 5.0
MANAGER_MODULE = "mep.manager_process"
EXECUTABLE = "compute-endpoint"
# A manager that ran this long and died is restarted; more deaths than this
# within the window end the monitor instead.
MANAGER_RESTARTS = 5
MANAGER_RESTART_WINDOW_S = 600.0
MANAGER_RESTART_DELAY_S = 2.0
STATUS_FILE = "status.json"
ENDPOINT_FILE = "endpoint.json"
# What the manager inherits from the monitor's environment: the service's
# coordinates and credentials, locale, proxies and CA bundles; nothing else.
MANAGER_ENV_PREFIXES = ("GLOBUS_", "COMPUTE_AGENT_", "LC_")
MANAGER_ENV_NAMES = (
    "LANG",
    "TZ",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


class MonitorError(Exception):
    """The monitor cannot run (its message says why); ``exit_code`` for the command line."""

    def __init__(self, message: str, exit_code: int = EX_CONFIG) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def manager_environment(environ: t.Mapping[str, str], account: LocalAccount) -> dict[str, str]:
    """The manager's whole environment: an allow-list of ours, and its own account's basics."""
    env = {
        k: v
        for k, v in environ.items()
        if k in MANAGER_ENV_NAMES or k.startswith(MANAGER_ENV_PREFIXES)
    }
    env.update(
        HOME=account.home or "/",
        USER=account.name,
        LOGNAME=account.name,
        PATH=DEFAULT_PATH,
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.setdefault("LANG", "C.UTF-8")
    return env


@dataclasses.dataclass
class ManagerProcess:
    pid: int
    sock: socket.socket | None
    started_at: float
    state: State = State.STARTING
    exit_status: int | None = None  # waitpid status once reaped
    closed_at: float | None = None  # when it closed its end of the channel


@dataclasses.dataclass
class Ending:
    """The monitor is stopping its user endpoints, then exits or starts a new manager."""

    code: int
    restart: bool
    deadline: float
    killed: bool = False


class Monitor:
    def __init__(self, settings: MonitorSettings, log_fd: int) -> None:
        self.s = settings
        self.log_fd = log_fd
        self.privileged = os.geteuid() == 0
        self.children = ChildTable()
        self.containment: Containment | None = None
        self.audit: AuditLog | None = None
        self.endpoint_id: str | None = None
        self.heartbeat_period = 30.0
        self.manager: ManagerProcess | None = None
        self.manager_account = self._manager_account()
        self.ending: Ending | None = None
        self.restart_at: float | None = None
        self.deaths: list[float] = []
        self.events: collections.deque[dict] = collections.deque()
        self.stop_requested = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # ---- set-up --------------------------------------------------------
    def _manager_account(self) -> LocalAccount:
        if not self.privileged:
            return local_account(passwd_lookup(_own_name()))
        name = self.s.manager_account
        entry = passwd_lookup(name) if name else None
        if entry is None:
            raise MonitorError(
                f"the manager's account {name!r} does not exist; create it"
                f" (useradd --system --no-create-home --shell /sbin/nologin {name})"
                " or name another in config.yaml (manager_user:)"
            )
        if entry.uid == 0 or entry.gid == 0:
            raise MonitorError(f"manager_user {name!r} is root: the manager must be unprivileged")
        return local_account(entry)

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: t.Any) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            self.stop_requested = True

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, stop)
        signal.signal(signal.SIGHUP, lambda *_: self._signal_manager(signal.SIGHUP))
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    # ---- the loop ------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        _title(f"compute-agent monitor ({self.s.name}, {self.s.endpoint_dir})")
        if self.s.audit_log_path:
            self.audit = AuditLog(Path(self.s.audit_log_path))
        self._contain()
        self._start_manager()
        code = None
        try:
            while code is None:
                self._wait()
                self._serve()
                self._reap()
                self._flush_events()
                code = self._advance()
        except Violation as e:
            log.critical("the manager broke the protocol (%s); ending its session", e)
            code = self._abort(EX_SOFTWARE)
        except AuditWriteError as e:
            log.critical("%s; stopping (the audit log is fail-closed)", e)
            code = self._abort(1)
        finally:
            self._close()
        return code

    def _wait(self) -> None:
        watched = [self._wake_r]
        if self.manager is not None and self.manager.sock is not None:
            watched.append(self.manager.sock.fileno())
        timeout = 0 if self.stop_requested and self.ending is None else LOOP_TICK_S
        with contextlib.suppress(InterruptedError):
            select.select(watched, [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass
        if self.audit:
            self.audit.drain()

    def _advance(self) -> int | None:
        """Shutdown, draining after a manager's death, restarting it: the exit code when done."""
        now = time.monotonic()
        closed_at = None if self.manager is None else self.manager.closed_at
        if closed_at is not None and now - closed_at > CLOSED_GRACE_S:
            self._signal_manager(signal.SIGKILL)  # it cannot work without the channel
        if self.stop_requested and (self.ending is None or self.ending.restart):
            self._end(0, restart=False)
        if self.ending is None:
            if self.restart_at is not None and now >= self.restart_at:
                self.restart_at = None
                self._start_manager()
            return None
        ending = self.ending
        if not ending.killed and now >= ending.deadline:
            self._kill_everything()
            ending.killed, ending.deadline = True, now + KILL_WAIT_S
        if len(self.children) == 0 and self.manager is None:
            self.ending = None
            if not ending.restart:
                return ending.code
            self.restart_at = now + MANAGER_RESTART_DELAY_S
            log.info("starting a new manager in %.0f s", MANAGER_RESTART_DELAY_S)
        elif ending.killed and now >= ending.deadline:
            log.error("user endpoints or the manager survived SIGKILL; exiting anyway")
            return ending.code
        return None

    def _end(self, code: int, restart: bool) -> None:
        """Ask the manager and every user endpoint to stop; they get the grace period."""
        self.ending = Ending(code, restart, time.monotonic() + self.s.stop_grace_s)
        self.restart_at = None
        self._signal_manager(signal.SIGTERM)
        self.children.terminate_all()

    def _kill_everything(self) -> None:
        self._signal_manager(signal.SIGKILL)
        self.children.kill_all()
        if self.containment is not None:
            for name in list(self.containment.cells):
                self.containment.cells[name].kill()

    def _abort(self, code: int) -> int:
        """End at once: kill the manager, stop the user endpoints (with their grace)."""
        self._signal_manager(signal.SIGKILL)
        if self.manager is not None and self.manager.sock is not None:
            self.manager.sock.close()
            self.manager.sock = None
        self.children.stop_all(self.s.stop_grace_s)
        for exited in self.children.reap():
            self._after_exit(exited)
        self._reap_manager(block=True)
        return code

    def _signal_manager(self, sig: int) -> None:
        """Our unreaped child: its pid cannot have been recycled."""
        if self.manager is not None and self.manager.exit_status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.manager.pid, sig)

    # ---- the manager ---------------------------------------------------
    def _start_manager(self) -> None:
        mine, theirs = channel.socketpair()
        mine.setblocking(False)
        program = [self.s.manager_program] if self.s.manager_program else ["-m", MANAGER_MODULE]
        argv = [sys.executable, "-I", *program, self.s.name, self.s.endpoint_dir]
        argv += ["--multi-user"] if self.privileged else []
        argv += ["--console"] if self.s.console else []
        argv += ["--debug"] if self.s.debug else []
        argv += ["--files", json.dumps(self.s.files)]
        stdin = channel.sealed_memfd(b"")
        request = SpawnRequest(
            account=self.manager_account,
            argv=tuple(argv),
            env=manager_environment(os.environ, self.manager_account),
            stdin_fd=stdin,
            output_fd=2,
            pass_fds=(theirs.fileno(), self.log_fd),
            workdir="/",
        )
        try:
            spawned = spawn(request)
        except SpawnError as e:
            mine.close()
            raise MonitorError(
                f"cannot start the manager: {e.admin_message}", EX_SOFTWARE
            ) from None
        finally:
            theirs.close()
            os.close(stdin)
        self.manager = ManagerProcess(spawned.pid, mine, time.monotonic())
        log.info("manager started (pid %d) as %s", spawned.pid, self.manager_account.name)

    def _reap_manager(self, block: bool = False) -> None:
        manager = self.manager
        if manager is None:
            return
        try:
            pid, status = os.waitpid(manager.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            pid, status = manager.pid, 0
        if pid == 0:
            return
        manager.exit_status = status
        if manager.sock is not None:
            manager.sock.close()
        self.manager = None
        self.events.clear()
        self._after_manager_exit(manager)

    def _after_manager_exit(self, manager: ManagerProcess) -> None:
        code = os.waitstatus_to_exitcode(manager.exit_status or 0)
        said = f"return code {code}" if code >= 0 else f"signal {-code}"
        if self.ending is not None:
            log.info("the manager stopped (%s)", said)
            return
        if manager.state is State.STARTING:
            log.error("the manager ended before it registered (%s)", said)
            self._end(code if code > 0 else EX_SOFTWARE, restart=False)
            self._report_failure(code if code > 0 else EX_SOFTWARE)
            return
        if code == 0:
            log.info("the manager stopped on its own; stopping every user endpoint")
            self._end(0, restart=False)
            return
        now = time.monotonic()
        self.deaths = [d for d in self.deaths if now - d < MANAGER_RESTART_WINDOW_S] + [now]
        restart = len(self.deaths) <= MANAGER_RESTARTS
        log.error(
            "the manager died (%s); stopping every user endpoint%s",
            said,
            ", then starting a new manager" if restart else "; it died too often, giving up",
        )
        self._end(EX_SOFTWARE, restart=restart)

    def _report_failure(self, code: int) -> None:
        """Detached: the waiting ``start`` command learns the outcome on our stdout."""
        if self.s.detached:
            _say_and_close_stdout(f"failed {code}\n")

    # ---- requests ------------------------------------------------------
    def _serve(self) -> None:
        manager = self.manager
        while manager is not None and manager.sock is not None:
            try:
                message, fds = channel.receive(manager.sock)
            except BlockingIOError:
                return
            except channel.ChannelClosed:
                manager.sock.close()
                manager.sock = None
                manager.closed_at = time.monotonic()  # it is exiting, or gets killed soon
                return
            except (channel.ChannelError, OSError) as e:
                raise Violation(str(e)) from None
            try:
                request = parse_request(message, len(fds), manager.state)
            except Violation:
                channel.close_all(fds)
                raise
            reply, reply_fds = self._handle(request, fds)
            try:
                channel.send(manager.sock, reply, reply_fds)
            except OSError as e:
                log.warning("could not answer the manager: %s", e)
            finally:
                channel.close_all(reply_fds)
            manager.state = next_state(manager.state, request)

    def _handle(self, request: Request, fds: list[int]) -> tuple[dict, list[int]]:
        if isinstance(request, Spawn):
            try:
                return self._spawn(request, fds), []
            finally:
                channel.close_all(fds)
        if isinstance(request, Read):
            return self._read(request)
        if isinstance(request, Registered):
            self._registered(request)
        elif isinstance(request, Status):
            self._write_status(request.connected)
        return {"ok": True}, []

    def _read(self, request: Read) -> tuple[dict, list[int]]:
        """The admin's file, opened read-only; its path comes from our settings only."""
        if request.file == "endpoint_id":
            path = str(Path(self.s.endpoint_dir) / ENDPOINT_FILE)
        else:
            path = self.s.files.get(request.file)
        if path is None:
            return {"ok": False, "missing": True, "error": f"no {request.file} file is set"}, []
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return {"ok": False, "missing": True, "error": f"{path} does not exist"}, []
        except OSError as e:
            return {"ok": False, "missing": False, "error": f"cannot open {path}: {e.strerror}"}, []
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return {"ok": False, "missing": False, "error": f"{path} is not a regular file"}, []
        return {"ok": True}, [fd]

    def _registered(self, request: Registered) -> None:
        first = self.endpoint_id is None
        if not first and request.endpoint_id != self.endpoint_id:
            raise Violation(f"registered as {request.endpoint_id}, was {self.endpoint_id}")
        self.endpoint_id, self.heartbeat_period = request.endpoint_id, request.heartbeat_period
        _write_json(Path(self.s.endpoint_dir) / ENDPOINT_FILE, {"endpoint_id": self.endpoint_id})
        if first:
            _say_and_close_stdout(f"{self.endpoint_id}\n")
            if self.audit:
                self.audit.write(session_line(os.getuid(), os.getpid(), self.endpoint_id, True))
        self._write_status(False)

    def _contain(self) -> None:
        """Cgroups before anything is forked: the monitor may have to move into a leaf first."""
        self.containment = Containment(
            current_layout(),
            endpoint_key(self.s.name, self.s.endpoint_dir),
            self.s.memory_per_user,
            self.s.processes_per_user,
        )
        self.containment.prepare()
        self.containment.start_warden()
        log.info(
            "user endpoints are contained in %s",
            self.containment.unified_base or "no cgroup (the monitor is their subreaper)",
        )

    def _write_status(self, connected: bool) -> None:
        """``status.json`` tells ``compute-endpoint list`` what the endpoint is doing."""
        _write_json(
            Path(self.s.endpoint_dir) / STATUS_FILE,
            {
                "endpoint_id": self.endpoint_id,
                "pid": os.getpid(),
                "connected": connected,
                "user_endpoints": len(self.children),
                "updated": time.time(),
                "heartbeat_period": self.heartbeat_period,
            },
        )

    # ---- spawning a user endpoint ---------------------------------------
    def _spawn(self, request: Spawn, fds: list[int]) -> dict:
        _check_spawn_fds(fds)
        if self.ending is not None:
            return _refusal("request", "the endpoint is stopping", "the endpoint is stopping")
        if request.name in self.children:
            return _refusal("request", f"user endpoint {request.name} is already running")
        account = self._allowed(request.user)
        if isinstance(account, Refused):
            return _refusal(
                "account check",
                f"the monitor refused local user {request.user!r}: {account.admin_message}",
                account.user_message,
            )
        path = request.env.get("PATH") or DEFAULT_PATH
        executable = shutil.which(EXECUTABLE, path=path)
        if executable is None:
            return _refusal(
                "find executable",
                f"{EXECUTABLE} not found on PATH {path!r} for {account.name}"
                " (is the installation readable by that account?)",
                "the user endpoint program is not installed where your account can run it;"
                " contact the endpoint administrator",
            )
        try:
            return self._start_user_endpoint(request, account, executable, fds)
        except SpawnError as e:
            return _refusal(e.step, e.admin_message, e.user_message)

    def _allowed(self, user: str) -> LocalAccount | Refused:
        """The account policy, again, here: whatever the manager decided."""
        if not self.privileged:
            if user == self.manager_account.name:
                return self.manager_account
            return Refused(
                "this endpoint runs tasks for its owner only",
                f"an unprivileged monitor runs only its own account, not {user!r}",
                "not-own-account",
            )
        return check_account(user, self.s.policy, self.manager_account.uid)

    def _start_user_endpoint(
        self, request: Spawn, account: LocalAccount, executable: str, fds: list[int]
    ) -> dict:
        payload, credentials, note = fds
        assert self.containment is not None  # made before the manager started
        try:
            join = self.containment.cell(account.name, request.name).join_fds()
        except ContainmentError as e:
            self.containment.release(request.name)
            raise SpawnError(
                "join cgroup", str(e), "the endpoint host could not set up your resources"
            ) from None
        audit_r = audit_w = None
        if self.audit:
            audit_r, audit_w = self.audit.open_pipe()
        _, log_file = user_endpoint_paths(account.home, request.name)
        try:
            spawned = spawn(
                SpawnRequest(
                    account=account,
                    argv=(executable, "_start-user-endpoint", request.name),
                    env=request.env,
                    stdin_fd=payload,
                    log_dir=str(log_file.parent),
                    log_name=log_file.name,
                    pass_fds=(credentials, note, *(() if audit_w is None else (audit_w,))),
                    use_pam=self.s.pam_enable,
                    pam_service=self.s.pam_service,
                    cgroup_fds=join,
                )
            )
        except SpawnError:
            self.containment.release(request.name)
            if audit_r is not None:
                os.close(audit_r)
            raise
        finally:
            channel.close_all((*join, *(() if audit_w is None else (audit_w,))))
        self.children.add(request.name, spawned, request.endpoint_id)
        if self.audit and audit_r is not None:
            self.audit.watch(audit_r, account.uid, spawned.pid, request.endpoint_id)
            self.audit.write(
                record_line(
                    account.uid,
                    spawned.pid,
                    request.endpoint_id,
                    f"START local_user={account.name} identity={request.identity}",
                )
            )
        log.info("started user endpoint %s (pid %d) as %s", request.name, spawned.pid, account.name)
        return {"ok": True, "pid": spawned.pid}

    # ---- exits ---------------------------------------------------------
    def _reap(self) -> None:
        for exited in self.children.reap():
            self._after_exit(exited)
        self._reap_manager()
        if self.containment is not None and not self.containment.contained:
            spare = () if self.manager is None else (self.manager.pid,)
            self.children.reap_orphans(everyone=self.ending is not None, spare=spare)

    def _after_exit(self, exited: ExitRecord) -> None:
        log.info("user endpoint %s (pid %d) exited: %s", exited.name, exited.pid, exited.describe())
        if self.containment is not None:
            self.containment.release(exited.name)
        if self.audit and exited.endpoint_id:
            self.audit.write(
                record_line(
                    exited.account.uid, exited.pid, exited.endpoint_id, f"EXIT {exited.describe()}"
                )
            )
        if self.manager is not None and self.manager.sock is not None:
            self.events.append(exited.event())

    def _flush_events(self) -> None:
        manager = self.manager
        while self.events and manager is not None and manager.sock is not None:
            try:
                channel.send(manager.sock, self.events[0])
            except BlockingIOError:
                return
            except OSError:
                self.events.clear()
                return
            self.events.popleft()

    def _close(self) -> None:
        if self.manager is not None:
            self._signal_manager(signal.SIGKILL)
            self._reap_manager(block=True)
        if self.containment is not None:
            self.containment.close()
            if not self.containment.contained:
                self.children.reap_orphans(everyone=True)
        if self.audit:
            with contextlib.suppress(AuditWriteError):
                self.audit.drain()
                if self.endpoint_id:
                    self.audit.write(
                        session_line(os.getuid(), os.getpid(), self.endpoint_id, False)
                    )
            self.audit.close()
        with contextlib.suppress(OSError):
            (Path(self.s.endpoint_dir) / STATUS_FILE).unlink()
        log.info("the monitor of endpoint %s ends", self.s.name)


def _check_spawn_fds(fds: list[int]) -> None:
    """A sealed memfd for stdin, a memfd for credentials, a pipe for notes; nothing else.

    Whatever is passed reaches researcher code: a socket or a file of the
    manager's must never be handed over in their place.
    """
    payload, credentials, note = fds
    if not _sealed(payload, required=True) or not _sealed(credentials, required=False):
        raise Violation("spawn: the payload and credentials must be memfds")
    if not stat.S_ISFIFO(os.fstat(note).st_mode):
        raise Violation("spawn: the note descriptor must be a pipe")


def _sealed(fd: int, required: bool) -> bool:
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        return False  # not a memfd
    return not required or bool(seals & fcntl.F_SEAL_WRITE)


def _refusal(step: str, admin_message: str, user_message: str = "") -> dict:
    return {
        "ok": False,
        "step": step,
        "admin_message": admin_message,
        "user_message": user_message
        or "Failed to start your user endpoint; please contact the endpoint administrator.",
    }


def _write_json(path: Path, document: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(document, f)
    os.replace(tmp, path)


def endpoint_key(name: str, endpoint_dir: str) -> str:
    """Names this endpoint's cgroups: the same across restarts, distinct for two directories.

    A CRC of the directory, not a cryptographic digest: nothing here needs one,
    and hashlib would load OpenSSL's libcrypto into root's long-lived process for
    this one call (0.7 MiB of its PSS, ``bench/compare``'s manager figure).
    """
    return f"{name}.{zlib.crc32(os.path.abspath(endpoint_dir).encode()):08x}"


def _say_and_close_stdout(line: str) -> None:
    """The one line ``start`` waits for; then stdout is let go, so its reader sees the end.

    Nothing started later (the warden, user endpoints) may inherit it.
    """
    with contextlib.suppress(OSError):
        os.write(1, line.encode())
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)


def _own_name() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _title(text: str) -> None:
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle(text)
