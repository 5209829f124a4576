"""Endpoint names, the base directory, and the files ``configure`` plans (pure parts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from templates.endpoint_dir import ConfigureRequest, plan_endpoint_files
from templates.errors import ConfigError
from templates.manager_config import manager_config_from_text
from templates.paths import base_dir, check_endpoint_name


@pytest.mark.parametrize("name", ["default", "gpu.cluster-2", "A_b.c", "x" * 128, "a..b"])
def test_safe_names(name):
    assert check_endpoint_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".hidden",
        "..",
        "a/b",
        "../etc",
        "a b",
        "abc\n",
        "abc\x00",
        "a;rm",
        "$(id)",
        "`id`",
        "a%i",
        "é",
        "x" * 129,
        "11111111-2222-4333-8444-555555555555",
        "11111111222243338444555555555555",
    ],
)
def test_unsafe_names_are_refused(name):
    with pytest.raises(ConfigError, match="invalid endpoint name"):
        check_endpoint_name(name)


def test_base_dir_rules():
    home = Path("/home/alice")
    assert base_dir({}, 0, home) == Path("/etc/compute-agent")
    assert base_dir({}, 1000, home) == home / ".compute_agent"
    assert base_dir({"COMPUTE_AGENT_DIR": "/srv/ep"}, 0, home) == Path("/srv/ep")
    assert base_dir({"COMPUTE_AGENT_DIR": ""}, 1000, home) == home / ".compute_agent"


def planned(request: ConfigureRequest, directory=Path("/etc/compute-agent/ep")) -> dict:
    return {item.name: item for item in plan_endpoint_files(directory, request)}


def test_multi_user_plan():
    files = planned(
        ConfigureRequest("ep", True, contact_email="help@example.org", display_name="EP")
    )
    assert {n: f.mode for n, f in files.items()} == {
        "config.yaml": 0o600,
        "user_config_template.yaml.j2": 0o644,
        "user_config_schema.json": 0o600,
        "user_environment.yaml": 0o600,
        "example_identity_mapping_config.json": 0o600,
    }
    config = yaml.safe_load(files["config.yaml"].text)
    assert config == {
        "display_name": "EP",
        "email": "help@example.org",
        "identity_mapping_config_path": "/etc/compute-agent/ep/example_identity_mapping_config.json",
        "public": True,
    }


def test_single_user_plan_has_no_mapping_and_a_private_template():
    files = planned(ConfigureRequest("ep", False))
    assert "example_identity_mapping_config.json" not in files
    assert files["user_config_template.yaml.j2"].mode == 0o600
    assert yaml.safe_load(files["config.yaml"].text) is None


def test_given_mapping_and_high_assurance(tmp_path):
    mapping = json.dumps([{"DATA_TYPE": "expression_identity_mapping#1.0.0", "mappings": []}])
    files = planned(
        ConfigureRequest("ep", True, "a@b.org", high_assurance=True, id_mapping_text=mapping),
        tmp_path,
    )
    assert files["identity_mapping_config.json"].text == mapping
    config = yaml.safe_load(files["config.yaml"].text)
    assert config["high_assurance"] is True
    assert config["audit_log_path"] == str(tmp_path / "audit.log")
    assert config["identity_mapping_config_path"] == str(tmp_path / "identity_mapping_config.json")


def test_generated_config_loads_as_a_manager_config(tmp_path):
    files = planned(ConfigureRequest("ep", True, "a@b.org", display_name="x: y\n#z"), tmp_path)
    (tmp_path / "example_identity_mapping_config.json").write_text("[]")
    config = manager_config_from_text(files["config.yaml"].text, tmp_path)
    assert config.display_name == "x: y\n#z" and config.public


@pytest.mark.parametrize("scheduler", ["slurm", "pbspro"])
def test_a_scheduler_picks_its_example_template_and_schema(scheduler, tmp_path):
    files = planned(ConfigureRequest("ep", True, "a@b.org", scheduler=scheduler), tmp_path)
    provider = {"slurm": "SlurmProvider", "pbspro": "PBSProProvider"}[scheduler]
    assert f"type: {provider}" in files["user_config_template.yaml.j2"].text
    schema = json.loads(files["user_config_schema.json"].text)
    assert schema["additionalProperties"] is False
    assert files["user_config_template.yaml.j2"].mode == 0o644


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (ConfigureRequest("ep", True), "Email must be specified"),
        (ConfigureRequest("ep", False, id_mapping_text="[]"), "needs a multi-user endpoint"),
        (ConfigureRequest("ep", True, "a@b", id_mapping_text="{"), "not valid JSON"),
        (ConfigureRequest("ep", True, "a@b", id_mapping_text="{}"), "JSON list"),
        (ConfigureRequest("../ep", False), "invalid endpoint name"),
        (ConfigureRequest("ep", False, scheduler="lsf"), "unknown scheduler 'lsf'"),
    ],
)
def test_refused_requests(request_, fragment):
    with pytest.raises(ConfigError, match=fragment):
        plan_endpoint_files(Path("/x"), request_)


@pytest.mark.parametrize(
    ("endpoint_dir", "endpoint_log", "expected"),
    [
        (None, None, ("/home/a/.compute_agent/uep.1", "/home/a/.compute_agent/uep.1/endpoint.log")),
        ("~/scratch/uep", None, ("/home/a/scratch/uep", "/home/a/scratch/uep/endpoint.log")),
        ("/lustre/a/uep", "~/logs/uep.log", ("/lustre/a/uep", "/home/a/logs/uep.log")),
        ("~", None, ("/home/a", "/home/a/endpoint.log")),
    ],
)
def test_user_endpoint_paths_expand_against_the_users_home(endpoint_dir, endpoint_log, expected):
    from templates.paths import user_endpoint_paths

    directory, log = user_endpoint_paths("/home/a", "uep.1", endpoint_dir, endpoint_log)
    assert (str(directory), str(log)) == expected
