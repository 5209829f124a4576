"""Each step of the rendering pipeline, in order, and attempts to escape it.

A user's options must either stay plain values in the rendered config or be
refused with a clear message; they never change its structure.
"""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from templates import quoting, rendering
from templates.rendering import Rendered, RenderError, render_user_config, sandbox, shell_escape

IDENTITY = {
    "local": {
        "uname": "bob",
        "uid": 2001,
        "gid": 2001,
        "groups": [2001, 100],
        "gecos": "Bob\nhigh_assurance: true",
        "shell": "/bin/sh",
        "dir": "/home/bob",
    },
    "globus": {"id": "0b0b0b0b-0000-4000-8000-000000000001"},
}
ENGINE = "engine:\n  type: ThreadPoolEngine\n"


def run(template: str, options: dict, schema: dict | None = None, **kw):
    kw.setdefault("user_runtime", {"python": {"version": "3.11.7"}})
    kw.setdefault("mapped_identity", IDENTITY)
    kw.setdefault("parent_config", {"display_name": "site", "high_assurance": False})
    return render_user_config(template, schema, options, **kw)


def ok(template: str, options: dict, **kw) -> Rendered:
    outcome = run(template, options, **kw)
    assert isinstance(outcome, Rendered), outcome
    return outcome


def refused(template: str, options: dict, step: str, **kw) -> RenderError:
    outcome = run(template, options, **kw)
    assert isinstance(outcome, RenderError), outcome
    assert outcome.step == step, outcome
    assert outcome.user_message and outcome.admin_message
    return outcome


# ---- the order of the steps ----------------------------------------------------------


def test_reserved_names_are_refused_before_the_schema_runs():
    schema = {"type": "object", "additionalProperties": False}
    for name in ("_GC", "parent_config", "user_runtime", "mapped_identity"):
        error = refused(ENGINE, {name: "x"}, "reserved", schema=schema)
        assert error.user_message == (
            f"'{name}' is a reserved word and cannot be passed in user_endpoint_config"
        )


def test_jinja_globals_cannot_be_shadowed():
    error = refused(ENGINE + "{% for i in range(2) %}{% endfor %}", {"range": 3}, "reserved")
    assert "'range' is a reserved word" in error.user_message


def test_schema_sees_raw_values_before_quoting():
    schema = {"properties": {"q": {"const": "debug"}, "n": {"maxLength": 3}}}
    assert ok(ENGINE + "display_name: {{ q }}\n", {"q": "debug", "n": "abc"}, schema=schema)
    error = refused(ENGINE, {"q": '"debug"'}, "schema", schema=schema)
    assert error.user_message.startswith("user_endpoint_config.q: 'debug' was expected")


def test_schema_error_message_names_the_path_and_counts_the_rest():
    schema = {
        "type": "object",
        "properties": {"jobs": {"type": "array", "items": {"type": "integer"}}},
        "required": ["account"],
    }
    error = refused(ENGINE, {"jobs": [1, "two", "three"]}, "schema", schema=schema)
    assert error.user_message.startswith("user_endpoint_config")
    assert "more problems" in error.user_message


def test_walltime_schema_message_matches_the_contract():
    schema = {"properties": {"walltime": {"type": "string", "pattern": r"^\d{2}:\d{2}:\d{2}$"}}}
    error = refused(ENGINE, {"walltime": "99:00:00 "}, "schema", schema=schema)
    assert error.user_message == (
        "user_endpoint_config.walltime: '99:00:00 ' does not match '^\\\\d{2}:\\\\d{2}:\\\\d{2}$'"
    )


def test_an_invalid_schema_is_the_admins_problem():
    error = refused(ENGINE, {}, "schema", schema={"type": "no-such-type"})
    assert "contact the endpoint administrator" in error.user_message
    assert "schema is invalid" in error.admin_message


def test_empty_schema_means_no_validation():
    assert ok(ENGINE, {"anything": [1, {"x": None}]}, schema={})
    assert ok(ENGINE, {"anything": 1}, schema=True)


def test_a_false_schema_refuses_every_option():
    assert refused(ENGINE, {"a": 1}, "schema", schema=False).user_message.startswith(
        "user_endpoint_config: "
    )


def test_missing_option_message():
    error = refused(ENGINE + "display_name: {{ account }}\n", {}, "template")
    assert error.user_message == "template needs option 'account', which was not given"
    nested = refused(ENGINE + "display_name: {{ job.account }}\n", {"job": {}}, "template")
    assert nested.user_message == "template needs a value for 'account', which was not given"


def test_template_syntax_error_is_reported_to_the_admin_with_the_line():
    error = refused(ENGINE + "x: {% if %}\n", {}, "template")
    assert "contact the endpoint administrator" in error.user_message
    assert "line 3" in error.admin_message


def test_yaml_step_reports_invalid_output():
    error = refused(ENGINE + "display_name: '{{ name }}\n", {"name": "x"}, "yaml")
    assert "invalid YAML" in error.user_message and "line" in error.admin_message


def test_a_quote_that_would_end_the_admins_quoting_is_a_structure_refusal():
    error = refused(ENGINE + "display_name: '{{ name }}'\n", {"name": "it's"}, "structure")
    assert "'name'" in error.user_message and "template line 3" in error.admin_message


def test_absurdly_nested_yaml_is_refused_not_raised():
    template = ENGINE + "display_name: " + "[" * 5000 + "]" * 5000 + "\n"
    assert "recursion" in refused(template, {}, "yaml").admin_message


def test_high_assurance_in_a_template_is_refused():
    error = refused(ENGINE + "high_assurance: false\n", {}, "high_assurance")
    assert "contact the endpoint administrator" in error.user_message


def test_high_assurance_manager_forces_it_into_the_config():
    out = ok(ENGINE, {}, parent_config={"high_assurance": True})
    assert out.yaml_text.startswith("high_assurance: true\n")
    assert out.config.high_assurance is True


def test_config_step_names_the_key_path():
    template = "engine:\n  type: GlobusComputeEngine\n  provider:\n    type: SlurmProvider\n    walltime: {{ w }}\n"
    error = refused(template, {"w": 3600}, "config")
    assert error.user_message.startswith(
        "invalid user endpoint config: engine.provider.walltime: SlurmProvider expects str"
    )


# ---- injection through values and keys ----------------------------------------------

INJECTIONS = [
    "x\nhigh_assurance: true",
    "x\nengine:\n  type: ProcessPoolEngine",
    '"\nallowed_functions: []\n"',
    "'; rm -rf ~ #",
    "{{ 7 * 7 }}",
    "{% raw %}{{ _GC }}{% endraw %}",
    "!!python/object/apply:os.system ['id']",
    "&anchor x",
    "*alias",
    "- a\n- b",
    "key: {nested: [1, 2]}",
    "\u2028line separator\u0085next line",
    "emoji \U0001f600 and \U00010348",
    "tab\tand\rcarriage\x00nul\x1b[31m",
    "#comment",
    "---\n...\n",
    "\\u0041 \\n backslashes \\",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_injected_values_stay_one_plain_string(value):
    out = ok(ENGINE + "display_name: {{ v }}\nendpoint_setup: {{ v }}\n", {"v": value})
    assert out.config.display_name == value
    assert out.config.endpoint_setup == value
    assert out.config.high_assurance is False
    assert out.config.engine.type == "ThreadPoolEngine"


@pytest.mark.parametrize("key", INJECTIONS)
def test_injected_dict_keys_stay_plain_strings(key):
    """Keys are quoted too: an admin loop over a user's mapping cannot be broken out of."""
    template = (
        ENGINE
        + "paths:\n  endpoint_dir: {{ d[k] }}\n"
        + "display_name: {% for name, value in d.items() %}{{ name }}{% endfor %}\n"
    )
    out = ok(template, {"d": {key: "v"}, "k": key})
    assert out.config.display_name == key
    assert out.config.paths.endpoint_dir == "v"
    assert out.config.high_assurance is False


def test_whole_mappings_and_lists_render_as_yaml_flow_not_python_repr():
    data = {"a\nb: c": ["x", 1, 2.5, True, None, {"k": "v\n"}], "e": 1e20}
    out = ok(
        "engine:\n  type: GlobusComputeEngine\n  job_status_kwargs: {{ jsk }}\n"
        "  available_accelerators: {{ acc }}\n",
        {"jsk": {"strategy_period": 0.5, "max_idletime": 1e20}, "acc": ["0", "1\n"]},
    )
    assert out.config.engine.options["job_status_kwargs"] == {
        "strategy_period": 0.5,
        "max_idletime": 1e20,
    }
    assert out.config.engine.options["available_accelerators"] == ["0", "1\n"]
    assert yaml.safe_load(str(quoting.quote_value(data))) == data


EVIL = 'a", evil: "1\' , x: y\n- z'


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("d | dictsort", [["k", EVIL]]),
        ("d.items() | list", [["k", EVIL]]),
        ("d.keys() | list", ["k"]),
        ("d.values() | list", [EVIL]),
        ("[v, v]", [EVIL, EVIL]),
        ("(v, 1, none, true, 2.5)", [EVIL, 1, None, True, 2.5]),
        ("{'k': v, v: [v]}", {"k": EVIL, EVIL: [EVIL]}),
        ("[v] | map('upper') | list", [EVIL.upper()]),
        ("['plain', 'admin: text']", ["plain", "admin: text"]),
    ],
)
def test_collections_made_in_the_template_print_as_safe_yaml(expression, expected):
    """Python repr would let a comma or colon in a user's text make YAML structure."""
    context = quoting.quote_options({"v": EVIL, "d": {"k": EVIL}})
    text = sandbox().from_string("{{ " + expression + " }}").render(context)
    parsed = yaml.safe_load(text)
    if "upper" in expression:
        assert parsed == [quoting.quote(EVIL).upper()]
    else:
        assert parsed == expected


def test_tojson_gives_the_submitters_original_data():
    out = ok(ENGINE + "display_name: {{ d | tojson | tojson }}\n", {"d": {"a": ["x", None]}})
    assert json.loads(out.config.display_name) == {"a": ["x", None]}


def test_raw_key_lookup_membership_and_get_work_on_quoted_mappings():
    template = (
        ENGINE + "display_name: {{ d.account }}\nendpoint_setup: {{ d['queue'] }}\n"
        "endpoint_teardown: {{ d.get('x', '\"-\"') }}\ndebug: {{ 'account' in d }}\n"
    )
    out = ok(template, {"d": {"account": "a", "queue": "q"}})
    assert (out.config.display_name, out.config.endpoint_setup) == ("a", "q")
    assert out.config.endpoint_teardown == "-"
    assert out.config.debug is True


def test_quoted_values_compare_like_upstream():
    template = ENGINE + "debug: {{ queue == '\"debug\"' }}\n"
    assert ok(template, {"queue": "debug"}).config.debug is True


def test_user_null_renders_as_yaml_null_and_numbers_stay_numbers():
    out = ok(ENGINE + "display_name: {{ n }}\nheartbeat_period: {{ p }}\n", {"n": None, "p": 7.5})
    assert out.config.display_name is None and out.config.heartbeat_period == 7.5


def test_gecos_is_quoted_because_users_can_set_it():
    out = ok(ENGINE + "display_name: {{ _GC.mapped_identity.local.gecos }}\n", {})
    assert out.config.display_name == IDENTITY["local"]["gecos"]
    assert out.config.high_assurance is False


def test_gc_variables_and_their_legacy_names():
    template = (
        ENGINE
        + 'display_name: "{{ _GC.mapped_identity.local.uname }}-{{ mapped_identity.local.uid }}'
        '-{{ _GC.parent_config.display_name }}-{{ parent_config.display_name }}"\n'
        "endpoint_setup: {{ _GC.user_runtime.python.version }}\n"
        "endpoint_teardown: {{ user_runtime.python.version }}\n"
        "paths: {endpoint_log: {{ _GC.env.SITE }}}\n"
    )
    out = ok(template, {}, env={"SITE": "x: y"})
    assert out.config.display_name == "bob-2001-site-site"
    assert out.config.endpoint_setup == out.config.endpoint_teardown == "3.11.7"
    assert out.config.paths.endpoint_log == "x: y"


def test_user_runtime_strings_are_quoted():
    out = ok(
        ENGINE + "display_name: {{ _GC.user_runtime.platform.node }}\n",
        {},
        user_runtime={"platform": {"node": "n\nhigh_assurance: true"}},
    )
    assert out.config.display_name == "n\nhigh_assurance: true"


def test_includes_come_from_the_templates_directory(tmp_path):
    (tmp_path / "engine.j2").write_text(ENGINE + "  max_workers: {{ w }}\n")
    (tmp_path / "huge.j2").write_text("#" * (rendering.MAX_INCLUDE_BYTES + 1))
    out = ok("{% include 'engine.j2' %}", {"w": 2}, include_dir=str(tmp_path))
    assert out.config.engine.options == {"max_workers": 2}
    for escape in ("/etc/passwd", "../etc/passwd", "huge.j2"):
        error = refused(f"{{% include '{escape}' %}}", {}, "template", include_dir=str(tmp_path))
        assert "TemplateNotFound" in error.admin_message or "larger" in error.admin_message
    error = refused("{% include 'engine.j2' %}", {"w": 1}, "template")
    assert "no loader" in error.admin_message


# ---- the sandbox ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "v.__class__",
        "v.__class__.__mro__",
        "''.__class__.__mro__[1].__subclasses__()",
        "d.items.__self__",
        "v | attr('__class__')",
        "'{0.__class__.__mro__}'.format(v)",
        "fmt.format(v)",
        "'{a.__class__}'.format_map(d)",
        "lipsum.__globals__",
        "cycler.__init__.__globals__",
        "v._raw",
    ],
)
def test_sandbox_escapes_are_refused(expression):
    template = ENGINE + "display_name: {{ " + expression + " }}\n"
    outcome = run(template, {"v": "x", "d": {"a": "b"}, "fmt": "{0.__class__.__mro__}"})
    assert isinstance(outcome, RenderError), outcome
    assert outcome.step == "template"
    assert "refused an unsafe operation" in outcome.user_message, outcome
    assert "SecurityError" in outcome.admin_message


@pytest.mark.parametrize("expression", ["d._raw", "(v ~ '').format.__self__"])
def test_internals_the_sandbox_hides_are_simply_absent(expression):
    template = ENGINE + "display_name: {{ " + expression + " }}\n"
    outcome = run(template, {"v": "x", "d": {"a": "b"}})
    assert isinstance(outcome, RenderError) and outcome.step == "template", outcome
    assert "which was not given" in outcome.user_message


def test_user_strings_are_never_evaluated_as_templates():
    out = ok(ENGINE + "display_name: {{ v }}\n", {"v": "{{ ''.__class__.__mro__ }}"})
    assert out.config.display_name == "{{ ''.__class__.__mro__ }}"


def test_huge_repetition_and_powers_are_refused():
    error = refused(ENGINE + "display_name: {{ '-' * n }}\n", {"n": 10**12}, "template")
    assert "unsafe" in error.user_message
    refused(ENGINE + "display_name: {{ 2 ** n }}\n", {"n": 10**9}, "template")


def test_huge_output_is_refused():
    template = (
        ENGINE + "{% for i in range(100000) %}{% for j in range(100) %}x{% endfor %}{% endfor %}"
    )
    error = refused(template, {}, "template")
    assert "larger than" in error.admin_message


# ---- the input step -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"a": {1, 2}}, "a set is not a valid option type"),
        ({"a": (1, 2)}, "a tuple is not a valid option type"),
        ({"a": b"x"}, "a bytes is not a valid option type"),
        ({"a": object()}, "not a valid option type"),
        ({"a": float("nan")}, "not a number JSON can carry"),
        ({"a": float("inf")}, "not a number JSON can carry"),
        ({"a": 10**30}, "integer too large"),
        ({"a": {1: "x"}}, "is not a string"),
        ({"a": "\ud800"}, "not valid Unicode"),
        ({"a": "x" * (quoting.MAX_SIZE + 1)}, "too large"),
        ({"a": [0] * (quoting.MAX_SIZE + 1)}, "too large"),
    ],
)
def test_non_json_or_oversized_options_are_refused(options, fragment):
    error = refused(ENGINE, options, "input")
    assert fragment in error.user_message


def test_deep_nesting_is_refused_without_recursion():
    deep: list = []
    for _ in range(200_000):
        deep = [deep]
    error = refused(ENGINE, {"a": deep}, "input")
    assert "nested deeper than" in error.user_message


def test_options_must_be_an_object():
    assert refused(ENGINE, ["a"], "input").user_message.startswith("user_endpoint_config must be")


# ---- shell_escape -------------------------------------------------------------------


def test_shell_escape_quotes_the_users_text_for_a_shell():
    out = ok(ENGINE + "endpoint_setup: {{ cmd | shell_escape }}\n", {"cmd": "a b; rm -rf ~'\n"})
    assert out.config.endpoint_setup == "'a b; rm -rf ~'\"'\"'\n'"
    assert shell_escape(5) == 5
    assert shell_escape('"plain"') == '"plain"'
    assert shell_escape("two words") == "\"'two words'\""


# ---- property: any JSON value round-trips as the same value -------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(value=json_values, key=st.text())
def test_any_json_value_renders_back_to_itself(value, key):
    out = run(
        ENGINE + "debug: false\ndisplay_name: {{ v }}\nendpoint_setup: {{ k }}\n",
        {"v": value, "k": key},
    )
    if isinstance(value, str | type(None)):
        assert isinstance(out, Rendered), out
        assert out.config.display_name == value
    else:
        assert isinstance(out, Rendered | RenderError)
        if isinstance(out, RenderError):
            assert out.step == "config"
    if isinstance(out, Rendered):
        assert out.config.endpoint_setup == key
        assert yaml.safe_load(str(quoting.quote_value(value))) == value or value == {}


@settings(max_examples=150, deadline=None)
@given(key=st.text(), value=json_values)
def test_any_dict_key_stays_one_plain_key(key, value):
    template = (
        ENGINE + "paths:\n  endpoint_dir: {% for k, v in d.items() %}{{ k }}{% endfor %}\n"
        "display_name: {{ d | tojson | tojson }}\n"
    )
    out = run(template, {"d": {key: value}})
    assert isinstance(out, Rendered), out
    assert out.config.paths.endpoint_dir == key
    assert json.loads(out.config.display_name) == {key: value}


def test_a_dict_key_longer_than_yaml_allows_implicitly_still_renders():
    """YAML caps implicit keys at 1024 characters (seen by the property above in CI)."""
    value = {"k" * 2000: None, "é̺" * 400: [1, {"x" * 1500: "y"}]}
    out = run(ENGINE + "display_name: {{ v }}\n", {"v": value})
    assert out.step == "config", out  # valid YAML; only not a string
    text = rendering.render_text(
        "v: {{ v }}", {"v": value}, user_runtime={}, mapped_identity=IDENTITY, parent_config={}
    )
    assert yaml.safe_load(text)["v"] == value
