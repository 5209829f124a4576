"""Starting a user endpoint from the manager's stdin payload.

Every start-up failure reaches two people: the admin gets a log line with the
details (stderr is the endpoint log), and the submitting user gets an
``EPStatusReport`` with ``{"error": ..., "heartbeat_period": 3}`` on the
heartbeat queue, which the service turns into the text of their exception.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import logging
import os
import pwd
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import typing as t
import uuid
from pathlib import Path

from templates.paths import user_endpoint_paths
from templates.pidfile import AlreadyRunning, PidFile
from uep import lean_parsl
from uep.payload import LaunchPayload, PayloadError, credential_source, parse_payload
from wire.queue_info import AmqpCreds
from wire.redaction import install_redaction

if t.TYPE_CHECKING:
    from templates.render_request import RenderRequest
    from templates.user_config import UserEndpointConfig, UserEndpointPaths

log = logging.getLogger("uep")

EX_DATAERR = 65
EX_TEMPFAIL = 75
EX_CONFIG = 78
SHORT_OF_ROOM = (errno.ENOSPC, errno.EDQUOT)
STOP_GRACE_S = 10.0
RENDERED_CONFIG = "rendered_config.yaml"
NOTE_MAX = 4096  # one packet: the manager reads at most this much


class StartupError(Exception):
    """Start-up cannot proceed; the text is meant for the submitting user."""


def _configure_logging(debug: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # we log connection trouble ourselves
    install_redaction(root)


def _creds_for_report(raw: bytes) -> AmqpCreds | None:
    """Best effort: where to report a payload we could not fully accept."""
    try:
        return AmqpCreds.from_dict(json.loads(raw)["amqp_creds"])
    except Exception:
        return None


def report_startup_failure(creds: AmqpCreds, message: str, port: int | None = None) -> None:
    """Tell the submitting user why their endpoint did not start."""
    from wire.amqp import connect, publish_kwargs
    from wire.messages import EPStatusReport, pack

    info = creds.heartbeat_queue_info
    report = EPStatusReport(
        endpoint_id=creds.endpoint_id,
        global_state={"error": message, "heartbeat_period": 3},
        task_statuses={},
    )
    try:
        conn = connect(info.connection_url, port=port, connection_attempts=2)
        try:
            kwargs = publish_kwargs(info, mandatory=True)
            conn.channel().basic_publish(body=pack(report), **kwargs)
        finally:
            conn.close()
    except Exception as e:
        log.error("could not report the start-up failure to the service: %s", e)


def _short_of_room(error: BaseException) -> bool:
    """A full disk or quota: from the OS, or from SQLite, which says so in words."""
    if isinstance(error, OSError) and error.errno in SHORT_OF_ROOM:
        return True
    return isinstance(error, sqlite3.OperationalError) and "full" in str(error)


def _lock(directory: Path) -> PidFile:
    """Hold ``daemon.pid`` for the process lifetime: one endpoint per directory."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return PidFile(directory / "daemon.pid")
    except AlreadyRunning:
        raise StartupError(f"another user endpoint is already running in {directory}") from None


def _run_setup(command: str | None) -> None:
    if not command:
        return
    done = subprocess.run(command, shell=True, check=False)
    if done.returncode != 0:
        raise StartupError(f"endpoint_setup failed with exit status {done.returncode}")


def ep_info(payload: LaunchPayload, config_text: str, now: float) -> dict:
    """What heartbeats say about this process, on top of what the manager sent."""
    user = pwd.getpwuid(os.getuid())
    return {
        **payload.ep_info,
        "posix_username": user.pw_name,
        "posix_uid": os.getuid(),
        "posix_gid": os.getgid(),
        "posix_groups": os.getgroups(),
        "posix_pid": os.getpid(),
        "posix_sid": os.getsid(0),
        "config_raw": config_text,
        "start_iso": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(),
        "start_unix": now,
    }


def _title_setter(endpoint_id: str, name: str):
    try:
        from setproctitle import setproctitle
    except ImportError:
        return lambda _suffix: None
    base = f"Globus Compute Endpoint ({endpoint_id}, {name})"
    return lambda suffix: setproctitle(f"{base} {suffix}".rstrip())


def _shutdown(engine, timeout: float = 15.0) -> None:
    """Stop the engine, but never hang the exit on a wedged executor."""
    stopper = threading.Thread(target=engine.shutdown, name="engine-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout)
    if stopper.is_alive():
        log.warning("engine did not shut down within %.0fs; exiting anyway", timeout)


def exit_now(status: int) -> None:
    """Exit without joining worker threads: a task stuck in a thread pool was
    already answered with an error and must not keep the process alive."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(name: str) -> int:
    """``_start-user-endpoint NAME``: the exit status of the user endpoint."""
    lean_parsl.install()
    lean_parsl.defer()
    _configure_logging(os.environ.get("GC_UEP_DEBUG") == "1")
    if sys.stdin.isatty():
        log.error("_start-user-endpoint reads its launch payload from a pipe, not a terminal")
        return EX_DATAERR
    raw = sys.stdin.buffer.read()
    try:
        payload = parse_payload(raw)
    except (PayloadError, ValueError) as e:
        log.error("invalid launch payload: %s", e)
        creds = _creds_for_report(raw)
        if creds is not None:
            report_startup_failure(creds, f"Endpoint failed to start: {e}")
        return EX_DATAERR
    keep_to_myself(payload)
    try:
        creds = credential_source(payload)()
    except (PayloadError, ValueError, OSError) as e:
        log.error("cannot read the broker credentials: %s", e)
        return EX_DATAERR
    return _serve(name, payload, creds)


def keep_to_myself(payload: LaunchPayload) -> None:
    """The descriptors the monitor handed over stay in this process: workers, engines and
    anything a task starts never inherit the audit pipe, the note pipe or the credentials."""
    for fd in (payload.mem_fd, payload.audit_fd, payload.note_fd):
        if fd is not None:
            try:
                os.set_inheritable(fd, False)
            except OSError as e:
                log.warning("descriptor %d from the launch payload: %s", fd, e)


def leave_note(fd: int | None, step: str, admin_message: str) -> None:
    """Tell the manager why this start was refused (it logs it for the admin)."""
    if fd is None:
        return
    note = json.dumps({"step": step, "admin": admin_message})[:NOTE_MAX].encode()
    try:
        os.write(fd, note)
    except OSError as e:
        log.warning("could not leave the manager a note: %s", e)


def _render(
    name: str, payload: LaunchPayload, creds: AmqpCreds
) -> tuple[str, UserEndpointConfig] | int:
    """The config to run: rendered as this user (in a child), or as given; else the exit status."""
    from templates.user_config import load_user_endpoint_config

    request = payload.render
    if request is None:
        text = payload.config_text
    else:
        outcome = _render_in_child(request)
        refused = outcome.get("refused")
        if refused is not None:
            step, admin_message = refused["step"], refused["admin_message"]
            log.error("user endpoint %s: config refused (%s): %s", name, step, admin_message)
            leave_note(payload.note_fd, f"render:{step}", admin_message)
            port = request.parent_config.get("amqp_port")
            report_startup_failure(creds, refused["user_message"], port)
            return EX_DATAERR
        text = outcome["yaml_text"]
    try:
        return text, load_user_endpoint_config(text)
    except Exception as e:
        log.error("user endpoint %s: the given config is unusable: %s", name, e)
        report_startup_failure(creds, f"Endpoint failed to start: {e}")
        return EX_CONFIG


def _render_in_child(request: RenderRequest) -> dict:
    """``{"yaml_text": ...}`` or ``{"refused": RenderError's fields}``, from a forked child.

    Jinja and jsonschema (3.7 MB of private memory) are loaded only there, never
    in this long-lived process, nor in the interchange forked from it. The
    child is this process, as this user, before any thread exists. The text it
    returns is parsed here again, as any given config is.
    """
    from wire.forked_call import ChildCallFailed, call_in_child

    try:
        return call_in_child(lambda: _rendered(request))
    except ChildCallFailed as e:
        return {
            "refused": {
                "user_message": "Error generating the user endpoint config;"
                " please contact the endpoint administrator.",
                "admin_message": f"rendering failed in its child process: {e}",
                "step": "child",
            }
        }


def _rendered(request: RenderRequest) -> dict:
    """In the child: the render pipeline's outcome as JSON-able data."""
    from templates.rendering import RenderError

    outcome = request.render()
    if isinstance(outcome, RenderError):
        return {"refused": dataclasses.asdict(outcome)}
    return {"yaml_text": outcome.yaml_text}


def _follow_log(name: str, paths: UserEndpointPaths) -> None:
    """Move stdout and stderr to the log the template's ``paths:`` name, if it is another."""
    home = Path.home()
    _, wanted = user_endpoint_paths(home, name, paths.endpoint_dir, paths.endpoint_log)
    if wanted == user_endpoint_paths(home, name)[1]:
        return
    wanted.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(wanted, flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StartupError(f"the log {wanted} is not a regular file")
        os.set_blocking(fd, True)
        log.info("the log continues in %s", wanted)
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def _serve(name: str, payload: LaunchPayload, creds: AmqpCreds) -> int:
    from uep.engines import build_engine
    from uep.store import Store

    rendered = _render(name, payload, creds)
    if isinstance(rendered, int):
        return rendered
    config_text, config = rendered
    port = config.amqp_port
    engine = None
    try:
        _follow_log(name, config.paths)
        if config.debug:
            logging.getLogger().setLevel(logging.DEBUG)
        directory, _ = user_endpoint_paths(Path.home(), name, config.paths.endpoint_dir)
        lock = _lock(directory)
        _run_setup(config.endpoint_setup)
        store = Store(directory / "uep_state.sqlite3")
        (directory / "endpoint.json").write_text(
            json.dumps({"endpoint_id": str(creds.endpoint_id)})
        )
        # What this run was rendered into, for its user to read (never read back).
        (directory / RENDERED_CONFIG).write_text(config_text)
        engine = build_engine(config.engine)
        engine.start(str(creds.endpoint_id), directory)
    except Exception as e:
        if engine is not None:
            engine.shutdown()
        if _short_of_room(e):
            # Transient: the manager starts us again after a backoff, and its circuit
            # breaker tells the submitters if the room never comes back.
            log.error("user endpoint %s cannot start yet: %s", name, e)
            return EX_TEMPFAIL
        log.exception("user endpoint %s failed to start", name)
        leave_note(payload.note_fd, "start", f"({type(e).__name__}) {e}")
        report_startup_failure(creds, f"Endpoint failed to start: {e}", port)
        return EX_CONFIG
    # Only now: the engine's workers start while this process loads the broker client.
    from uep.endpoint import Settings, UserEndpoint, install_signal_handlers

    allowed = payload.allowed_functions or config.allowed_functions
    settings = Settings(
        heartbeat_period=config.heartbeat_period,
        idle_soft=config.idle_heartbeats_soft,
        idle_hard=config.idle_heartbeats_hard,
        amqp_port=port,
        allowed_functions=None
        if allowed is None
        else frozenset(str(uuid.UUID(f)) for f in allowed),
        stop_grace_s=STOP_GRACE_S,
        rerun_unfinished=engine.max_retries > 0,
    )
    set_title = _title_setter(str(creds.endpoint_id), name)
    set_title("")
    first = [creds]
    source = credential_source(payload)
    endpoint = UserEndpoint(
        engine=engine,
        store=store,
        credentials=lambda: first.pop() if first else source(),
        endpoint_id=str(creds.endpoint_id),
        ep_info=ep_info(payload, config_text, time.time()),
        settings=settings,
        set_title=set_title,
        audit_fd=payload.audit_fd,
    )
    install_signal_handlers(endpoint)
    try:
        status = endpoint.run()
        log.info("user endpoint %s stopped: %s", name, endpoint.stop_reason)
        return status
    finally:
        _shutdown(engine)
        store.close()
        lock.release()
