"""A submitter's value can never add a key, cut the admin's text or change the YAML structure.

The case from the report: ``worker_init: source env-{{ worker_init }}`` inside a
flow mapping, with ``x, max_blocks: 99`` (a sibling key appeared) and ``a #x``
(the admin's text was cut short). For every template context and every hostile
value, a config either renders with the admin's keys and the value intact, or
is refused; it never renders with a structure the admin did not write.
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from templates import quoting, structure
from templates.errors import ConfigError
from templates.located_yaml import load_located, plain
from templates.rendering import RenderError, render_text, render_user_config

HOSTILE = [
    "x, max_blocks: 99",
    "a #x",
    "a\nmax_blocks: 99",
    "a: b",
    "a,b",
    "a}",
    "a]",
    "a} , max_blocks: 99, b: {",
    "&anchor a",
    "*alias",
    "!!python/object:os.system",
    "- item",
    "'quoted' a",
    'double " quote',
    "a\tb",
    "{a: 1}",
    "[1, 2]",
    "%TAG ! tag:x",
    "--- \n...",
    "| literal",
    "> folded",
    "?",
    "@x",
    "`x`",
    "\\",
    "",
]
# Contexts: (template line under "probe:", how to read back what the admin wrote).
CONTEXTS = {
    "a whole value": "probe: {{ v }}\n",
    "flow mapping, text before": "probe: {a: 1, b: env-{{ v }}, c: 3}\n",
    "flow mapping, text after": "probe: {a: 1, b: {{ v }}-suffix, c: 3}\n",
    "flow sequence, text before": "probe: [1, x-{{ v }}, 3]\n",
    "block, text before": "probe:\n  a: 1\n  b: source {{ v }} && module load x\n  c: 3\n",
    "single-quoted by the admin": "probe: {a: 1, b: 'source {{ v }}', c: 3}\n",
    "a block scalar": "probe:\n  b: |\n    source {{ v }}\n  c: 3\n",
    "a key": "probe: {a: 1, {{ v }}: 2}\n",
}
ENGINE = "engine: {type: ThreadPoolEngine}\n"


def text_of(template: str, options: dict, **given) -> str | RenderError:
    """Rendered and checked, not loaded as a config (``probe`` is no config key)."""
    context = {"user_runtime": {}, "mapped_identity": {}, "parent_config": {}, **given}
    return render_text(ENGINE + template, options, **context)


def render(context: str, value: str) -> str | RenderError:
    return text_of(CONTEXTS[context], {"v": value})


def probe_of(text: str) -> dict | list | str:
    """The probe as the config loader reads it (which refuses duplicate keys and bad YAML)."""
    return plain(load_located(text)["probe"])


def admin_shape(context: str):
    """The probe's structure with an inert value: what the admin wrote."""
    shaped = yaml.safe_load(ENGINE + CONTEXTS[context].replace("{{ v }}", '"inert"'))["probe"]
    return _shape(shaped)


def _shape(value):
    if isinstance(value, dict):
        return {k if k in ("a", "b", "c") else "<key>": _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_the_reported_case_is_refused_and_tells_the_admin_where():
    template = (
        "engine:\n  type: GlobusComputeEngine\n"
        "  provider: {type: LocalProvider, worker_init: source env-{{ worker_init }}}\n"
    )
    for value in ("x, max_blocks: 99", "a #x"):
        out = render_user_config(
            template,
            None,
            {"worker_init": value},
            user_runtime={},
            mapped_identity={},
            parent_config={},
        )
        assert isinstance(out, RenderError), out.yaml_text
        assert out.step in ("structure", "yaml"), out
        if out.step == "structure":
            assert "'worker_init'" in out.user_message and "administrator" in out.user_message
            assert "template line 3" in out.admin_message
            assert "worker_init: source env-" in out.admin_message


def leaf(context: str, probe):
    """Where the value went, and what the admin's text makes of it there."""
    if context == "a whole value":
        return probe, lambda v: v
    if context == "flow sequence, text before":
        return probe[1], lambda v: "x-" + quoting.quote(v)
    if context == "block, text before":
        return probe["b"], lambda v: f"source {quoting.quote(v)} && module load x"
    if context == "a block scalar":
        return probe["b"], lambda v: f"source {quoting.quote(v)}\n"
    if context == "flow mapping, text after":
        return probe["b"], lambda v: quoting.quote(v) + "-suffix"
    if context == "single-quoted by the admin":  # where YAML reads '' as ': the value's own text
        return probe["b"], lambda v: ("source " + quoting.quote(v)).replace("''", "'")
    return probe["b"], lambda v: "env-" + quoting.quote(v)


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("value", HOSTILE)
def test_a_value_renders_intact_in_the_admins_structure_or_not_at_all(context, value):
    check_intact_or_refused(context, value)


def check_intact_or_refused(context: str, value: str) -> None:
    out = render(context, value)
    if isinstance(out, RenderError):
        assert out.step == "structure", out
        return
    try:
        probe = probe_of(out)
    except ConfigError:
        return  # invalid YAML, a key written twice: render_user_config refuses it
    if context == "a key":  # the admin let the value name a key, beside "a"
        assert probe == {"a": 1, value: 2}, out
        return
    assert _shape(probe) == admin_shape(context), out
    found, expected = leaf(context, probe)
    assert found == expected(value), out


def test_a_whole_value_takes_any_text_exactly():
    for value in HOSTILE:
        out = render("a whole value", value)
        assert not isinstance(out, RenderError), (value, out)
        assert probe_of(out) == value


def test_text_beside_a_value_in_a_flow_mapping_refuses_what_would_add_keys():
    for value in ("x, max_blocks: 99", "a #x"):
        out = render("flow mapping, text before", value)
        assert isinstance(out, RenderError) and out.step == "structure", value
    with pytest.raises(ConfigError):  # refused at the yaml step of a full render
        probe_of(render("flow mapping, text before", "a} , max_blocks: 99, b: {"))
    out = render("flow mapping, text before", "prod")
    assert probe_of(out) == {"a": 1, "b": 'env-"prod"', "c": 3}


def test_a_comment_cannot_cut_the_admins_text_in_block_context():
    out = render("block, text before", "a #x")
    assert isinstance(out, RenderError) and out.step == "structure"
    fine = render("block, text before", "a,b}")
    assert probe_of(fine)["b"] == 'source "a,b}" && module load x'


def test_values_in_the_admins_own_comments_are_inert():
    out = text_of("# {{ v }} and more\n", {"v": "x, y: 1 #"})
    assert not isinstance(out, RenderError), out


def test_runtime_and_gecos_are_checked_like_options():
    out = text_of(
        "probe: {a: env-{{ _GC.user_runtime.node }}, b: 1}\n",
        {},
        user_runtime={"node": "x, b: 2"},
    )
    assert isinstance(out, RenderError) and out.step == "structure"
    out = text_of(
        "probe: {a: who-{{ _GC.mapped_identity.local.gecos }}, b: 1}\n",
        {},
        mapped_identity={"local": {"gecos": "Al, b: 2"}},
    )
    assert isinstance(out, RenderError) and out.step == "structure"


def test_a_macro_or_a_concatenation_carries_the_check_with_it():
    for template in (
        "{% macro env(x) %}env-{{ x }}{% endmacro %}probe: {a: {{ env(v) }}, c: 3}\n",
        'probe: {a: {{ "env-" ~ v }}, c: 3}\n',
        "{% set joined %}env-{{ v }}{% endset %}probe: {a: {{ joined }}, c: 3}\n",
    ):
        out = text_of(template, {"v": "x, max_blocks: 99"})
        assert isinstance(out, RenderError) and out.step == "structure", template


def test_the_marks_cannot_be_forged_and_a_template_cannot_hold_them():
    assert structure.OPEN not in quoting.quote(structure.OPEN + "x" + structure.CLOSE)
    out = render_user_config(
        ENGINE + f"# {structure.OPEN}\n",
        None,
        {},
        user_runtime={},
        mapped_identity={},
        parent_config={},
    )
    assert isinstance(out, RenderError) and out.step == "template"


SPECIAL = st.text(alphabet=st.sampled_from(list(",:#{}[]&*!-|>'\"%@`?\\ \nabc")), max_size=12)


@settings(max_examples=400, deadline=None)
@given(value=SPECIAL, context=st.sampled_from(sorted(CONTEXTS)))
def test_no_generated_value_changes_the_structure(value, context):
    check_intact_or_refused(context, value)
