"""Boot persistence: what ``enable-on-boot`` / ``disable-on-boot`` do for endpoint NAME.

The package installs one template unit, ``compute-endpoint@.service``, so an
endpoint is kept running by enabling the instance ``compute-endpoint@NAME``;
no per-endpoint unit file is written (unlike upstream, which writes one and
leaves the admin to run systemctl). The decision is pure (``plan_enable`` /
``plan_disable``: name and observed facts in, commands and notes out); ``apply``
runs the commands when systemd is the init system and otherwise returns them
for the admin to run, e.g. from a container image build or a chroot.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import typing as t
from dataclasses import dataclass
from pathlib import Path

from templates.errors import ConfigError as BadName
from templates.paths import check_endpoint_name as check_name

TEMPLATE = "compute-endpoint@.service"
SLICE = "compute-agent.slice"
ENV_DIR = Path("/etc/compute-agent")
# Where systemd looks for system units, admin overrides first.
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/usr/local/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
    Path("/lib/systemd/system"),
)
# sd_booted(3): this directory exists iff systemd is PID 1.
SYSTEMD_RUNTIME = Path("/run/systemd/system")
# Characters systemd takes literally in a unit name, so %i in the unit is NAME.
_UNIT_SAFE = re.compile(r"[A-Za-z0-9._-]+")


class BootError(ValueError):
    """Enabling or disabling cannot proceed; the message says why and what to do."""


@dataclass(frozen=True)
class Facts:
    """What the host looks like, observed once at the edge."""

    systemd_running: bool
    template_path: Path | None
    env_file_exists: bool


@dataclass(frozen=True)
class Plan:
    """The systemctl commands for one request, and whether to run or print them."""

    unit: str
    commands: tuple[tuple[str, ...], ...]
    run: bool
    notes: tuple[str, ...] = ()


def unit_name(endpoint: str) -> str:
    """The instance unit of the template for ``endpoint``; refuses names systemd would mangle."""
    try:
        check_name(endpoint)
    except BadName as exc:
        raise BootError(str(exc)) from None
    if not _UNIT_SAFE.fullmatch(endpoint):
        raise BootError(f"invalid endpoint name {endpoint!r}: use A-Z a-z 0-9 . _ - only")
    return f"compute-endpoint@{endpoint}.service"


def env_file(endpoint: str) -> Path:
    """The credentials file the unit reads (EnvironmentFile=)."""
    unit_name(endpoint)
    return ENV_DIR / f"{endpoint}.env"


def plan_enable(endpoint: str, facts: Facts, *, start_now: bool) -> Plan:
    """Enable the instance at boot; with ``start_now`` also start it under systemd now.

    ``start_now`` must be False while the endpoint runs outside systemd: a second
    manager for the same endpoint would refuse to start (exit 73).
    """
    unit = unit_name(endpoint)
    if facts.template_path is None:
        raise BootError(
            f"{TEMPLATE} is not installed in any of {', '.join(map(str, UNIT_DIRS))}. "
            "Install the compute-agent RPM, or copy systemd/compute-endpoint@.service and "
            "systemd/compute-agent.slice from the source into /etc/systemd/system (with "
            "ExecStart= pointing at your compute-endpoint) and run `systemctl daemon-reload`."
        )
    enable = ("systemctl", "enable", "--now", unit) if start_now else ("systemctl", "enable", unit)
    notes = []
    if not facts.env_file_exists:
        notes.append(
            f"{env_file(endpoint)} does not exist: the manager needs GLOBUS_COMPUTE_CLIENT_ID "
            f"and GLOBUS_COMPUTE_CLIENT_SECRET there (start from {ENV_DIR / 'example.env'}, "
            "mode 0600)."
        )
    if not start_now:
        notes.append(
            f"{unit} starts at the next boot; to move a running endpoint under systemd now: "
            f"compute-endpoint stop {endpoint} && systemctl start {unit}"
        )
    return Plan(unit, (("systemctl", "daemon-reload"), enable), facts.systemd_running, tuple(notes))


def plan_disable(endpoint: str, facts: Facts) -> Plan:
    """Stop starting the instance at boot; a running instance keeps running."""
    unit = unit_name(endpoint)
    notes = (f"{unit} keeps running until stopped: systemctl stop {unit}",)
    return Plan(unit, (("systemctl", "disable", unit),), facts.systemd_running, notes)


def render(plan: Plan) -> str:
    """The plan as shell lines an admin can paste."""
    return "\n".join(shlex.join(command) for command in plan.commands)


def observe(endpoint: str) -> Facts:
    """Look at this host: is systemd PID 1, is the template installed, is there an env file."""
    template = next((d / TEMPLATE for d in UNIT_DIRS if (d / TEMPLATE).is_file()), None)
    return Facts(SYSTEMD_RUNTIME.is_dir(), template, env_file(endpoint).is_file())


Runner = t.Callable[..., subprocess.CompletedProcess]


def apply(plan: Plan, run: Runner = subprocess.run) -> str:
    """Run the plan's commands (or, without systemd, describe them); return text for the admin.

    Stops at the first failing command and raises BootError with systemctl's own words.
    """
    if not plan.run:
        lines = ["systemd is not running on this host; run these where it is:", render(plan)]
        return "\n".join([*lines, *plan.notes])
    done = []
    for command in plan.commands:
        result = run(list(command), capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise BootError(f"`{shlex.join(command)}` failed ({result.returncode}): {detail}")
        done.append(shlex.join(command))
    return "\n".join([*done, *plan.notes])


def enable_on_boot(endpoint: str, *, start_now: bool, run: Runner = subprocess.run) -> str:
    """The whole of ``enable-on-boot``: observe, decide, act. Raises BootError."""
    return apply(plan_enable(endpoint, observe(endpoint), start_now=start_now), run)


def disable_on_boot(endpoint: str, *, run: Runner = subprocess.run) -> str:
    """The whole of ``disable-on-boot``: observe, decide, act. Raises BootError."""
    return apply(plan_disable(endpoint, observe(endpoint)), run)
