"""`make rpm` builds an RPM that installs a working appliance.

The RPM is built once per session (about half a minute with a warm pip cache)
into a scratch rpmbuild tree and output directory. It is then inspected with
``rpm -qp``, installed into a scratch root with ``rpm --root DIR --nodeps -i``
(scriptlets off: the scratch root has no /bin/sh; they are run on their own
below), and its commands are run from the installed layout: a private mount
namespace puts DIR/opt/compute-agent at /opt/compute-agent, so the shebangs,
pyvenv.cfg and /usr/sbin symlinks are exercised exactly as on a real host.
"""

from __future__ import annotations

import marshal
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = "/opt/compute-agent"
UNIT_DIR = "/usr/lib/systemd/system"
PYVER = "{}.{}".format(*subprocess.run(
    ["/usr/bin/python3", "-c", "import sys; print(*sys.version_info[:2])"],
    capture_output=True, text=True, check=True,
).stdout.split())  # fmt: skip

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="rpm --root and mount namespaces need root"),
    # The session's single RPM build runs inside the first test's setup.
    pytest.mark.timeout(600),
]


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 300)
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{argv}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """(rpm path, rpmbuild top dir) from one `make rpm`."""
    base = tmp_path_factory.mktemp("rpm")
    env = dict(os.environ, RPM_OUT=str(base / "dist"), RPM_TOPDIR=str(base / "top"))
    run("make", "-C", str(REPO), "rpm", env=env, timeout=580)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    (package,) = (base / "dist").glob(f"compute-agent-{version}-*.rpm")
    return package, base / "top"


@pytest.fixture(scope="session")
def package(build) -> Path:
    return build[0]


def install(package: Path, root: Path) -> None:
    run("rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts",
        "-i", str(package))  # fmt: skip


@pytest.fixture(scope="module")
def root(package, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    install(package, root)
    return root


def in_installed_layout(root: Path, command: str) -> subprocess.CompletedProcess:
    """Run ``command`` with ROOT/opt/compute-agent mounted at /opt/compute-agent."""
    script = (
        f"mount -t tmpfs tmpfs /opt && mkdir {VENV} && "
        f"mount --bind {root}{VENV} {VENV} && {command}"
    )
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    return run(
        "unshare", "--mount", "--propagation", "private", "sh", "-c", script, env=env, cwd="/"
    )


def test_rpm_lists_every_path(package):
    listed = set(run("rpm", "-qpl", str(package)).stdout.splitlines())
    expected = {
        f"{VENV}/bin/python",
        f"{VENV}/bin/compute-endpoint",
        f"{VENV}/bin/compute-service",
        f"{VENV}/pyvenv.cfg",
        f"{VENV}/lib/python{PYVER}/site-packages/mep/cli.py",
        f"{VENV}/lib/python{PYVER}/site-packages/parsl/__init__.py",
        "/usr/sbin/compute-endpoint",
        "/usr/sbin/compute-service",
        f"{UNIT_DIR}/compute-endpoint@.service",
        f"{UNIT_DIR}/compute-agent.slice",
        "/etc/compute-agent",
        "/etc/compute-agent/example.env",
        "/var/log/compute-agent",
    }
    assert expected <= listed, sorted(expected - listed)
    # Nothing outside the appliance's own places.
    prefixes = (VENV, "/usr/sbin/compute-", f"{UNIT_DIR}/compute-", "/etc/compute-agent",
                "/var/log/compute-agent")  # fmt: skip
    assert [p for p in listed if not p.startswith(prefixes)] == []


def test_rpm_metadata_and_config_flags(package):
    info = run("rpm", "-qp", "--qf", "%{NAME} %{VERSION}", str(package)).stdout
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert info == f"compute-agent {version}"
    requires = run("rpm", "-qpR", str(package)).stdout.split("\n")
    assert f"/usr/bin/python{PYVER}" in requires
    assert not [r for r in requires if ".so" in r], "bundled libraries leaked into Requires"
    flags = dict(
        line.rsplit(" ", 1)
        for line in run("rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]",
                        str(package)).stdout.splitlines()
    )  # fmt: skip
    assert flags["/etc/compute-agent/example.env"] == "cn"  # %config(noreplace)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_scratch_root_file_modes(root):
    assert (root / "var/lib/rpm").is_dir(), "the scratch root has its own rpm database"
    run("rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-q", "compute-agent")
    etc = root / "etc/compute-agent"
    assert etc.is_dir() and mode(etc) == 0o700
    env_file = etc / "example.env"
    assert env_file.is_file() and mode(env_file) == 0o600
    assert "GLOBUS_COMPUTE_CLIENT_SECRET" in env_file.read_text()
    log_dir = root / "var/log/compute-agent"
    assert log_dir.is_dir() and mode(log_dir) == 0o750
    for name in ("compute-endpoint@.service", "compute-agent.slice"):
        unit = root / UNIT_DIR.lstrip("/") / name
        assert mode(unit) == 0o644
        assert unit.read_bytes() == (REPO / "systemd" / name).read_bytes()
    for name in ("compute-endpoint", "compute-service"):
        link = root / "usr/sbin" / name
        assert link.is_symlink()
        assert os.readlink(link) == f"../..{VENV}/bin/{name}"
        assert link.resolve() == root / VENV.lstrip("/") / "bin" / name


def test_venv_is_readable_by_every_user_and_writable_by_none(root):
    """User endpoints run as unprivileged accounts and exec this interpreter."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root / VENV.lstrip("/")):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            m = mode(path)
            need = 0o005 if path.is_dir() else 0o004
            if m & need != need or m & 0o022 or path.lstat().st_uid != 0:
                bad.append(f"{oct(m)} {path}")
    assert bad == []


def test_venv_is_relocated_to_its_final_path(root, build):
    venv = root / VENV.lstrip("/")
    assert (venv / "bin/compute-endpoint").read_text().splitlines()[0] == f"#!{VENV}/bin/python"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert f"-m venv {VENV}\n" in cfg and "home = /usr/bin\n" in cfg
    assert os.readlink(venv / f"bin/python{PYVER}") == f"/usr/bin/python{PYVER}"
    leftovers = subprocess.run(
        ["grep", "-rlF", str(build[1]), str(venv)], capture_output=True, text=True
    )
    assert leftovers.stdout == "", "files still naming the rpmbuild tree"
    pyc = venv / f"lib/python{PYVER}/site-packages/mep/__pycache__"
    (compiled,) = pyc.glob("cli.cpython-*.pyc")
    code = marshal.loads(compiled.read_bytes()[16:])
    assert code.co_filename == f"{VENV}/lib/python{PYVER}/site-packages/mep/cli.py"


def test_help_runs_from_the_scratch_root(root):
    """The task's literal form: the scratch root's interpreter on its console script."""
    venv = root / VENV.lstrip("/")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    result = run(str(venv / "bin/python"), str(venv / "bin/compute-endpoint"), "--help", env=env)
    assert "Usage: compute-endpoint" in result.stdout


def test_commands_run_from_the_installed_layout(root):
    sbin = root / "usr/sbin"
    endpoint = in_installed_layout(root, f"{sbin}/compute-endpoint --help")
    assert "Usage: compute-endpoint" in endpoint.stdout
    assert "start" in endpoint.stdout
    service = in_installed_layout(root, f"{sbin}/compute-service --help")
    assert "Usage: compute-service" in service.stdout
    version = in_installed_layout(root, f"{sbin}/compute-endpoint version")
    assert "compute-agent " in version.stdout and "(not installed)" not in version.stdout
    where = in_installed_layout(
        root, f"{VENV}/bin/python -c 'import mep, sys; print(sys.prefix, mep.__file__)'"
    )
    assert where.stdout.split() == [VENV, f"{VENV}/lib/python{PYVER}/site-packages/mep/__init__.py"]


def test_installed_unit_verifies_against_the_packaged_binary(root, tmp_path):
    unit = (root / UNIT_DIR.lstrip("/") / "compute-endpoint@.service").read_text()
    binary = root / "usr/sbin/compute-endpoint"
    (tmp_path / "compute-endpoint@.service").write_text(
        unit.replace("/usr/sbin/compute-endpoint", str(binary))
    )
    shutil.copy(root / UNIT_DIR.lstrip("/") / "compute-agent.slice", tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify",
         f"{tmp_path}/compute-endpoint@.service:compute-endpoint@demo.service"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_erase_leaves_nothing_behind(package, tmp_path):
    """Running the commands as root must not create files rpm does not own (e.g. .pyc)."""
    root = tmp_path / "root"
    install(package, root)
    in_installed_layout(root, f"{root}/usr/sbin/compute-endpoint version")
    in_installed_layout(root, f"{VENV}/bin/python -c 'import parsl, fastapi, sqlalchemy, service'")
    run("rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts",
        "-e", "compute-agent")  # fmt: skip
    left = [str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()]
    assert [p for p in left if not p.startswith("var/lib/rpm")] == []
    assert not (root / VENV.lstrip("/")).exists()


# --- scriptlets ---------------------------------------------------------------

SCRIPTLETS = {"pre": "%{PREIN}", "post": "%{POSTIN}", "preun": "%{PREUN}", "postun": "%{POSTUN}"}


@pytest.fixture(scope="session")
def scriptlets(package) -> dict[str, str]:
    return {k: run("rpm", "-qp", "--qf", q, str(package)).stdout for k, q in SCRIPTLETS.items()}


def run_scriptlet(text: str, arg: int, path: Path, log: Path | None = None) -> list[str]:
    """Run one scriptlet as rpm would (/bin/sh, $1 = ARG); the systemctl calls it made."""
    result = subprocess.run(["/bin/sh", "-s", str(arg)], input=text, capture_output=True,
                            text=True, timeout=30, env={"PATH": str(path)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines() if log and log.exists() else []


@pytest.fixture(params=[0, 1], ids=["systemctl-ok", "systemctl-fails"])
def fake_systemctl(request, tmp_path):
    """A systemctl that records its arguments and exits as told (1: systemd is not PID 1)."""
    bindir, log = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    tool = bindir / "systemctl"
    tool.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexit {request.param}\n')
    tool.chmod(0o755)
    return bindir, log


@pytest.mark.parametrize("exists", [False, True], ids=["new", "present"])
def test_pre_creates_the_managers_account_once(scriptlets, tmp_path, exists):
    """The manager's unprivileged account: a system account, no login, no home of its own."""
    bindir, log = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    for tool, code in (("getent", 0 if exists else 2), ("useradd", 0)):
        (bindir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexit {code}\n')
        (bindir / tool).chmod(0o755)
    calls = run_scriptlet(scriptlets["pre"], 1, bindir, log)
    assert calls[0] == "getent passwd compute-agent"
    if exists:
        assert calls == ["getent passwd compute-agent"]
    else:
        [useradd] = calls[1:]
        assert useradd.startswith("useradd --system") and useradd.endswith(" compute-agent")
        assert "--no-create-home" in useradd and "nologin" in useradd


def test_first_install_presets_the_units(scriptlets, fake_systemctl):
    bindir, log = fake_systemctl
    calls = run_scriptlet(scriptlets["post"], 1, bindir, log)
    assert calls == ["--no-reload preset compute-endpoint@.service compute-agent.slice"]


def test_upgrade_restarts_running_instances_and_keeps_enablement(scriptlets, fake_systemctl):
    bindir, log = fake_systemctl
    assert run_scriptlet(scriptlets["post"], 2, bindir, log) == []
    assert run_scriptlet(scriptlets["preun"], 1, bindir, log) == []
    calls = run_scriptlet(scriptlets["postun"], 1, bindir, log)
    assert calls[0] == "daemon-reload"
    assert "try-restart compute-endpoint@*.service" in calls


def test_erase_disables_and_stops_every_instance(scriptlets, fake_systemctl):
    bindir, log = fake_systemctl
    calls = run_scriptlet(scriptlets["preun"], 0, bindir, log)
    assert calls == [
        "--no-reload disable --now compute-endpoint@.service",
        "stop compute-endpoint@*.service",
    ]
    log.unlink()
    assert run_scriptlet(scriptlets["postun"], 0, bindir, log) == ["daemon-reload"]


@pytest.mark.parametrize("name,arg", [("post", 1), ("preun", 0), ("postun", 0), ("postun", 1)])
def test_scriptlets_succeed_without_systemctl(scriptlets, tmp_path, name, arg):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_scriptlet(scriptlets[name], arg, empty) == []
