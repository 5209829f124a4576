"""``compute-endpoint start/stop/restart/list/delete``: running the manager.

Exit codes (also in ``--help``): 0 done; 1 the request makes no sense now (not
running, refused deletion); 2 bad name or missing endpoint; 65/69/70/75/77/78
registration and configuration failures (sysexits, as upstream); 73 another
manager already runs for this endpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
import typing as t
from pathlib import Path

import typer

from templates.errors import ConfigError
from templates.paths import base_dir, check_endpoint_name

if t.TYPE_CHECKING:
    from mep.monitor.settings import MonitorSettings
    from templates.manager_config import ManagerConfig

EX_CANTCREAT = 73
EXIT_CODES = (
    "Exit codes: 0 success; 1 nothing to do or refused; 2 bad name or no such endpoint;"
    " 65 service rejected the registration; 69 service unavailable for this endpoint;"
    " 70 unexpected service answer; 73 already running; 75 service unreachable;"
    " 77 credentials refused or file unreadable; 78 configuration error."
)
STOP_WAIT_S = 60.0  # the manager's own grace (25 s) and cgroup release, with room
log = logging.getLogger("mep")


def _fail(code: int, message: str) -> t.NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def config_root(config_dir: str | None) -> Path:
    """``--config-dir``, else the base directory ``configure`` uses."""
    if config_dir:
        return Path(config_dir).expanduser()
    return base_dir(os.environ, os.geteuid(), Path.home())


def _existing_dir(name: str, config_dir: str | None) -> Path:
    try:
        directory = config_root(config_dir) / check_endpoint_name(name)
    except ConfigError as e:
        _fail(2, str(e))
    if not (directory / "config.yaml").is_file():
        _fail(
            2,
            f"no endpoint {name!r} in {directory.parent}; create it with: compute-endpoint configure {name}",
        )
    return directory


class StartError(Exception):
    """``start`` cannot go on; ``exit_code`` says why (sysexits)."""

    def __init__(self, message: str, exit_code: int = 78) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def monitor_settings(
    name: str, directory: Path, config: ManagerConfig, *, detached: bool, debug: bool
) -> MonitorSettings:
    """What the monitor needs from ``config.yaml``, checked here: the monitor reads no YAML."""
    from identity.policy import AccountPolicy
    from mep.monitor.settings import MonitorSettings

    privileged = os.geteuid() == 0
    if privileged and config.identity_mapping_config_path is None:
        raise StartError(
            "a manager running as root needs identity_mapping_config_path in config.yaml;"
            " compute-agent never runs users' tasks as root"
        )
    if privileged and not config.email:
        raise StartError("multi-user endpoints require a contact email (email: in config.yaml)")
    paths = {
        "config": directory / "config.yaml",
        "identity_mapping": config.identity_mapping_config_path if privileged else None,
        "template": config.user_config_template_path,
        "schema": config.user_config_schema_path,
        "environment": config.user_environment_path,
    }
    return MonitorSettings(
        name=name,
        endpoint_dir=str(directory),
        manager_account=config.manager_user if privileged else None,
        policy=AccountPolicy(
            min_uid=config.min_uid,
            allow_system_accounts=tuple(config.allow_system_accounts),
            allowed_groups=tuple(config.allowed_groups),
            denied_users=tuple(config.denied_users),
        ),
        memory_per_user=config.limits.memory_per_user,
        processes_per_user=config.limits.processes_per_user,
        pam_enable=config.pam.enable,
        pam_service=config.pam.service_name,
        audit_log_path=str(config.audit_log_path) if config.audit_log_path else None,
        files={k: str(Path(v).absolute()) for k, v in paths.items() if v is not None},
        console=not detached,
        detached=detached,
        debug=debug or config.debug,
    )


def _exec_monitor(settings: MonitorSettings) -> t.NoReturn:
    """Become the monitor (same pid: systemd's main process), its settings on stdin."""
    from mep.monitor.channel import sealed_memfd

    stdin = sealed_memfd(settings.to_json().encode(), "compute-agent-settings")
    os.dup2(stdin, 0)
    os.close(stdin)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-I", "-m", "mep.monitor"])


def _start_detached(settings: MonitorSettings, directory: Path) -> t.NoReturn:
    """A monitor in a session of its own; wait until it says how the start went."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        with os.fdopen(read_end) as said:
            line = said.readline().strip()
        log_file = directory / "endpoint.log"
        if line.startswith("failed "):
            code = int(line.split()[1])
            _fail(code, f"the endpoint did not start (exit {code}); see {log_file}")
        if not line:
            _fail(70, f"the endpoint did not start; see {log_file}")
        typer.echo(line)
        raise typer.Exit(0)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    logfd = os.open(directory / "endpoint.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(write_end, 1)
    os.dup2(logfd, 2)
    for fd in (null, logfd, write_end):
        os.close(fd)
    _exec_monitor(settings)


def start(
    name: str = typer.Argument(
        ..., help="The endpoint's name (its directory under the config root)."
    ),
    detach: bool = typer.Option(
        False, "--detach", help="Run in the background; logs go to endpoint.log."
    ),
    config_dir: str = typer.Option(
        None, "--config-dir", help="Config root (default /etc/compute-agent as root)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Log at debug level."),
) -> None:
    """Register the endpoint with the compute service and run its manager.

    Prints the endpoint id on stdout. As root the endpoint is two processes: a
    small root monitor (this process, after exec) and the manager, run as the
    unprivileged ``manager_user`` (default compute-agent). In the foreground
    (the systemd unit's way) it runs until SIGTERM, stopping its user endpoints
    with a grace period.
    """
    from templates.manager_config import load_manager_config
    from templates.pidfile import running_pid

    directory = _existing_dir(name, config_dir).absolute()
    os.umask(0o077)
    pid = running_pid(directory)
    if pid:
        _fail(EX_CANTCREAT, f"endpoint {name!r} is already running (pid {pid}); refusing to start")
    try:
        config = load_manager_config(directory / "config.yaml")
        settings = monitor_settings(name, directory, config, detached=detach, debug=debug)
    except ConfigError as e:
        _fail(78, str(e))
    except StartError as e:
        _fail(e.exit_code, str(e))
    if detach:
        _start_detached(settings, directory)
    _exec_monitor(settings)


def _wait_stopped(directory: Path, timeout_s: float) -> bool:
    from templates.pidfile import running_pid

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not running_pid(directory):
            return True
        time.sleep(0.1)
    return not running_pid(directory)


def stop_manager(directory: Path, timeout_s: float = STOP_WAIT_S) -> bool:
    """SIGTERM the manager, wait for it to stop its children, SIGKILL if it hangs."""
    from templates.pidfile import running_pid

    pid = running_pid(directory)
    if not pid or pid < 0:
        return False
    os.kill(pid, signal.SIGTERM)
    if not _wait_stopped(directory, timeout_s):
        log.warning("manager pid %d did not stop in %.0f s; killing it", pid, timeout_s)
        os.kill(pid, signal.SIGKILL)
        _wait_stopped(directory, 5.0)
    return True


def stop(
    name: str = typer.Argument(..., help="The endpoint's name."),
    config_dir: str = typer.Option(None, "--config-dir", help="Config root."),
) -> None:
    """Stop a running manager and, through it, all of its user endpoints."""
    directory = _existing_dir(name, config_dir)
    if not stop_manager(directory):
        typer.echo(f"endpoint {name!r} is not running")
        raise typer.Exit(1)
    typer.echo(f"endpoint {name!r} stopped")


def restart(
    name: str = typer.Argument(..., help="The endpoint's name."),
    detach: bool = typer.Option(
        True, "--detach/--foreground", help="Run the new manager in the background."
    ),
    config_dir: str = typer.Option(None, "--config-dir", help="Config root."),
) -> None:
    """Stop the manager if it runs, then start it again (detached by default)."""
    directory = _existing_dir(name, config_dir)
    stop_manager(directory)
    start(name, detach=detach, config_dir=config_dir, debug=False)


def endpoint_status(directory: Path) -> dict:
    """id, status (running / disconnected / stopped) and live user endpoints of one endpoint."""
    from mep.registration import read_endpoint_id
    from templates.pidfile import running_pid

    try:
        endpoint_id = read_endpoint_id(directory)
    except Exception:
        endpoint_id = None
    info = {
        "name": directory.name,
        "id": str(endpoint_id or "-"),
        "status": "stopped",
        "user_endpoints": 0,
    }
    if not running_pid(directory):
        return info
    try:
        state = json.loads((directory / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    fresh = time.time() - state.get("updated", 0) <= 3 * state.get("heartbeat_period", 30) + 5
    info["status"] = "running" if state.get("connected") and fresh else "disconnected"
    info["user_endpoints"] = int(state.get("user_endpoints", 0))
    return info


def list_endpoints(
    config_dir: str = typer.Option(None, "--config-dir", help="Config root."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List configured endpoints: id, status (running / disconnected / stopped), name, live user endpoints."""
    root = config_root(config_dir)
    rows = [endpoint_status(p.parent) for p in sorted(root.glob("*/config.yaml"))]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    header = f"{'Endpoint ID':<36}  {'Status':<12}  {'User endpoints':>14}  Name"
    typer.echo(header)
    typer.echo("-" * len(header))
    for row in rows:
        typer.echo(
            f"{row['id']:<36}  {row['status']:<12}  {row['user_endpoints']:>14}  {row['name']}"
        )


def delete(
    name: str = typer.Argument(..., help="The endpoint's name."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    force: bool = typer.Option(False, "--force", help="Stop it if running; ignore service errors."),
    config_dir: str = typer.Option(None, "--config-dir", help="Config root."),
) -> None:
    """Delete the endpoint at the service and remove its directory."""
    from templates.pidfile import running_pid

    directory = _existing_dir(name, config_dir)
    if running_pid(directory):
        if not force:
            _fail(1, f"endpoint {name!r} is running; stop it first or pass --force")
        stop_manager(directory)
    if not yes and not typer.confirm(f"Delete endpoint {name!r} and {directory}?", default=False):
        _fail(1, "not deleted")
    try:
        _delete_remote(directory)
    except Exception as e:
        if not force:
            _fail(
                1,
                f"the service did not delete the endpoint ({e}); pass --force to delete locally anyway",
            )
        typer.echo(f"warning: the service did not delete the endpoint: {e}", err=True)
    shutil.rmtree(directory)
    typer.echo(f"endpoint {name!r} deleted")


def _delete_remote(directory: Path) -> None:
    import globus_sdk

    from mep import registration as r
    from templates.manager_config import load_manager_config

    endpoint_id = r.read_endpoint_id(directory)
    if endpoint_id is None:
        return
    config = load_manager_config(directory / "config.yaml")
    client_id, secret = r.client_credentials(os.environ)
    service_url, auth_url = r.resolve_urls(config.service_url, config.auth_url, os.environ)
    auth = globus_sdk.ConfidentialAppAuthClient(client_id, secret, base_url=auth_url)
    authorizer = globus_sdk.ClientCredentialsAuthorizer(auth, r.COMPUTE_SCOPE)
    client = globus_sdk.ComputeClientV2(base_url=service_url, authorizer=authorizer)
    client.delete_endpoint(endpoint_id)


def enable_on_boot(
    name: str = typer.Argument(..., help="The endpoint's name."),
    config_dir: str = typer.Option(None, "--config-dir", help="Config root."),
) -> None:
    """Keep the endpoint running across reboots with systemd (compute-endpoint@NAME).

    Runs systemctl when systemd is the init system, starting the unit now unless
    the manager already runs outside systemd; otherwise prints the commands.
    Client credentials belong in /etc/compute-agent/NAME.env.
    """
    from mep.boot import BootError
    from mep.boot import enable_on_boot as enable
    from templates.pidfile import running_pid

    directory = _existing_dir(name, config_dir)
    try:
        typer.echo(enable(name, start_now=not running_pid(directory)))
    except BootError as e:
        _fail(1, str(e))


def disable_on_boot(
    name: str = typer.Argument(..., help="The endpoint's name."),
) -> None:
    """Stop starting the endpoint at boot (a running manager keeps running)."""
    from mep.boot import BootError
    from mep.boot import disable_on_boot as disable

    try:
        typer.echo(disable(name))
    except BootError as e:
        _fail(1, str(e))


def register(app: typer.Typer) -> None:
    for command, command_name in (
        (start, "start"),
        (stop, "stop"),
        (restart, "restart"),
        (list_endpoints, "list"),
        (delete, "delete"),
        (enable_on_boot, "enable-on-boot"),
        (disable_on_boot, "disable-on-boot"),
    ):
        app.command(command_name, epilog=EXIT_CODES)(command)
