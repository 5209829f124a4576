"""``compute-endpoint map-identity`` through the real command line, with real local users."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import REPO
from tests.integration.test_identity_policy_users import local_users  # noqa: F401 (fixture)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creates local users: needs root")

SCRIPTS = REPO / "tests" / "data" / "identity"
BY_USERNAME = {"source": "{username}", "match": "(.*)@example\\.org", "output": "{0}"}
BY_EMAIL = {"source": "{email}", "match": "(.*)@uni\\.edu", "output": "{0}"}


def expression(*rules):
    return {"DATA_TYPE": "expression_identity_mapping#1.0.0", "mappings": list(rules)}


@pytest.fixture
def config(tmp_path):
    """Write a mapping file from documents; returns its path."""

    def write(*documents):
        path = tmp_path / "idmap.json"
        path.write_text(json.dumps(list(documents)))
        return str(path)

    return write


@pytest.fixture
def account(local_users):  # noqa: F811
    return local_users.user()


@pytest.mark.root
@needs_root
def test_username_maps_to_a_real_account(endpoint_cli, config, account):
    done = endpoint_cli(
        "map-identity",
        "--config",
        config(expression(BY_USERNAME)),
        "--username",
        f"{account.pw_name}@example.org",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{account.pw_name}\n"
    assert f"to local user '{account.pw_name}'" in done.stderr


@pytest.mark.root
@needs_root
def test_identity_set_from_a_file_in_userinfo_shape(endpoint_cli, config, account, tmp_path):
    identities = tmp_path / "ids.json"
    identities.write_text(
        json.dumps(
            {
                "sub": "x",
                "identity_set": [
                    {"sub": "s-1", "username": "nobody@else.net", "email": None, "status": "used"},
                    {"sub": "s-2", "email": f"{account.pw_name}@uni.edu", "status": "used"},
                ],
            }
        )
    )
    done = endpoint_cli(
        "map-identity", "--config", config(expression(BY_EMAIL)), "--identity-set", str(identities)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{account.pw_name}\n"
    assert "mapped identity s-2" in done.stderr


@pytest.mark.root
@needs_root
def test_identity_set_from_stdin_with_explain(endpoint_cli, config, account):
    identity_set = [
        {"id": "i-1", "username": "someone@elsewhere.net", "email": None, "status": "used"},
        {"id": "i-2", "username": f"{account.pw_name}@example.org", "status": "used"},
    ]
    done = endpoint_cli(
        "map-identity",
        "--config",
        config(expression(BY_EMAIL, BY_USERNAME)),
        "--identity-set",
        "-",
        "--explain",
        input=json.dumps(identity_set),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{account.pw_name}\n"
    explained = done.stderr.splitlines()
    assert any(
        "rule 0, identity 0" in line and "'email' is missing or null" in line for line in explained
    )
    assert any("rule 1, identity 0" in line and "does not match" in line for line in explained)
    assert any("rule 1, identity 1" in line and "MATCH" in line for line in explained)
    assert any(line.startswith("account policy: allowed") for line in explained)


def test_nothing_matched_exits_1_and_says_why(endpoint_cli, config):
    done = endpoint_cli(
        "map-identity", "--config", config(expression(BY_USERNAME)), "--username", "x@other.org"
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert "no mapping matched" in done.stderr and "--explain" in done.stderr


def test_explain_shows_each_failed_attempt(endpoint_cli, config):
    done = endpoint_cli(
        "map-identity",
        "--config",
        config(expression(BY_USERNAME)),
        "--username",
        "x@other.org",
        "--explain",
    )
    assert done.returncode == 1
    assert "'x@other.org' does not match '(.*)@example\\\\.org'" in done.stderr


@pytest.mark.root
@needs_root
@pytest.mark.parametrize(
    ("target", "options", "rule"),
    [
        ("root", (), "superuser"),
        ("daemon", (), "min_uid"),
        ("ca-idt-never-created", (), "unknown-user"),
        ("ACCOUNT", ("--denied-user", "ACCOUNT"), "denied_users"),
        ("ACCOUNT", ("--min-uid", "100000"), "min_uid"),
        ("ACCOUNT", ("--allowed-group", "ca-idt-nonesuch"), "allowed_groups"),
        ("ACCOUNT", ("--manager-uid", "UID"), "manager-account"),
    ],
)
def test_policy_refusal_exits_1_naming_the_policy(
    endpoint_cli, config, account, target, options, rule
):
    def fill(text):
        return text.replace("ACCOUNT", account.pw_name).replace("UID", str(account.pw_uid))

    fixed = {"source": "{username}", "match": ".*", "output": fill(target)}
    done = endpoint_cli(
        "map-identity",
        "--config",
        config(expression(fixed)),
        "--username",
        "anyone@example.org",
        *map(fill, options),
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert f"refused by the account policy ({rule})" in done.stderr


def test_system_account_passes_when_allow_listed(endpoint_cli, config):
    fixed = {"source": "{username}", "match": ".*", "output": "daemon"}
    done = endpoint_cli(
        "map-identity",
        "--config",
        config(expression(fixed)),
        "--username",
        "ops@example.org",
        "--allow-system-account",
        "daemon",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "daemon\n"


@pytest.mark.root
@needs_root
def test_external_program_through_the_cli(endpoint_cli, config, account, tmp_path):
    external = {
        "DATA_TYPE": "external_identity_mapping#1.0.0",
        "command": [str(SCRIPTS / "record_and_map.py"), str(tmp_path / "record.json")],
    }
    done = endpoint_cli(
        "map-identity",
        "--config",
        config(external),
        "--username",
        f"{account.pw_name}@example.org",
        "--endpoint-id",
        "ep-123",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{account.pw_name}\n"
    assert json.loads((tmp_path / "record.json").read_text())["argv"][-3:] == ["-s", "ep-123", "-a"]


def test_broken_external_program_explained(endpoint_cli, config):
    broken = {
        "DATA_TYPE": "external_identity_mapping#1.0.0",
        "command": [str(SCRIPTS / "garbage.sh")],
    }
    done = endpoint_cli(
        "map-identity", "--config", config(broken), "--username", "a@example.org", "--explain"
    )
    assert done.returncode == 1
    assert "document 0 (external)" in done.stderr and "invalid output" in done.stderr


@pytest.mark.parametrize(
    ("documents", "words"),
    [
        ([expression({**BY_USERNAME, "match": "\\d+"})], "document 0, field 'mappings[0].match'"),
        ([{"DATA_TYPE": "external_identity_mapping#1.0.0"}], "document 0, field 'command'"),
        ({"not": "a list"}, "JSON list"),
    ],
)
def test_invalid_config_exits_2_with_the_load_error(endpoint_cli, tmp_path, documents, words):
    path = tmp_path / "idmap.json"
    path.write_text(json.dumps(documents))
    done = endpoint_cli("map-identity", "--config", str(path), "--username", "a@example.org")
    assert done.returncode == 2
    assert "invalid identity mapping configuration" in done.stderr and words in done.stderr


def test_unknown_data_type_warns_but_maps(endpoint_cli, config):
    fixed = {"source": "{username}", "match": ".*", "output": "daemon"}
    done = endpoint_cli(
        "map-identity",
        "--config",
        config({"DATA_TYPE": "ldap_identity_mapping#1.0.0"}, expression(fixed)),
        "--username",
        "ops@example.org",
        "--min-uid",
        "0",
    )
    assert done.returncode == 0, done.stderr
    assert "warning: document 0: unknown DATA_TYPE 'ldap_identity_mapping#1.0.0'" in done.stderr


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ((), "exactly one of"),
        (("--username", "a@b.org", "--identity-set", "-"), "exactly one of"),
        (("--identity-set", "/nonexistent/ids.json"), "cannot read identity set"),
        (("--identity-set", "-"), "cannot read identity set"),
    ],
)
def test_bad_identity_input_exits_2(endpoint_cli, config, arguments, words):
    done = endpoint_cli(
        "map-identity", "--config", config(expression(BY_USERNAME)), *arguments, input="{"
    )
    assert done.returncode == 2
    assert words in done.stderr
