"""The GCS expression dialect, rule by rule, as tables."""

from __future__ import annotations

import pytest

from identity.dialect import (
    DialectError,
    MissingValue,
    compile_match,
    interpolate,
    nested_repetition,
    references,
)

# (match expression, source, should it match?)
MATCHES = [
    # the whole source must match (anchored at both ends)
    ("alice", "alice", True),
    ("alice", "alice2", False),
    ("alice", "xalice", False),
    ("alice", "alice\n", False),
    # . is any single character
    ("a.c", "abc", True),
    ("a.c", "ac", False),
    # ? is zero or one of the preceding
    ("ab?c", "ac", True),
    ("ab?c", "abc", True),
    ("ab?c", "abbc", False),
    # * is zero or more of the preceding
    ("ab*c", "ac", True),
    ("ab*c", "abbbc", True),
    # | separates alternatives; the whole expression stays anchored
    ("(alice|bob)@example\\.org", "bob@example.org", True),
    ("(alice|bob)@example\\.org", "carol@example.org", False),
    ("alice|bob", "alice", True),
    ("alice|bob", "bob", True),
    ("alice|bob", "alicebob", False),
    ("alice|bob", "alice2", False),
    # ( ) group
    ("(ab)*", "ababab", True),
    ("(ab)*", "aba", False),
    # backslash escapes the specials
    ("a\\.c", "a.c", True),
    ("a\\.c", "abc", False),
    ("a\\?", "a?", True),
    ("a\\*", "a*", True),
    ("a\\|b", "a|b", True),
    ("\\(x\\)", "(x)", True),
    ("a\\\\b", "a\\b", True),
    # \digit passes through as a back reference, as in GCS
    ("(a|b)\\1", "aa", True),
    ("(a|b)\\1", "ab", False),
    # ^ $ + { } [ ] are ordinary characters
    ("a+b", "a+b", True),
    ("a+b", "aab", False),
    ("^a$", "^a$", True),
    ("^a$", "a", False),
    ("x{2}", "x{2}", True),
    ("x{2}", "xx", False),
    ("[ab]", "[ab]", True),
    ("[ab]", "a", False),
    # other characters are literal, case-sensitive by default
    ("Alice", "alice", False),
    ("a-b_c/d e", "a-b_c/d e", True),
    # an escaped backslash before ^ leaves ^ literal (GCS turns it into an anchor)
    ("a\\\\^", "a\\^", True),
    # an escaped * may be made optional (GCS rejects this by mistake)
    ("a\\*?", "a", True),
    ("a\\*?", "a*", True),
]


@pytest.mark.parametrize(("expression", "source", "expected"), MATCHES)
def test_match_expression(expression, source, expected):
    assert bool(compile_match(expression).fullmatch(source)) is expected


# (match expression, words the error must contain)
REJECTED = [
    ("a\\d", "invalid escape '\\d'"),
    ("a\\w+", "invalid escape '\\w'"),
    ("\\^", "invalid escape '\\^'"),
    ('\\"', "invalid escape"),
    ("a\\", "trailing"),
    ("*a", "leading wildcard '*'"),
    ("?a", "leading wildcard '?'"),
    ("a*?", "may not follow"),
    ("a??", "may not follow"),
    ("a**", "may not follow"),
    ("(?i)a", "nothing to repeat"),
    ("a|*b", "nothing to repeat"),
    ("a)", "closes nothing"),
    (")a(", "closes nothing"),
    ("(a", "unclosed"),
]


@pytest.mark.parametrize(("expression", "words"), REJECTED)
def test_rejected_expressions(expression, words):
    with pytest.raises(DialectError) as raised:
        compile_match(expression)
    assert words in str(raised.value)
    assert repr(expression) in str(raised.value)


LITERAL = [
    ("a.c", "a.c", True),
    ("a.c", "abc", False),
    ("(a|b)*", "(a|b)*", True),
    ("a\\.b", "a\\.b", True),
    ("a\\.b", "a.b", False),
    ("*leading", "*leading", True),
]


@pytest.mark.parametrize(("expression", "source", "expected"), LITERAL)
def test_literal_match_is_plain_equality(expression, source, expected):
    assert bool(compile_match(expression, literal=True).fullmatch(source)) is expected


def test_literal_accepts_what_the_dialect_rejects_and_has_no_groups():
    assert compile_match("a\\d(", literal=True).groups == 0


@pytest.mark.parametrize(
    ("expression", "source", "ignore_case", "expected"),
    [
        ("Alice@Example\\.org", "alice@EXAMPLE.ORG", True, True),
        ("Alice@Example\\.org", "alice@EXAMPLE.ORG", False, False),
        ("(a)b", "AB", True, True),
    ],
)
def test_ignore_case(expression, source, ignore_case, expected):
    pattern = compile_match(expression, ignore_case=ignore_case)
    assert bool(pattern.fullmatch(source)) is expected


def test_ignore_case_with_literal():
    assert compile_match("A.B", literal=True, ignore_case=True).fullmatch("a.b")


def test_groups_are_numbered_from_zero_in_output():
    found = compile_match("(.*)@(.*)\\.org").fullmatch("alice@example.org")
    assert interpolate("{1}-{0}", {}, found.groups()) == "example-alice"


IDENTITY = {"id": "i-1", "username": "alice@example.org", "email": None, "age": 3}

INTERPOLATIONS = [
    ("{username}", "alice@example.org"),
    ("{id}:{username}", "i-1:alice@example.org"),
    ("plain", "plain"),
    ("\\{username}", "\\{username}"),
    ("\\\\{id}", "\\\\i-1"),
    ("{username}{username}", "alice@example.orgalice@example.org"),
]


@pytest.mark.parametrize(("template", "expected"), INTERPOLATIONS)
def test_interpolation(template, expected):
    assert interpolate(template, IDENTITY) == expected


@pytest.mark.parametrize(
    ("template", "groups", "words"),
    [
        ("{email}", (), "'email' is missing or null"),
        ("{organization}", (), "'organization' is missing or null"),
        ("{age}", (), "not a string"),
        ("{0}", (), "did not take part"),
        ("{1}", ("a", None), "did not take part"),
    ],
)
def test_interpolation_of_absent_values_raises_missing_value(template, groups, words):
    with pytest.raises(MissingValue) as raised:
        interpolate(template, IDENTITY, groups)
    assert words in str(raised.value)


def test_interpolated_values_are_not_interpolated_again():
    assert interpolate("{username}", {"username": "{id}", "id": "x"}) == "{id}"


def test_references_skip_escaped_braces():
    found = references("{username}\\{id}{0}{}")
    assert [(r.name, r.group) for r in found] == [("username", None), ("0", 0), ("", None)]


@pytest.mark.parametrize(
    ("expression", "nested"),
    [
        ("(.*)*", True),
        ("(a*)*x", True),
        ("((a*)b)*", True),
        ("(a|b*)*", True),
        ("(.*)", False),
        ("(.*)?", False),
        ("(a)*", False),
        ("\\(a*\\)*", False),
    ],
)
def test_nested_repetition_is_detected(expression, nested):
    assert nested_repetition(expression) is nested
