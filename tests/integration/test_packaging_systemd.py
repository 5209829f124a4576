"""The shipped unit and slice pass ``systemd-analyze verify``.

verify works without systemd as PID 1 but insists that ExecStart= names an
existing executable. /usr/sbin/compute-endpoint exists only once the RPM is
installed, so the unit is verified as a copy whose ExecStart= path is rewritten
to this environment's real ``compute-endpoint`` (nothing else changes); the
RPM test verifies the installed copy against the packaged binary the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
PACKAGED_BINARY = "/usr/sbin/compute-endpoint"


def instantiate(unit_dir: Path, binary: Path, extra: str = "") -> str:
    """Copy unit and slice into ``unit_dir`` with ExecStart= on ``binary``; the verify argument."""
    text = (SYSTEMD / "compute-endpoint@.service").read_text()
    assert f"ExecStart={PACKAGED_BINARY} start %i" in text
    text = text.replace(PACKAGED_BINARY, str(binary)).replace("[Service]\n", f"[Service]\n{extra}")
    (unit_dir / "compute-endpoint@.service").write_text(text)
    shutil.copy(SYSTEMD / "compute-agent.slice", unit_dir)
    return f"{unit_dir}/compute-endpoint@.service:compute-endpoint@demo.service"


def verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def binary() -> Path:
    path = Path(sys.executable).parent / "compute-endpoint"
    assert path.is_file(), f"{path} missing: run `make install` to put the console script there"
    return path


def test_unit_instance_verifies_cleanly(tmp_path, binary):
    result = verify(instantiate(tmp_path, binary))
    # verify only warns (exit 0) about unknown keys or bad values: demand silence.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_slice_verifies_cleanly():
    result = verify(str(SYSTEMD / "compute-agent.slice"))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_would_catch_a_bad_option(tmp_path, binary):
    """The check above has teeth: a misspelt key or a bad value is reported."""
    result = verify(instantiate(tmp_path, binary, extra="KillMod=mixed\nRestart=sometimes\n"))
    output = result.stdout + result.stderr
    assert "Unknown key 'KillMod'" in output
    assert "sometimes" in output


def test_verify_would_catch_a_missing_binary(tmp_path):
    result = verify(instantiate(tmp_path, tmp_path / "no-such-compute-endpoint"))
    assert result.returncode != 0
    assert "no-such-compute-endpoint" in result.stdout + result.stderr
