"""Quoting user text for YAML: any text reads back as exactly itself."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from templates import quoting

no_surrogates = st.text(st.characters(exclude_categories=("Cs",)))


@settings(max_examples=400, deadline=None)
@given(text=no_surrogates)
def test_quoted_text_reads_back_exactly(text):
    quoted = quoting.quote(text)
    assert quoted.isascii()
    assert yaml.safe_load(f"k: {quoted}\n") == {"k": text}
    assert yaml.safe_load(f"- {quoted}\n") == [text]


def test_astral_characters_use_yaml_escapes_not_surrogate_pairs():
    assert quoting.quote("\U0001f600") == '"\\U0001f600"'
    assert quoting.quote("tab\t") == '"tab\\t"'


@settings(max_examples=100, deadline=None)
@given(key=no_surrogates, value=no_surrogates)
def test_quoted_mappings_find_raw_and_quoted_keys(key, value):
    mapping = quoting.quote_value({key: value})
    assert mapping[key] == quoting.quote(value)
    assert key in mapping and mapping.get(key) == mapping[key]
    (quoted_key,) = mapping
    assert mapping[quoted_key] == mapping[key]
    assert quoting.unquote(mapping) == {key: value}
    assert yaml.safe_load(str(mapping)) == {key: value}


def test_floats_keep_their_type_through_yaml():
    for number in (1e20, 1e-7, 0.5, -3.0, 12345678901234567890.0):
        assert yaml.safe_load(str(quoting.quote_value(number))) == number
    assert yaml.safe_load(str(quoting.quote_value([None, True, 1]))) == [None, True, 1]


def test_the_raw_text_is_private_to_python():
    value = quoting.QuotedStr("x")
    assert value == '"x"' and quoting.unquote(value) == "x"
    assert quoting.unquote(quoting.NULL) is None
