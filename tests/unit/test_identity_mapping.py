"""Loading mapping documents and mapping identity sets (pure; external runs are faked here,
real programs are in tests/integration/test_identity_external.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from identity.mapping import (
    ExternalDocument,
    MappingConfigError,
    ProgramAnswer,
    load_mapping_documents,
    load_mapping_file,
)
from tests.conftest import REPO

EXPRESSION = "expression_identity_mapping#1.0.0"
EXTERNAL = "external_identity_mapping#1.0.0"
ALICE = {
    "id": "a1a1a1a1-0000-0000-0000-000000000001",
    "sub": "a1a1a1a1-0000-0000-0000-000000000001",
    "username": "alice@example.org",
    "email": "alice@uni.edu",
    "status": "used",
}
ALICE_UNI = {
    "id": "a1a1a1a1-0000-0000-0000-000000000002",
    "username": "alice@uni.edu",
    "email": None,
    "status": "private",
}


def rule(source="{username}", match="(.*)@example\\.org", output="{0}", **flags):
    return {"source": source, "match": match, "output": output, **flags}


def expression(*rules):
    return {"DATA_TYPE": EXPRESSION, "mappings": list(rules)}


def mapped(documents, identity_set, **options):
    return load_mapping_documents(documents, **options).map(identity_set).local_user


# ---------------------------------------------------------------- loading errors

# (configuration, document index, field, words in the problem)
INVALID = [
    ({"DATA_TYPE": EXPRESSION}, None, None, "JSON list"),
    ([42], 0, None, "JSON object"),
    ([{"mappings": []}], 0, "DATA_TYPE", "missing"),
    ([{"DATA_TYPE": 7}], 0, "DATA_TYPE", "not a string"),
    ([{"DATA_TYPE": "expression_identity_mapping#2.0.0", "mappings": []}], 0, "DATA_TYPE", "2.0"),
    ([expression(rule()), {"DATA_TYPE": EXPRESSION}], 1, "mappings", "list of rules"),
    ([expression("oops")], 0, "mappings[0]", "object"),
    ([expression(rule(), {"match": "x", "output": "y"})], 0, "mappings[1].source", "string"),
    ([expression({"source": "x", "output": "y"})], 0, "mappings[0].match", "string"),
    ([expression({"source": "x", "match": "y"})], 0, "mappings[0].output", "string"),
    ([expression(rule(ignore_case="true"))], 0, "mappings[0].ignore_case", "true or false"),
    ([expression(rule(literal=1))], 0, "mappings[0].literal", "true or false"),
    ([expression(rule(match="\\d+"))], 0, "mappings[0].match", "invalid escape"),
    ([expression(rule(match="*x"))], 0, "mappings[0].match", "leading wildcard"),
    ([expression(rule(output="{1}"))], 0, "mappings[0].output", "match group"),
    ([expression(rule(match="alice", output="{0}"))], 0, "mappings[0].output", "0 group"),
    ([expression(rule(literal=True))], 0, "mappings[0].output", "literal"),
    ([expression(rule(source="{0}"))], 0, "mappings[0].source", "only output"),
    ([expression(rule(source="{}"))], 0, "mappings[0].source", "empty reference"),
    ([{"DATA_TYPE": EXTERNAL}], 0, "command", "non-empty list"),
    ([{"DATA_TYPE": EXTERNAL, "command": []}], 0, "command", "non-empty list"),
    ([{"DATA_TYPE": EXTERNAL, "command": "/bin/map"}], 0, "command", "non-empty list"),
    ([{"DATA_TYPE": EXTERNAL, "command": ["/bin/map", None]}], 0, "command[1]", "null"),
    ([{"DATA_TYPE": EXTERNAL, "command": [""]}], 0, "command[0]", "empty"),
    ([{"DATA_TYPE": EXTERNAL, "command": ["m"], "timeout_s": 0}], 0, "timeout_s", "seconds"),
    ([{"DATA_TYPE": EXTERNAL, "command": ["m"], "timeout_s": "5"}], 0, "timeout_s", "seconds"),
    ([{"DATA_TYPE": EXTERNAL, "command": ["m"], "timeout_s": 1e9}], 0, "timeout_s", "seconds"),
    ([{"DATA_TYPE": EXTERNAL, "command": ["m"], "run_as": ""}], 0, "run_as", "account"),
]


@pytest.mark.parametrize(("data", "index", "field", "words"), INVALID)
def test_invalid_configuration_names_document_field_and_problem(data, index, field, words):
    with pytest.raises(MappingConfigError) as raised:
        load_mapping_documents(data)
    error = raised.value
    assert (error.index, error.field) == (index, field)
    assert words in error.problem
    if index is not None:
        assert f"document {index}" in str(error)
    if field is not None:
        assert repr(field) in str(error)


def test_unknown_data_type_prefix_is_a_warning_and_the_document_is_skipped():
    mapper = load_mapping_documents(
        [{"DATA_TYPE": "ldap_identity_mapping#1.0.0"}, expression(rule())]
    )
    assert len(mapper.documents) == 1
    assert any("'ldap_identity_mapping#1.0.0'" in w and "document 0" in w for w in mapper.warnings)
    assert mapper.map([ALICE]).local_user == "alice"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([], "no usable mapping documents"),
        ([expression()], "'mappings' is empty"),
        ([expression(rule(ignorecase=True))], "unknown key 'ignorecase'"),
        ([expression(rule(source="{user_name}"))], "{user_name} is not a known"),
        ([expression(rule(match="(.*)*@example\\.org"))], "exponential time"),
        ([{"DATA_TYPE": EXTERNAL, "command": ["m"], "timeout": 3}], "unknown key 'timeout'"),
    ],
)
def test_suspicious_but_valid_configuration_warns(data, words):
    warnings = load_mapping_documents(data).warnings
    assert any(words in warning for warning in warnings), warnings


def test_external_document_defaults_and_options():
    mapper = load_mapping_documents(
        [
            {"DATA_TYPE": EXTERNAL, "command": ["/bin/map", 3, 1.5]},
            {"DATA_TYPE": EXTERNAL, "command": ["/bin/map"], "timeout_s": 0.5, "run_as": "nobody"},
        ]
    )
    first, second = mapper.documents
    assert first == ExternalDocument(0, ("/bin/map", "3", "1.5"), 5.0, None)
    assert second == ExternalDocument(1, ("/bin/map",), 0.5, "nobody")


def test_the_shipped_example_mapping_loads_cleanly_and_maps():
    mapper = load_mapping_file(REPO / "templates" / "example_identity_mapping_config.json")
    assert mapper.warnings == ()
    assert mapper.map([ALICE]).local_user == "alice"


def test_comment_keys_are_accepted_silently():
    documents = [
        {**expression({**rule(), "comment": "why this rule"}), "comment": "site rules"},
        {"DATA_TYPE": EXTERNAL, "command": ["/opt/map"], "comment": "LDAP lookup"},
    ]
    assert load_mapping_documents(documents).warnings == ()


def test_load_mapping_file(tmp_path):
    path = tmp_path / "idmap.json"
    path.write_text(json.dumps([expression(rule())]))
    assert load_mapping_file(path).map([ALICE]).local_user == "alice"


@pytest.mark.parametrize(
    ("content", "words"),
    [(None, "cannot read"), ("[{", "not valid JSON"), (b"\xff\xfe", "cannot read")],
)
def test_unreadable_mapping_file(tmp_path, content, words):
    path = tmp_path / "idmap.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(MappingConfigError) as raised:
        load_mapping_file(path)
    assert words in str(raised.value) and str(path) in str(raised.value)


def test_mapping_module_imports_alone_without_subprocess_or_amqp():
    code = (
        "import sys; import identity.mapping as m; "
        "m.load_mapping_documents([]); "
        "bad = {'subprocess', 'pika', 'identity.external', 'wire'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- mapping rules

# (rules, identity set, expected local user)
EXPRESSION_CASES = [
    ([rule()], [ALICE], "alice"),
    ([rule()], [ALICE_UNI], None),
    ([rule(source="{email}", match="(.*)@uni\\.edu")], [ALICE], "alice"),
    ([rule(match="ALICE@EXAMPLE\\.ORG", output="a1", ignore_case=True)], [ALICE], "a1"),
    ([rule(match="ALICE@EXAMPLE\\.ORG", output="a1")], [ALICE], None),
    ([rule(match="alice@example.org", output="lit", literal=True)], [ALICE], "lit"),
    ([rule(match="alice@example.or.", output="lit", literal=True)], [ALICE], None),
    ([rule(source="{id}", match=ALICE["id"], output="fixed")], [ALICE], "fixed"),
    ([rule(output="{0}-{username}")], [ALICE], "alice-alice@example.org"),
    ([rule(source="{organization}")], [ALICE], None),
    ([rule(match="(.*)@example\\.org|x(y)", output="{1}")], [ALICE], None),
    ([rule(match="(.*)@example\\.org", output="{0}"), rule(output="{0}")], [ALICE], "alice"),
    ([rule(match="()@?.*", output="{0}")], [ALICE], None),
]


@pytest.mark.parametrize(("rules", "identity_set", "expected"), EXPRESSION_CASES)
def test_expression_mapping(rules, identity_set, expected):
    assert mapped([expression(*rules)], identity_set) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [("used", "alice"), ("private", "alice"), ("unused", None), (None, None), ("USED", None)],
)
def test_only_used_or_private_identities_are_mapped(status, expected):
    identity = {**ALICE, "status": status}
    if status is None:
        del identity["status"]
    assert mapped([expression(rule())], [identity]) == expected


def test_identity_with_only_sub_is_mapped_and_reported_by_sub():
    identity = {k: v for k, v in ALICE.items() if k != "id"}
    outcome = load_mapping_documents([expression(rule(source="{id}", match=".*", output="x"))]).map(
        [identity]
    )
    assert outcome.local_user == "x"
    assert outcome.matched_identity is identity
    assert outcome.matched_identity_id == ALICE["sub"]


def test_entries_that_are_not_identities_are_skipped_with_a_reason():
    outcome = load_mapping_documents([expression(rule())]).map(["alice", {"username": "x"}, ALICE])
    assert outcome.local_user == "alice"
    assert outcome.matched_identity is ALICE
    reasons = [step.reason for step in outcome.trace if step.kind == "input"]
    assert reasons == ["not an identity object (str)", "identity has no string 'id' or 'sub'"]


# ---------------------------------------------------------------- null fields


def test_null_field_skips_that_identity_for_that_rule_only():
    """The official mapper fails the whole document here; the user went unmapped."""
    documents = [expression(rule(source="{email}", match="(.*)@uni\\.edu"))]
    outcome = load_mapping_documents(documents).map([ALICE_UNI, ALICE])
    assert outcome.local_user == "alice"
    assert outcome.matched_identity is ALICE
    skipped = outcome.trace[0]
    assert not skipped.matched and skipped.identity == 0
    assert "'email' is missing or null" in skipped.reason


def test_null_field_in_output_skips_the_identity():
    documents = [expression(rule(output="{email}"))]
    identity = {**ALICE, "email": None}
    outcome = load_mapping_documents(documents).map([identity])
    assert outcome.local_user is None
    assert "output '{email}'" in outcome.trace[0].reason


# ---------------------------------------------------------------- precedence

BOB = {"id": "b0b0b0b0-0000-0000-0000-000000000001", "username": "bob@lab.org", "status": "used"}


def test_document_order_wins_over_rule_order():
    documents = [
        expression(rule(source="{username}", match="bob@lab\\.org", output="from-doc0")),
        expression(rule(output="from-doc1")),
    ]
    assert mapped(documents, [ALICE, BOB]) == "from-doc0"


def test_rule_order_wins_over_identity_order():
    documents = [
        expression(
            rule(source="{username}", match="bob@lab\\.org", output="bob-rule0"),
            rule(output="alice-rule1"),
        )
    ]
    outcome = load_mapping_documents(documents).map([ALICE, BOB])
    assert outcome.local_user == "bob-rule0"
    assert outcome.matched_identity is BOB


def test_identity_order_decides_within_a_rule():
    documents = [expression(rule(match="(.*)@.*", output="{0}"))]
    assert mapped(documents, [BOB, ALICE]) == "bob"
    assert mapped(documents, [ALICE, BOB]) == "alice"


def test_first_match_stops_evaluation_unless_exhaustive():
    documents = [expression(rule(match="(.*)@.*", output="{0}")), expression(rule())]
    mapper = load_mapping_documents(documents)
    quick = mapper.map([ALICE, BOB])
    assert [step.matched for step in quick.trace] == [True]
    full = mapper.map([ALICE, BOB], exhaustive=True)
    assert full.local_user == quick.local_user == "alice"
    assert [(s.document, s.identity, s.matched) for s in full.trace] == [
        (0, 0, True),
        (0, 1, True),
        (1, 0, True),
        (1, 1, False),
    ]
    assert full.candidates() == [
        {ALICE["id"]: ["alice"], BOB["id"]: ["bob"]},
        {ALICE["id"]: ["alice"]},
    ]


def test_explain_lines_say_why():
    documents = [expression(rule(match="(.*)@lab\\.org", output="{0}"))]
    lines = load_mapping_documents(documents).map([ALICE, BOB], exhaustive=True).explain()
    assert lines[0].startswith("document 0 (expression) rule 0, identity 0 [alice@example.org]")
    assert "no match" in lines[0] and "does not match" in lines[0]
    assert "MATCH" in lines[1] and "output 'bob'" in lines[1]


# ---------------------------------------------------------------- external documents (faked)


class FakeRunner:
    """Stands in for identity.external.run_program; records what it was asked."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, document, identities, connector, gateway):
        self.calls.append((document, identities, connector, gateway))
        return self.answers.pop(0)


def external(**extra):
    return {"DATA_TYPE": EXTERNAL, "command": ["/opt/map"], **extra}


def test_external_answer_order_decides_and_all_identities_are_sent():
    runner = FakeRunner(ProgramAnswer(((BOB["id"], "bob"), (ALICE["id"], "alice"))))
    unused = {**ALICE, "id": "c-1", "status": "unused"}
    mapper = load_mapping_documents([external()], runner=runner, storage_gateway="gw")
    outcome = mapper.map([ALICE, BOB, unused])
    assert outcome.local_user == "bob"
    assert outcome.matched_identity is BOB
    _, sent, connector, gateway = runner.calls[0]
    assert [i["id"] for i in sent] == [ALICE["id"], BOB["id"], "c-1"]
    assert (connector, gateway) == ("145812c8-decc-41f1-83cf-bb2a85a2a70b", "gw")


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (ProgramAnswer(error="no answer within 5 s; killed"), "killed"),
        (ProgramAnswer(()), "no identity mapped"),
        (ProgramAnswer((("someone-else", "mallory"),)), "not in the input"),
    ],
)
def test_external_failure_yields_no_match_and_later_documents_still_apply(answer, words):
    mapper = load_mapping_documents([external(), expression(rule())], runner=FakeRunner(answer))
    outcome = mapper.map([ALICE])
    assert outcome.local_user == "alice"
    first = outcome.trace[0]
    assert (first.document, first.kind, first.matched) == (0, "external", False)
    assert words in first.reason


def test_expression_document_before_external_means_the_program_is_not_run():
    runner = FakeRunner()
    mapper = load_mapping_documents([expression(rule()), external()], runner=runner)
    assert mapper.map([ALICE]).local_user == "alice"
    assert runner.calls == []


def test_an_external_document_without_a_runner_is_a_trace_not_a_crash():
    from identity.mapping import ExternalDocument, Mapper

    mapper = Mapper((ExternalDocument(0, ("/bin/true",)),), (), "gw")
    outcome = mapper.map([{"id": "a", "username": "a@x.org", "status": "used"}])
    assert outcome.local_user is None
    assert "no program runner" in outcome.trace[0].reason
