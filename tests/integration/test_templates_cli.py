"""``configure`` and ``render-user-config`` through the real CLI, with real local users."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.accounts import admin_command

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("wire", "identity", "templates", "mep", "uep", "service")
EMAIL = "hpc-help@example.org"

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (modes, local users)")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def local_user():
    """A real local account with a home directory; deleted (with its home) afterwards."""
    name = f"ca-tpl-{secrets.token_hex(4)}"
    admin_command("useradd", "-m", "-s", "/bin/sh", "-c", "Template Test", name)
    try:
        yield pwd.getpwnam(name)
    finally:
        admin_command("userdel", "-r", name)
        with pytest.raises(KeyError):
            pwd.getpwnam(name)


@pytest.fixture
def base(tmp_path):
    return tmp_path / "endpoints"


# ---- configure -----------------------------------------------------------------------


@root_only
@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_configure_multi_user_writes_files_with_exact_modes(endpoint_cli, base, umask):
    done = endpoint_cli(
        "configure",
        "gpu-ep",
        "--contact-email",
        EMAIL,
        "--display-name",
        "GPU login",
        "--config-dir",
        str(base),
        preexec_fn=lambda: os.umask(umask),
    )
    assert done.returncode == 0, done.stderr
    directory = base / "gpu-ep"
    assert mode(directory) == 0o700
    assert {p.name: mode(p) for p in directory.iterdir()} == {
        "config.yaml": 0o600,
        "user_config_template.yaml.j2": 0o644,
        "user_config_schema.json": 0o600,
        "user_environment.yaml": 0o600,
        "example_identity_mapping_config.json": 0o600,
    }
    assert "multi-user endpoint 'gpu-ep'" in done.stdout
    assert "compute-endpoint start gpu-ep" in done.stdout
    assert "render-user-config -e gpu-ep" in done.stdout
    config = yaml.safe_load((directory / "config.yaml").read_text())
    assert config == {
        "display_name": "GPU login",
        "email": EMAIL,
        "identity_mapping_config_path": str(directory / "example_identity_mapping_config.json"),
        "public": True,
    }


@root_only
def test_configure_as_root_needs_an_email(endpoint_cli, base):
    done = endpoint_cli("configure", "ep", "--config-dir", str(base))
    assert done.returncode == 2
    assert "Email must be specified" in done.stderr
    assert not (base / "ep").exists()


def test_configure_single_user(endpoint_cli, base):
    done = endpoint_cli("configure", "solo", "--single-user", "--config-dir", str(base))
    assert done.returncode == 0, done.stderr
    directory = base / "solo"
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.yaml",
        "user_config_schema.json",
        "user_config_template.yaml.j2",
        "user_environment.yaml",
    ]
    assert mode(directory / "user_config_template.yaml.j2") == 0o600
    assert "single-user endpoint" in done.stdout


def test_configure_copies_a_given_mapping_and_sets_high_assurance(endpoint_cli, base, tmp_path):
    mapping = [{"DATA_TYPE": "expression_identity_mapping#1.0.0", "mappings": []}]
    source = tmp_path / "map.json"
    source.write_text(json.dumps(mapping))
    done = endpoint_cli(
        "configure",
        "ha",
        "--multi-user",
        "--contact-email",
        EMAIL,
        "--high-assurance",
        "--id-mapping-config",
        str(source),
        "--config-dir",
        str(base),
    )
    assert done.returncode == 0, done.stderr
    directory = base / "ha"
    copied = directory / "identity_mapping_config.json"
    assert json.loads(copied.read_text()) == mapping and mode(copied) == 0o600
    assert not (directory / "example_identity_mapping_config.json").exists()
    config = yaml.safe_load((directory / "config.yaml").read_text())
    assert config["high_assurance"] is True
    assert config["audit_log_path"] == str(directory / "audit.log")
    assert config["identity_mapping_config_path"] == str(copied)


def test_configure_refuses_a_mapping_without_multi_user(endpoint_cli, base, tmp_path):
    source = tmp_path / "map.json"
    source.write_text("[]")
    done = endpoint_cli(
        "configure",
        "x",
        "--single-user",
        "--id-mapping-config",
        str(source),
        "--config-dir",
        str(base),
    )
    assert done.returncode == 2 and "needs a multi-user endpoint" in done.stderr
    assert not (base / "x").exists()


def test_configure_refuses_an_existing_directory_and_leaves_it_alone(endpoint_cli, base):
    (base / "taken").mkdir(parents=True)
    (base / "taken" / "config.yaml").write_text("display_name: mine\n")
    done = endpoint_cli("configure", "taken", "--single-user", "--config-dir", str(base))
    assert done.returncode == 2 and "already exists" in done.stderr
    assert (base / "taken" / "config.yaml").read_text() == "display_name: mine\n"


@pytest.mark.parametrize(
    "name", ["../escape", ".hidden", "a b", "11111111-2222-4333-8444-555555555555", "x" * 129]
)
def test_configure_refuses_unsafe_names(endpoint_cli, base, name):
    done = endpoint_cli("configure", name, "--single-user", "--config-dir", str(base))
    assert done.returncode == 2 and "invalid endpoint name" in done.stderr
    assert not base.exists() or list(base.iterdir()) == []


def test_configure_honours_compute_agent_dir(endpoint_cli, base):
    env = {**os.environ, "COMPUTE_AGENT_DIR": str(base)}
    done = endpoint_cli("configure", "viaenv", "--single-user", env=env)
    assert done.returncode == 0, done.stderr
    assert (base / "viaenv" / "config.yaml").is_file()


@pytest.fixture
def readable_checkout():
    """A world-readable copy of the packages, for running the CLI as another account."""
    where = Path(tempfile.mkdtemp(prefix="ca-tpl-src-", dir="/tmp"))
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, where / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(["chmod", "-R", "a+rX", str(where)], check=True)
    try:
        yield where
    finally:
        shutil.rmtree(where)


@root_only
def test_configure_as_a_regular_user_defaults_to_home(local_user, readable_checkout):
    env = {"PATH": "/usr/bin:/bin", "HOME": local_user.pw_dir, "PYTHONPATH": str(readable_checkout)}
    done = subprocess.run(
        [sys.executable, "-m", "mep.cli", "configure", "mine"],
        env=env,
        cwd=local_user.pw_dir,
        user=local_user.pw_uid,
        group=local_user.pw_gid,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    directory = Path(local_user.pw_dir) / ".compute_agent" / "mine"
    assert "single-user endpoint" in done.stdout
    assert directory.stat().st_uid == local_user.pw_uid and mode(directory) == 0o700
    assert mode(directory.parent) == 0o700
    assert not (directory / "example_identity_mapping_config.json").exists()


# ---- render-user-config --------------------------------------------------------------


@pytest.fixture
def endpoint(endpoint_cli, base):
    done = endpoint_cli("configure", "site", "--single-user", "--config-dir", str(base))
    assert done.returncode == 0, done.stderr
    return base / "site"


def render(endpoint_cli, base, *args, **kw):
    return endpoint_cli("render-user-config", "--config-dir", str(base), *args, **kw)


def test_render_the_default_template_from_an_endpoint(endpoint_cli, base, endpoint, tmp_path):
    options = tmp_path / "opts.json"
    options.write_text(json.dumps({"worker_init": "module load x\nhigh_assurance: true"}))
    done = render(endpoint_cli, base, "-e", "site", "-o", str(options))
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert rendered["engine"]["provider"] == {
        "type": "LocalProvider",
        "init_blocks": 1,
        "min_blocks": 0,
        "max_blocks": 1,
        "worker_init": "module load x\nhigh_assurance: true",
    }
    assert "high_assurance" not in rendered


def test_render_refusal_goes_to_stderr_with_exit_1(endpoint_cli, base, endpoint):
    done = render(endpoint_cli, base, "-e", "site", "-o", "-", input='{"worker_init": 5}')
    assert done.returncode == 1
    assert done.stdout == ""
    assert "user_endpoint_config.worker_init: 5 is not of type 'string'" in done.stderr


@root_only
def test_render_for_a_local_user_with_schema_and_runtime(endpoint_cli, base, tmp_path, local_user):
    template = tmp_path / "t.yaml.j2"
    template.write_text(
        "engine:\n  type: ThreadPoolEngine\n"
        "display_name: {{ _GC.mapped_identity.local.uname }}\n"
        'endpoint_setup: "cd {{ _GC.mapped_identity.local.dir }} && echo {{ _GC.mapped_identity.local.uid }}"\n'
        "endpoint_teardown: {{ _GC.user_runtime.python.version }}\n"
        "paths: {endpoint_dir: {{ scratch }}}\n"
    )
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"properties": {"scratch": {"type": "string", "pattern": "^/"}}}))
    runtime = tmp_path / "runtime.json"
    runtime.write_text(json.dumps({"python": {"version": "3.13.1"}}))
    args = ("-t", str(template), "-s", str(schema), "--user", local_user.pw_name)
    done = render(
        endpoint_cli,
        base,
        *args,
        "--user-runtime",
        str(runtime),
        "-o",
        "-",
        input='{"scratch": "/scratch/x"}',
    )
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert rendered["display_name"] == local_user.pw_name
    assert rendered["endpoint_setup"] == f"cd {local_user.pw_dir} && echo {local_user.pw_uid}"
    assert rendered["endpoint_teardown"] == "3.13.1"
    assert rendered["paths"] == {"endpoint_dir": "/scratch/x"}
    bad = render(endpoint_cli, base, *args, "-o", "-", input='{"scratch": "relative"}')
    assert bad.returncode == 1
    assert "user_endpoint_config.scratch: 'relative' does not match '^/'" in bad.stderr


def test_render_reports_a_missing_option(endpoint_cli, base, tmp_path):
    template = tmp_path / "t.j2"
    template.write_text("engine: {type: ThreadPoolEngine}\ndisplay_name: {{ account }}\n")
    done = render(endpoint_cli, base, "-t", str(template), "-o", "-", input="{}")
    assert done.returncode == 1
    assert "template needs option 'account', which was not given" in done.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        (("-o", "-"), "{}", "exactly one of -e ENDPOINT or -t TEMPLATE"),
        (("-e", "site", "-t", "x", "-o", "-"), "{}", "exactly one of"),
        (("-e", "nosuch", "-o", "-"), "{}", "no endpoint directory"),
        (("-e", "site", "-o", "-"), "{not json", "not valid JSON"),
        (("-e", "site", "-o", "/nonexistent.json"), "", "cannot read the user options"),
        (("-e", "site", "-o", "-", "--user", "no-such-user-xyz"), "{}", "no local user"),
        (("-e", "../etc", "-o", "-"), "{}", "invalid endpoint name"),
        (("-e", "site", "-o", "-"), '{"a": ' * 2000 + "1" + "}" * 2000, "nest too deeply"),
    ],
)
def test_render_usage_errors_exit_2(endpoint_cli, base, endpoint, args, stdin, fragment):
    done = render(endpoint_cli, base, *args, input=stdin)
    assert done.returncode == 2, done
    assert fragment in done.stderr
