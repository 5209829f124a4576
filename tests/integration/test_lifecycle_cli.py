"""compute-endpoint start/stop/restart/list/delete/diagnostic through the CLI.

A real manager (root, identity mapping on) against the real service and
RabbitMQ. The service listens on a free port named in config.yaml
(service_url/auth_url), which is how an admin points the manager at a
self-hosted service.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
import uuid

import pytest

from tests.fixtures_service import private_vhost

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a multi-user manager runs as root")


@pytest.fixture
def service(start_service, tmp_path):
    with private_vhost("life") as amqp:
        yield start_service(f"sqlite:///{tmp_path / 'svc.db'}", amqp)


@pytest.fixture
def endpoint(service, endpoint_cli, tmp_path):
    root = tmp_path / "endpoints"
    mapping = tmp_path / "mapping.json"
    rule = {"source": "{username}", "match": "nobody@nowhere", "output": "nobody"}
    mapping.write_text(
        json.dumps([{"DATA_TYPE": "expression_identity_mapping#1.0.0", "mappings": [rule]}])
    )
    done = endpoint_cli(
        "configure",
        "life",
        "--multi-user",
        "--contact-email",
        "ops@site.org",
        "--id-mapping-config",
        str(mapping),
        "--config-dir",
        str(root),
    )
    assert done.returncode == 0, done.stderr
    with open(root / "life" / "config.yaml", "a") as f:
        f.write(f"\nservice_url: {service.url}\nauth_url: {service.url}/\nheartbeat_period: 5\n")
    admin = service.add_client("ops@site.org")
    env = dict(
        os.environ,
        GLOBUS_COMPUTE_CLIENT_ID=admin["client_id"],
        GLOBUS_COMPUTE_CLIENT_SECRET=admin["client_secret"],
    )
    env.pop("GLOBUS_SDK_ENVIRONMENT", None)
    yield {"root": root, "dir": root / "life", "env": env, "service": service, "admin": admin}
    endpoint_cli("stop", "life", "--config-dir", str(root), env=env)


def listed(endpoint_cli, endpoint) -> dict:
    done = endpoint_cli("list", "--json", "--config-dir", str(endpoint["root"]))
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


def wait_for_status(endpoint_cli, endpoint, status: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = listed(endpoint_cli, endpoint)["life"]
        if row["status"] == status:
            return row
        time.sleep(0.3)
    log = (endpoint["dir"] / "endpoint.log").read_text(errors="replace")[-3000:]
    pytest.fail(f"endpoint never became {status}: {row}\n{log}")


def test_full_lifecycle(endpoint_cli, endpoint):
    root, env = str(endpoint["root"]), endpoint["env"]
    assert listed(endpoint_cli, endpoint)["life"]["status"] == "stopped"

    started = endpoint_cli("start", "life", "--detach", "--config-dir", root, env=env)
    assert started.returncode == 0, started.stderr
    endpoint_id = started.stdout.strip()
    uuid.UUID(endpoint_id)
    row = wait_for_status(endpoint_cli, endpoint, "running")
    assert row["id"] == endpoint_id and row["user_endpoints"] == 0
    first_pid = int((endpoint["dir"] / "daemon.pid").read_text())

    again = endpoint_cli("start", "life", "--config-dir", root, env=env)
    assert again.returncode == 73 and "already running" in again.stderr

    restarted = endpoint_cli("restart", "life", "--config-dir", root, env=env)
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.strip() == endpoint_id  # the id is kept (PUT, not a new POST)
    wait_for_status(endpoint_cli, endpoint, "running")
    assert int((endpoint["dir"] / "daemon.pid").read_text()) != first_pid

    stopped = endpoint_cli("stop", "life", "--config-dir", root, env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert listed(endpoint_cli, endpoint)["life"]["status"] == "stopped"
    assert endpoint_cli("stop", "life", "--config-dir", root, env=env).returncode == 1

    deleted = endpoint_cli("delete", "life", "--yes", "--config-dir", root, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert not endpoint["dir"].exists()
    token = endpoint["service"].token(endpoint["admin"])
    assert endpoint["service"].api(token).get(f"/v2/endpoints/{endpoint_id}").status_code == 404


def test_delete_refuses_a_running_endpoint_without_force(endpoint_cli, endpoint):
    root, env = str(endpoint["root"]), endpoint["env"]
    assert endpoint_cli("start", "life", "--detach", "--config-dir", root, env=env).returncode == 0
    wait_for_status(endpoint_cli, endpoint, "running")
    refused = endpoint_cli("delete", "life", "--yes", "--config-dir", root, env=env)
    assert refused.returncode == 1 and "--force" in refused.stderr
    forced = endpoint_cli("delete", "life", "--yes", "--force", "--config-dir", root, env=env)
    assert forced.returncode == 0, forced.stderr
    assert not endpoint["dir"].exists()


def test_start_without_credentials_says_what_to_set(endpoint_cli, endpoint):
    env = {k: v for k, v in endpoint["env"].items() if not k.startswith("GLOBUS_COMPUTE_CLIENT")}
    done = endpoint_cli("start", "life", "--config-dir", str(endpoint["root"]), env=env)
    assert done.returncode == 78
    assert "GLOBUS_COMPUTE_CLIENT_ID" in done.stderr and "Traceback" not in done.stderr


def test_wrong_credentials_exit_77(endpoint_cli, endpoint):
    env = dict(endpoint["env"], GLOBUS_COMPUTE_CLIENT_SECRET="wrong")
    done = endpoint_cli("start", "life", "--config-dir", str(endpoint["root"]), env=env)
    assert done.returncode == 77 and "credentials" in done.stderr


@pytest.mark.parametrize("command", ["start", "stop", "restart", "delete", "enable-on-boot"])
@pytest.mark.parametrize("name", ["../etc", ".hidden", "a b", "x" * 129, str(uuid.uuid4())])
def test_bad_names_are_refused(endpoint_cli, tmp_path, command, name):
    done = endpoint_cli(command, name, "--config-dir", str(tmp_path))
    assert done.returncode == 2
    assert "invalid endpoint name" in done.stderr


def test_unknown_endpoint_is_named(endpoint_cli, tmp_path):
    done = endpoint_cli("stop", "ghost", "--config-dir", str(tmp_path))
    assert done.returncode == 2 and "configure ghost" in done.stderr


PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA planted-o\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
TEMPLATE_WITH_SECRETS = """\
engine:
  type: GlobusComputeEngine   # DB_PASS=planted-c
  provider: {type: LocalProvider, worker_init: export AWS_SECRET_ACCESS_KEY=planted-b}
  worker_init: |
    export API_KEY=planted-a
  endpoint_setup: unlock --passphrase planted-e
{% set t = "planted-d" %}
"""
LOG_WITH_SECRETS = f"""\
connecting to amqp://u:planted-pw-3@broker/ with client_secret=planted-4
Authorization: Bearer planted-5
API_KEY: planted-i
AWS_SECRET_ACCESS_KEY=planted-j and aws_secret_access_key: planted-k
DB_PASS=planted-l passphrase=planted-m
headers {{'Authorization': 'Basic planted-n'}}
{PEM}
broker amqp://u:pla/nted-p@broker/vhost
password: "correct horse planted-q"
"""


def test_diagnostic_bundle_holds_no_planted_secret(endpoint_cli, tmp_path):
    """Every kind of secret issue 18 listed, planted where an admin might have put it."""
    root = tmp_path / "endpoints"
    mapping = tmp_path / "mapping.json"
    external = {
        "DATA_TYPE": "external_identity_mapping#1.0.0",
        "command": ["/usr/local/bin/site-mapper", "--token", "planted-token-1"],
        "comment": "ask for token planted-h",
    }
    mapping.write_text(json.dumps([external]))
    assert (
        endpoint_cli(
            "configure",
            "diag",
            "--multi-user",
            "--contact-email",
            "ops@site.org",
            "--id-mapping-config",
            str(mapping),
            "--config-dir",
            str(root),
        ).returncode
        == 0
    )
    directory = root / "diag"
    with open(directory / "config.yaml", "a") as f:
        f.write("\nservice_url: http://svc:planted/pw-2@127.0.0.1:9/\n")
    (directory / "user_config_template.yaml.j2").write_text(TEMPLATE_WITH_SECRETS)
    (directory / "user_config_schema.json").write_text(
        json.dumps({"properties": {"token": {"type": "string", "default": "planted-f"}}})
    )
    (directory / "user_environment.yaml").write_text("AWS_SECRET_ACCESS_KEY: planted-g\n")
    (directory / "endpoint.log").write_text(LOG_WITH_SECRETS)
    env_dir = tmp_path / "etc"
    env_dir.mkdir()
    (env_dir / "diag.env").write_text(
        "GLOBUS_COMPUTE_CLIENT_ID=abc\nGLOBUS_COMPUTE_CLIENT_SECRET=planted-6\n"
    )
    output = tmp_path / "bundle.tar.gz"
    done = endpoint_cli(
        "diagnostic", "--config-dir", str(root), "--env-dir", str(env_dir), "-o", str(output)
    )
    assert done.returncode == 0, done.stderr
    assert oct(output.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(output) as tar:
        contents = {
            m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar.getmembers()
        }
    everything = "\n".join(contents.values())
    assert "planted" not in everything and "nted-p" not in everything, everything
    assert {
        "versions.txt",
        "diag/config.json",
        "diag/user_config_template.yaml.j2",
        "diag/endpoint.log",
        "diag/diag.env",
        "diag/connectivity.txt",
        "diag/identity_mapping_config.json",
    } <= set(contents)
    assert "GLOBUS_COMPUTE_CLIENT_SECRET=***" in contents["diag/diag.env"]
    assert "site-mapper" in contents["diag/identity_mapping_config.json"]
    assert "type: GlobusComputeEngine" in contents["diag/user_config_template.yaml.j2"]
    assert "type: LocalProvider" in contents["diag/user_config_template.yaml.j2"]
    assert "compute-agent" in contents["versions.txt"]
    assert "FAILED" in contents["diag/connectivity.txt"]  # nothing listens on 127.0.0.1:9


def test_diagnostic_writes_a_new_file_only(endpoint_cli, tmp_path):
    root = tmp_path / "endpoints"
    configured = endpoint_cli(
        "configure", "diag", "--contact-email", "ops@site.org", "--config-dir", str(root)
    )
    assert configured.returncode == 0, configured.stderr
    existing = tmp_path / "existing.tar.gz"
    existing.write_text("keep me")
    victim = tmp_path / "victim"
    victim.write_text("keep me too")
    link = tmp_path / "link.tar.gz"
    link.symlink_to(victim)
    for target in (existing, link):
        done = endpoint_cli("diagnostic", "--config-dir", str(root), "-o", str(target))
        assert done.returncode == 1 and "exists" in done.stderr
    assert existing.read_text() == "keep me" and victim.read_text() == "keep me too"


@pytest.mark.skipif(
    any(
        os.path.exists(f"{d}/compute-endpoint@.service")
        for d in ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
    ),
    reason="the unit template is installed here",
)
def test_enable_on_boot_without_the_unit_says_how_to_install_it(endpoint_cli, endpoint):
    done = endpoint_cli("enable-on-boot", "life", "--config-dir", str(endpoint["root"]))
    assert done.returncode == 1
    assert "compute-endpoint@.service is not installed" in done.stderr
    assert "Traceback" not in done.stderr
