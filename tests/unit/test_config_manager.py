"""The manager's config.yaml: every key, defaults, and errors naming key, file and line."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from identity.policy import AccountPolicy
from templates.errors import ConfigError
from templates.manager_config import (
    GLOBUS_COMPUTE_URL,
    Limits,
    ManagerConfig,
    PamConfig,
    RestartPolicy,
    load_manager_config,
)

UUID_A = "11111111-2222-4333-8444-555555555555"
UUID_B = "66666666-7777-4888-9999-000000000000"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_manager_config(path)
    assert caught.value.source == str(path)
    return caught.value


def test_missing_or_empty_file_means_defaults(tmp_path):
    missing = load_manager_config(tmp_path / "config.yaml")
    empty = load_manager_config(write(tmp_path, "# nothing\n"))
    assert missing == empty
    assert empty.service_url == GLOBUS_COMPUTE_URL
    assert empty.min_uid == 1000 and empty.allow_system_accounts == ()
    assert empty.heartbeat_period == 30.0 and empty.pam == PamConfig(enable=False)
    assert empty.user_config_template_path == tmp_path / "user_config_template.yaml.j2"
    assert empty.user_config_schema_path is None and empty.user_environment_path is None
    assert empty.restart == RestartPolicy() and empty.limits == Limits()


def test_every_key(tmp_path):
    (tmp_path / "idmap.json").write_text("[]")
    (tmp_path / "t.j2").write_text("")
    (tmp_path / "s.json").write_text("{}")
    (tmp_path / "env.yaml").write_text("")
    config = load_manager_config(
        write(
            tmp_path,
            f"""
display_name: Cluster
email: help@example.org
public: true
allowed_functions: [{UUID_A}]
identity_mapping_config_path: idmap.json
user_config_template_path: t.j2
user_config_schema_path: {tmp_path}/s.json
user_environment_path: env.yaml
audit_log_path: audit.log
pam: {{service_name: site-compute}}
mu_child_ep_grace_period_s: 12
heartbeat_period: 10
amqp_port: 5672
debug: true
high_assurance: true
admins: [{UUID_A.upper()}, {UUID_B}]
authentication_policy: {UUID_B}
subscription_id: {UUID_A}
service_url: http://127.0.0.1:8000/
auth_url: http://127.0.0.1:8000/auth
min_uid: 2000
allow_system_accounts: [svc-sci]
allowed_groups: [hpc]
denied_users: [mallory]
restart: {{base_delay_s: 2, max_delay_s: 60, healthy_run_s: 30, max_failures: 3, window_s: 120, cooldown_s: 600}}
limits: {{max_user_endpoints_per_user: 2, max_user_endpoints: null, memory_per_user: 8G, processes_per_user: 512}}
""",
        )
    )
    assert config.display_name == "Cluster" and config.public and config.debug
    assert config.allowed_functions == (UUID_A,)
    assert config.identity_mapping_config_path == tmp_path / "idmap.json"
    assert config.user_config_schema_path == tmp_path / "s.json"
    assert config.audit_log_path == tmp_path / "audit.log"
    assert config.pam == PamConfig(enable=True, service_name="site-compute")
    assert config.heartbeat_period == 10.0 and config.amqp_port == 5672
    assert config.admins == (UUID_A, UUID_B)
    assert config.service_url == "http://127.0.0.1:8000"
    assert config.restart == RestartPolicy(2, 60, 30, 3, 120, 600)
    assert config.limits == Limits(2, None, 8 << 30, 512)
    assert config.source == tmp_path / "config.yaml"


def test_account_policy_is_built_from_the_same_key_names(tmp_path):
    config = load_manager_config(
        write(tmp_path, "min_uid: 500\nallow_system_accounts: [a]\nallowed_groups: [g]\n")
    )
    names = {f.name for f in dataclasses.fields(AccountPolicy)}
    policy = AccountPolicy(**{name: getattr(config, name) for name in names})
    assert policy == AccountPolicy(500, ("a",), ("g",), ())


def test_restart_section_is_read_into_the_managers_policy_type(tmp_path):
    from mep.restart_policy import RestartPolicy as ManagerRestartPolicy

    path = tmp_path / "config.yaml"
    path.write_text("restart:\n  max_failures: 2\n  cooldown_s: 60\n")
    restart = load_manager_config(path).restart
    assert type(restart) is ManagerRestartPolicy
    assert restart == ManagerRestartPolicy(max_failures=2, cooldown_s=60)


@pytest.mark.parametrize(
    ("text", "key", "line", "fragment"),
    [
        ("display_name: x\nemial: a@b\n", "emial", 2, "did you mean 'email'"),
        ("\n\nheartbeat_period: fast\n", "heartbeat_period", 3, "expected a number"),
        ("public: yes please\n", "public", 1, "expected true or false"),
        ("amqp_port: 70000\n", "amqp_port", 1, "at most 65535"),
        ("min_uid: -1\n", "min_uid", 1, "at least 0"),
        ("allowed_functions: [not-a-uuid]\n", "allowed_functions[0]", 1, "expected a UUID"),
        ("admins: x\n", "admins", 1, "expected a list"),
        (
            "identity_mapping_config_path: nope.json\n",
            "identity_mapping_config_path",
            1,
            "does not exist",
        ),
        ("allow_system_accounts: true\n", "allow_system_accounts", 1, "list the system account"),
        (
            "pam:\n  enable: true\n  sevice_name: x\n",
            "pam.sevice_name",
            3,
            "did you mean 'service_name'",
        ),
        ("restart:\n  max_failures: 0\n", "restart.max_failures", 2, "at least 1"),
        ("restart:\n  base_delay_s: 10\n  max_delay_s: 5\n", "restart.max_delay_s", 1, "at least"),
        ("limits:\n  max_user_endpoints: 0\n", "limits.max_user_endpoints", 2, "at least 1"),
        ("limits:\n  memory_per_user: lots\n", "limits.memory_per_user", 2, "512M or 8G"),
        ("limits:\n  processes_per_user: 2\n", "limits.processes_per_user", 2, "at least 8"),
        ("service_url: ftp://x\n", "service_url", 1, "http:// or https://"),
        ("engine:\n  type: GlobusComputeEngine\n", "engine", 1, "user_config_template.yaml.j2"),
        ("multi_user: true\n", "multi_user", 1, "unknown key"),
        ("email: a\nemail: b\n", "email", 2, "written twice"),
    ],
)
def test_errors_name_key_file_and_line(tmp_path, text, key, line, fragment):
    error = error_for(tmp_path, text)
    assert (error.key, error.line) == (key, line)
    assert fragment in str(error)
    assert str(error).startswith(f"{tmp_path / 'config.yaml'}, line {line}: {key}: ")


def test_yaml_syntax_errors_and_non_mappings(tmp_path):
    assert error_for(tmp_path, "a: [1,\n").line == 2
    assert "top level" in str(error_for(tmp_path, "- a\n- b\n"))


def test_unreadable_file_is_a_config_error(tmp_path):
    path = write(tmp_path, "")
    path.write_bytes(b"display_name: \xff\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_manager_config(path)


def test_heartbeat_is_raised_to_the_minimum(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        config = load_manager_config(write(tmp_path, "heartbeat_period: 1\n"))
    assert config.heartbeat_period == 5.0
    assert "raised" in caplog.text


def test_display_name_none_and_nulls(tmp_path):
    config = load_manager_config(write(tmp_path, "display_name: None\nemail: null\npam: null\n"))
    assert config.display_name is None and config.email is None
    assert config.pam.enable is True


def test_legacy_yaml_template_is_found(tmp_path):
    (tmp_path / "user_config_template.yaml").write_text("")
    (tmp_path / "user_config_schema.json").write_text("{}")
    config = load_manager_config(write(tmp_path, ""))
    assert config.user_config_template_path == tmp_path / "user_config_template.yaml"
    assert config.user_config_schema_path == tmp_path / "user_config_schema.json"


def test_template_view_is_plain_data(tmp_path):
    view = load_manager_config(write(tmp_path, "allowed_groups: [a]\n")).template_view()
    assert view["allowed_groups"] == ["a"]
    assert view["restart"]["max_failures"] == 5
    assert view["endpoint_dir"] == str(tmp_path)
    assert set(view) == {f.name for f in dataclasses.fields(ManagerConfig)}
