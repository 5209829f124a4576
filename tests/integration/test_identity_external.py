"""External identity-mapping programs, run for real (scripts in tests/data/identity)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from identity.external import parse_output, run_program
from identity.mapping import ExternalDocument, load_mapping_documents
from tests.conftest import REPO
from tests.integration.test_identity_policy_users import local_users  # noqa: F401 (fixture)

SCRIPTS = REPO / "tests" / "data" / "identity"
CONNECTOR = "145812c8-decc-41f1-83cf-bb2a85a2a70b"
GATEWAY = "11111111-2222-3333-4444-555555555555"
ALICE = {"id": "a-1", "username": "alice@example.org", "status": "used", "email": None}
BOB = {"id": "b-1", "username": "bob@example.org", "status": "unused"}
CAROL = {"id": "c-1", "username": "carol@elsewhere.net", "status": "used"}


@pytest.fixture
def shared_dir():
    """A directory every account can write: programs run as other users record here."""
    path = Path(tempfile.mkdtemp(prefix="ca-idt-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(script: str, *args: str, timeout_s: float = 5.0, run_as: str | None = None, ids=None):
    document = ExternalDocument(0, (str(SCRIPTS / script), *args), timeout_s, run_as)
    return run_program(document, ids or [CAROL, ALICE, BOB], CONNECTOR, GATEWAY)


def test_gcs_contract_argv_stdin_stdout(shared_dir):
    record = shared_dir / "record.json"
    answer = run("record_and_map.py", str(record))
    assert answer.error is None
    assert answer.results == (("a-1", "alice"), ("b-1", "bob"))
    seen = json.loads(record.read_text())
    assert seen["argv"][1:] == [str(record), "-c", CONNECTOR, "-s", GATEWAY, "-a"]
    stdin = json.loads(seen["stdin"])
    assert stdin == {"DATA_TYPE": "identity_mapping_input#1.0.0", "identities": [CAROL, ALICE, BOB]}


def test_identity_values_json_cannot_hold_are_sent_as_text(shared_dir):
    when = datetime(2026, 1, 2, tzinfo=UTC)
    record = shared_dir / "record.json"
    answer = run("record_and_map.py", str(record), ids=[{**ALICE, "last_authentication": when}])
    assert answer.results == (("a-1", "alice"),)
    sent = json.loads(json.loads(record.read_text())["stdin"])["identities"][0]
    assert sent["last_authentication"] == str(when)


def test_program_gets_a_minimal_environment_without_the_managers_secrets(shared_dir, monkeypatch):
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", "do-not-leak")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    record = shared_dir / "record.json"
    assert run("record_and_map.py", str(record)).error is None
    seen = json.loads(record.read_text())
    assert set(seen["env"]) <= {"PATH", "LANG", "HOME", "USER", "LOGNAME", "LC_CTYPE", "PWD"}
    assert "do-not-leak" not in json.dumps(seen["env"])
    assert seen["cwd"] == "/"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another account needs root")
def test_run_as_an_unprivileged_account(shared_dir, local_users):  # noqa: F811
    account = local_users.user()
    record = shared_dir / "record.json"
    answer = run("record_and_map.py", str(record), run_as=account.pw_name)
    assert answer.error is None and answer.results
    seen = json.loads(record.read_text())
    assert (seen["uid"], seen["gid"]) == (account.pw_uid, account.pw_gid)
    assert set(seen["groups"]) <= {account.pw_gid}
    assert seen["env"]["USER"] == account.pw_name


def test_unknown_run_as_account_is_a_failure_not_an_exception():
    answer = run("record_and_map.py", "/dev/null", run_as="ca-idt-no-such-user")
    assert answer.results == () and "could not start" in answer.error


def _gone(pid: int) -> bool:
    """True once the process no longer runs (reaped, or a zombie awaiting its reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_a_hanging_program_is_killed_with_its_whole_process_group(shared_dir, caplog):
    record = shared_dir / "record.json"
    with caplog.at_level(logging.WARNING, logger="identity.external"):
        answer = run("hang.py", str(record), timeout_s=1.5)
    assert answer.results == ()
    assert "no answer within 1.5 s; killed" in answer.error
    pids = json.loads(record.read_text())["pids"]
    deadline = time.monotonic() + 30
    while not all(map(_gone, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in pids if not _gone(pid)] == []
    assert any("hang.py" in r.getMessage() and "killed" in r.getMessage() for r in caplog.records)


# (script, words in the error, words in the admin log line)
FAILURES = [
    ("garbage.sh", "invalid output: stdout is not JSON", "definitely not JSON"),
    ("fail.sh", "exited with status 3", "ldap server unreachable"),
    ("no-such-program", "could not start", "could not start"),
]


@pytest.mark.parametrize(("script", "error", "logged"), FAILURES)
def test_failing_programs_yield_no_match_and_an_admin_log_line(script, error, logged, caplog):
    with caplog.at_level(logging.WARNING, logger="identity.external"):
        answer = run(script)
    assert answer.results == ()
    assert error in answer.error
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and script in lines[0] and logged in lines[0]


def test_silent_program_maps_nobody():
    answer = run("silent.sh")
    assert answer.error is None and answer.results == ()


# (stdout, words in the error)
BAD_OUTPUTS = [
    ("[]", "not a JSON object"),
    ('{"DATA_TYPE": "identity_mapping_input#1.0.0", "result": []}', "DATA_TYPE"),
    ('{"DATA_TYPE": "identity_mapping_output#1.0.0"}', "'result' is missing"),
    ('{"result": {"id": "a"}}', "not a list"),
    ('{"result": ["a"]}', "result[0] is not an object"),
    ('{"result": [{"id": "a-1"}]}', "non-empty 'output'"),
    ('{"result": [{"id": "a-1", "output": ""}]}', "non-empty 'output'"),
    ('{"result": [{"id": 1, "output": "x"}]}', "string 'id'"),
]


@pytest.mark.parametrize(("stdout", "words"), BAD_OUTPUTS)
def test_output_that_breaks_the_contract_is_rejected(stdout, words):
    with pytest.raises(ValueError) as raised:
        parse_output(stdout)
    assert words in str(raised.value)


def test_output_without_data_type_is_accepted_as_gcs_does():
    assert parse_output('{"result": [{"id": "a-1", "output": "x"}]}\n') == (("a-1", "x"),)


def external(script, *args, **extra):
    return {
        "DATA_TYPE": "external_identity_mapping#1.0.0",
        "command": [str(SCRIPTS / script), *args],
        **extra,
    }


def expression():
    return {
        "DATA_TYPE": "expression_identity_mapping#1.0.0",
        "mappings": [{"source": "{username}", "match": "(.*)@example\\.org", "output": "x-{0}"}],
    }


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (external("hang.py", "/dev/null", timeout_s=1), "killed"),
        (external("garbage.sh"), "invalid output"),
        (external("fail.sh"), "exited with status 3"),
        (external("stranger.sh"), "not in the input"),
        (external("silent.sh"), "no identity mapped"),
    ],
)
def test_a_broken_program_does_not_stop_later_documents(document, reason):
    outcome = load_mapping_documents([document, expression()], runner=run_program).map(
        [CAROL, ALICE]
    )
    assert outcome.local_user == "x-alice"
    assert outcome.matched_identity is ALICE
    assert reason in outcome.trace[0].reason and not outcome.trace[0].matched


def test_program_answer_order_decides(shared_dir):
    documents = [external("record_and_map.py", str(shared_dir / "r.json")), expression()]
    outcome = load_mapping_documents(documents, runner=run_program).map([CAROL, BOB, ALICE])
    assert outcome.local_user == "bob"
    assert outcome.matched_identity is BOB
    assert outcome.trace[0].identity == 1
