"""``python -I -m mep.monitor``: what ``compute-endpoint start`` execs as root.

Its settings (:class:`mep.monitor.settings.MonitorSettings`, JSON) arrive on
standard input. It takes the endpoint's PID lock, opens the endpoint's log
(shared with the manager, which gets the descriptor) and runs the monitor;
its exit status is the endpoint's (the manager's, if the manager could not
start: 65, 69, 75, 77, 78 as upstream).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from mep.monitor.server import Monitor, MonitorError
from mep.monitor.settings import MonitorSettings, SettingsError
from templates.pidfile import AlreadyRunning, PidFile

EX_CANTCREAT = 73
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _open_log(endpoint_dir: Path) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    return os.open(endpoint_dir / "endpoint.log", flags, 0o600)


def _setup_logging(log_fd: int, settings: MonitorSettings) -> None:
    handlers: list[logging.Handler] = [
        logging.StreamHandler(os.fdopen(os.dup(log_fd), "a", buffering=1))
    ]
    if settings.console:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format=LOG_FORMAT,
        handlers=handlers,
        force=True,
    )


def main() -> int:
    os.umask(0o077)
    try:
        settings = MonitorSettings.from_json(sys.stdin.buffer.read())
    except SettingsError as e:
        print(f"Error: the monitor's settings are invalid: {e}", file=sys.stderr)
        return 78
    endpoint_dir = Path(settings.endpoint_dir)
    try:
        pidfile = PidFile(endpoint_dir / "daemon.pid")
    except AlreadyRunning as e:
        print(f"Error: {e}", file=sys.stderr)
        return EX_CANTCREAT
    log_fd = _open_log(endpoint_dir)
    _setup_logging(log_fd, settings)
    log = logging.getLogger("mep.monitor")
    log.info("========== monitor of endpoint %s begins (pid %d)", settings.name, os.getpid())
    try:
        return Monitor(settings, log_fd).run()
    except MonitorError as e:
        log.error("%s", e)
        if settings.console:
            print(f"Error: {e}", file=sys.stderr)
        if settings.detached:
            os.write(1, f"failed {e.exit_code}\n".encode())
        return e.exit_code
    except Exception:
        log.exception("the monitor failed")
        return 70
    finally:
        pidfile.release()


if __name__ == "__main__":
    sys.exit(main())
