"""mep/boot.py: the enable-on-boot / disable-on-boot decisions and their edge.

The plans are pure; ``apply`` is exercised with a recording runner standing in
for systemctl (this machine has no systemd as PID 1).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mep import boot

INSTALLED = boot.Facts(
    systemd_running=True,
    template_path=Path("/usr/lib/systemd/system/compute-endpoint@.service"),
    env_file_exists=True,
)


class Recorder:
    """Records commands; fails the ones listed in ``fail`` like systemctl would."""

    def __init__(self, fail: tuple[str, ...] = ()):
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        bad = any(word in argv for word in self.fail)
        return subprocess.CompletedProcess(
            argv, 1 if bad else 0, "", "Failed to enable unit: Access denied" if bad else ""
        )


def test_unit_name_is_the_template_instance():
    assert boot.unit_name("demo") == "compute-endpoint@demo.service"
    assert boot.unit_name("site_ep-1.login") == "compute-endpoint@site_ep-1.login.service"
    assert boot.env_file("demo") == Path("/etc/compute-agent/demo.env")


@pytest.mark.parametrize(
    "name",
    ["", ".hidden", "../etc", "a/b", "a b", "a\n", "x%i", "$(id)", "a" * 129,
     "12345678-1234-1234-1234-123456789abc"],
)  # fmt: skip
def test_names_systemd_or_the_filesystem_would_mangle_are_refused(name):
    with pytest.raises(boot.BootError, match="invalid endpoint name"):
        boot.plan_enable(name, INSTALLED, start_now=False)
    with pytest.raises(boot.BootError, match="invalid endpoint name"):
        boot.plan_disable(name, INSTALLED)


def test_enable_reloads_then_enables_the_instance():
    plan = boot.plan_enable("demo", INSTALLED, start_now=False)
    assert plan.run
    assert plan.commands == (
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "compute-endpoint@demo.service"),
    )
    assert any("compute-endpoint stop demo && systemctl start" in n for n in plan.notes)


def test_enable_now_starts_it_too():
    plan = boot.plan_enable("demo", INSTALLED, start_now=True)
    assert plan.commands[-1] == ("systemctl", "enable", "--now", "compute-endpoint@demo.service")
    assert plan.notes == ()


def test_enable_without_the_template_says_how_to_install_it():
    facts = boot.Facts(systemd_running=True, template_path=None, env_file_exists=True)
    with pytest.raises(boot.BootError, match=r"compute-endpoint@\.service is not installed"):
        boot.plan_enable("demo", facts, start_now=False)


def test_enable_without_credentials_file_warns_with_its_path():
    facts = boot.Facts(True, INSTALLED.template_path, env_file_exists=False)
    plan = boot.plan_enable("demo", facts, start_now=True)
    assert any("/etc/compute-agent/demo.env does not exist" in n for n in plan.notes)


def test_disable_only_disables():
    plan = boot.plan_disable("demo", INSTALLED)
    assert plan.commands == (("systemctl", "disable", "compute-endpoint@demo.service"),)
    assert "systemctl stop compute-endpoint@demo.service" in plan.notes[0]


def test_apply_runs_every_command_when_systemd_runs():
    runner = Recorder()
    text = boot.apply(boot.plan_enable("demo", INSTALLED, start_now=True), runner)
    assert runner.calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "compute-endpoint@demo.service"],
    ]
    assert "systemctl enable --now compute-endpoint@demo.service" in text


def test_apply_stops_at_the_first_failure_with_systemctls_words():
    runner = Recorder(fail=("daemon-reload",))
    with pytest.raises(boot.BootError, match=r"daemon-reload` failed \(1\): .*Access denied"):
        boot.apply(boot.plan_enable("demo", INSTALLED, start_now=False), runner)
    assert runner.calls == [["systemctl", "daemon-reload"]]


def test_apply_without_systemd_prints_the_exact_commands_and_runs_nothing():
    facts = boot.Facts(False, INSTALLED.template_path, env_file_exists=True)
    runner = Recorder()
    text = boot.apply(boot.plan_disable("demo", facts), runner)
    assert runner.calls == []
    assert "systemd is not running" in text
    assert "systemctl disable compute-endpoint@demo.service" in text.splitlines()


def test_observe_on_this_host_matches_the_filesystem():
    facts = boot.observe("demo")
    assert facts.systemd_running == Path("/run/systemd/system").is_dir()
    expected = [d / boot.TEMPLATE for d in boot.UNIT_DIRS if (d / boot.TEMPLATE).is_file()]
    assert facts.template_path == (expected[0] if expected else None)
