"""The admin CLI: clients bound to identity sets, and clear errors for bad input."""

from __future__ import annotations

import json


def test_client_add_list_remove(service_cli, tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    added = service_cli(
        "client",
        "add",
        "--username",
        "hana@uni.edu",
        "--linked",
        "hana@lab.org",
        "--linked",
        "h@idp.org",
        "--email",
        "hana@mail.org",
        "--db",
        db,
    )
    assert added.returncode == 0, added.stderr
    doc = json.loads(added.stdout)
    assert set(doc) == {"client_id", "client_secret", "identity_id"}
    second = json.loads(
        service_cli("client", "add", "--username", "hana@lab.org", "--db", db).stdout
    )
    listed = service_cli("client", "list", "--db", db)
    assert listed.returncode == 0 and doc["client_secret"] not in listed.stdout
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    first = next(r for r in rows if r["client_id"] == doc["client_id"])
    names = [i["username"] for i in first["identities"]]
    assert names == ["hana@uni.edu", "hana@lab.org", "h@idp.org"]
    primary = first["identities"][0]
    assert primary["id"] == primary["sub"] == doc["identity_id"]
    assert primary["email"] == "hana@mail.org" and primary["status"] == "used"
    assert primary["organization"] == "uni.edu"
    assert second["identity_id"] == first["identities"][1]["id"]
    removed = service_cli("client", "remove", doc["client_id"], "--db", db)
    assert removed.returncode == 0
    after = service_cli("client", "list", "--db", db).stdout
    assert doc["client_id"] not in after and second["client_id"] in after


def test_bad_database_and_broker_urls_are_clear_errors(service_cli):
    bad_db = service_cli("client", "list", "--db", "postgresql://u:hunter2@127.0.0.1:1/x")
    assert bad_db.returncode == 2
    assert "cannot open the database" in bad_db.stderr and "hunter2" not in bad_db.stderr
    assert "Traceback" not in bad_db.stderr
    nonsense = service_cli("client", "list", "--db", "nonsense")
    assert nonsense.returncode == 2 and "cannot open the database" in nonsense.stderr
    bad_amqp = service_cli("start", "--amqp-url", "http://x", "--db", "nonsense")
    assert bad_amqp.returncode == 2 and "amqp://" in bad_amqp.stderr
