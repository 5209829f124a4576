"""The shipped unit and slice say what the appliance needs, and nothing that breaks jobs.

systemd-analyze checks the syntax (tests/integration/test_packaging_systemd.py);
these tests check the decisions: how the manager is started and stopped, where
its credentials come from, which slice it lands in, and that no hardening
option that would break users' jobs creeps in without its comment changing too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "compute-endpoint@.service"
SLICE = SYSTEMD / "compute-agent.slice"

# Options each of which breaks something users' jobs do (see the unit's comments).
FORBIDDEN = (
    "ProtectControlGroups",
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "DevicePolicy",
    "DeviceAllow",
    "ProtectClock",
    "ProtectKernelTunables",
    "ProtectKernelLogs",
    "ProtectProc",
    "ProcSubset",
    "ProtectHostname",
    "PrivateNetwork",
    "IPAddressDeny",
    "RestrictAddressFamilies",
    "PrivateUsers",
    "RestrictNamespaces",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "SystemCallFilter",
    "SystemCallArchitectures",
    "MemoryDenyWriteExecute",
    "LockPersonality",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "PrivateIPC",
    "OOMScoreAdjust",
    "Nice",
    "CPUSchedulingPolicy",
    "IOSchedulingClass",
    "User",
)


def parse(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values, in the unit-file syntax (repeated keys accumulate)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path.name}: {line!r} outside a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit():
    return parse(UNIT)


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key, [])
    assert len(values) == 1, f"{key}: expected one value, got {values}"
    return values[0]


def test_manager_runs_in_the_foreground_for_the_instance_name(unit):
    service = unit["Service"]
    assert one(service, "ExecStart") == "/usr/sbin/compute-endpoint start %i"
    assert one(service, "Type") == "exec"
    assert "ExecStop" not in service, "SIGTERM is the stop request; ExecStop would race it"


def test_credentials_come_from_an_optional_root_only_env_file(unit):
    assert one(unit["Service"], "EnvironmentFile") == "-/etc/compute-agent/%i.env"
    assert "Environment" not in unit["Service"], "secrets never go in the unit itself"


def test_stop_lets_the_manager_stop_its_children_first(unit):
    from mep import lifecycle  # here, so only this test depends on the CLI module

    service = unit["Service"]
    assert one(service, "KillMode") == "mixed"
    assert one(service, "KillSignal") == "SIGTERM"
    # systemd must be at least as patient as our own `stop` command.
    assert int(one(service, "TimeoutStopSec")) > lifecycle.STOP_WAIT_S


def test_restarts_are_rate_limited_and_skip_admin_errors(unit):
    assert one(unit["Service"], "Restart") == "on-failure"
    assert int(one(unit["Service"], "RestartSec")) >= 1
    assert int(one(unit["Unit"], "StartLimitBurst")) >= 1
    assert int(one(unit["Unit"], "StartLimitIntervalSec")) > 0
    prevented = set(one(unit["Service"], "RestartPreventExitStatus").split())
    # Wrong name/config and refused credentials: retrying cannot help.
    assert {"2", "77", "78"} <= prevented
    # Service unavailable/unreachable is transient and must be retried.
    assert not {"69", "75"} & prevented


def test_every_user_endpoint_is_accounted_to_the_shipped_slice(unit):
    assert one(unit["Service"], "Slice") == SLICE.name
    slice_ = parse(SLICE)
    for key in ("CPUAccounting", "MemoryAccounting", "TasksAccounting"):
        assert one(slice_["Slice"], key) == "yes"


def test_starts_after_network_home_directories_and_user_lookup(unit):
    after = " ".join(unit["Unit"]["After"]).split()
    assert {"network-online.target", "remote-fs.target", "nss-user-lookup.target"} <= set(after)
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_hardening_used_is_explained(unit):
    used = {"UMask", "ProtectKernelModules", "Delegate"}
    assert used <= unit["Service"].keys()
    text = UNIT.read_text()
    for key in used:
        before = text[: text.index(f"\n{key}=")]
        assert before.rstrip().splitlines()[-1].startswith("#"), f"{key} has no comment"


@pytest.mark.parametrize("option", FORBIDDEN)
def test_options_that_break_jobs_are_absent_but_discussed(unit, option):
    for section in unit.values():
        assert option not in section, f"{option} would break users' jobs"
    if option != "User":
        comments = "\n".join(
            line for line in UNIT.read_text().splitlines() if line.lstrip().startswith("#")
        )
        assert re.search(rf"\b{option}=", comments), f"say why {option} is not used"
