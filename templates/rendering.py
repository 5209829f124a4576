"""Rendering an admin's template with a submitter's options into a user-endpoint config.

The steps run in a fixed order; any of them except quoting (which only ever
sees data step 1 admitted) stops the pipeline with a :class:`RenderError` that
speaks twice, to the submitter and to the admin:

1. ``input``: the options are a JSON object of bounded size and depth;
2. ``reserved``: no option may take a name the template reserves;
3. ``schema``: the options satisfy the admin's JSON schema (raw values);
4. ``quoting``: every string, dict keys included, becomes a quoted scalar;
5. ``template``: Jinja renders in a sandbox with ``StrictUndefined``;
6. ``yaml``: the output is parsed safely;
7. ``high_assurance``: the template did not set it (only the manager may);
8. ``config``: the result is a valid :class:`UserEndpointConfig`.

Pure: no files, no processes, no logging. The caller reads the files first and
logs ``admin_message``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import typing as t

import jinja2
import jsonschema
import yaml
from jinja2.exceptions import SecurityError
from jinja2.loaders import split_template_path
from jinja2.sandbox import SandboxedEnvironment

from templates import quoting, structure
from templates.errors import ConfigError
from templates.user_config import (
    UserEndpointConfig,
    parse_user_endpoint_yaml,
    user_endpoint_config_from_data,
)

RESERVED = frozenset({"_GC", "parent_config", "user_runtime", "mapped_identity"})
# Jinja's own globals; an option with one of these names would silently replace it.
SHADOWING = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace"})
MAX_RENDERED = 1 << 20
MAX_INCLUDE_BYTES = 1 << 20
MAX_POWER = 1 << 10
_ASK_ADMIN = "contact the endpoint administrator"


@dataclasses.dataclass(frozen=True)
class Rendered:
    yaml_text: str
    config: UserEndpointConfig


@dataclasses.dataclass(frozen=True)
class RenderError:
    """Why a config could not be produced: one message per audience, and the failing step."""

    user_message: str
    admin_message: str
    step: str


class _Sandbox(SandboxedEnvironment):
    """The Jinja sandbox, also refusing ``*`` and ``**`` results too large to be a config."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: t.Any, operator: str, left: t.Any, right: t.Any) -> t.Any:
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_POWER:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list) and isinstance(count, int)
                if sized and len(seq) * count > MAX_RENDERED:
                    raise SecurityError("repeated text is too large")
        return super().call_binop(context, operator, left, right)


def shell_escape(value: t.Any) -> t.Any:
    """``shlex.quote`` the text of a (quoted) string and quote the result again."""
    if not isinstance(value, str):
        return value
    if isinstance(value, quoting.QuotedStr):
        raw = quoting.unquote(value)
    else:
        try:
            raw = json.loads(value)
        except ValueError:
            raw = value
        if not isinstance(raw, str):
            raw = value
    return quoting.QuotedStr(shlex.quote(raw))


class _IncludeLoader(jinja2.FileSystemLoader):
    """Files of the template's directory, read by whoever renders (the user, in production).

    As upstream: a template can include what the mapped user can read there, and
    nothing else; each file at most ``MAX_INCLUDE_BYTES``.
    """

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple:
        for base in self.searchpath:
            path = os.path.join(base, *split_template_path(template))
            with contextlib.suppress(OSError):
                if os.stat(path).st_size > MAX_INCLUDE_BYTES:
                    raise jinja2.TemplateError(
                        f"{template} is larger than {MAX_INCLUDE_BYTES} bytes"
                    )
        return super().get_source(environment, template)


def _loader(include_dir: str | None) -> jinja2.BaseLoader | None:
    """Includes only if the directory can be listed (as upstream); otherwise none at all."""
    if include_dir and os.access(include_dir, os.R_OK | os.X_OK):
        return _IncludeLoader(include_dir, followlinks=False)
    return None


def sandbox(include_dir: str | None = None, minted: set[str] | None = None) -> SandboxedEnvironment:
    """The Jinja environment templates render in (files in ``include_dir`` serve includes).

    With ``minted`` (the quoted submitter strings of this render), every output
    marks where they land, for :func:`templates.structure.find_breakout`.
    """

    def finalize(value: t.Any) -> t.Any:
        return structure.mark(str(quoting.finalize(value)), minted or ())

    env = _Sandbox(
        undefined=jinja2.StrictUndefined,
        loader=_loader(include_dir),
        autoescape=False,
        finalize=quoting.finalize if minted is None else finalize,
    )
    env.filters["shell_escape"] = shell_escape
    env.policies["json.dumps_function"] = lambda obj, **kw: json.dumps(quoting.unquote(obj), **kw)
    return env


def _mapped_identity_view(mapped_identity: dict) -> dict:
    """Pass the password-database entry through, but quote ``gecos``: users can set it."""
    local = dict(mapped_identity.get("local") or {})
    if isinstance(local.get("gecos"), str):
        local["gecos"] = quoting.QuotedStr(local["gecos"])
    return {**mapped_identity, "local": local}


def _schema_step(schema: dict | bool | None, options: dict) -> RenderError | None:
    if schema is None or schema is True or schema == {}:
        return None
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return RenderError(
            f"the endpoint's user_endpoint_config schema is invalid; {_ASK_ADMIN}",
            f"user config schema is invalid: {_short(exc.message)} (at {exc.json_path})",
            "schema",
        )
    errors = list(validator_class(schema).iter_errors(options))
    if not errors:
        return None
    best = jsonschema.exceptions.best_match(errors)
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in best.absolute_path)
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    message = f"user_endpoint_config{where}: {_short(best.message)}{more}"
    return RenderError(message, f"user options rejected by the schema: {message}", "schema")


def _short(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _template_error(exc: Exception) -> RenderError:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return RenderError(
            f"the endpoint's config template is broken; {_ASK_ADMIN}",
            f"template syntax error, line {exc.lineno}: {exc.message}",
            "template",
        )
    if isinstance(exc, jinja2.UndefinedError):
        missing = re.fullmatch(r"'([^']*)' is undefined", str(exc))
        inner = re.search(r"has no attribute '([^']*)'", str(exc))
        if missing:
            user = f"template needs option '{missing[1]}', which was not given"
        elif inner:
            user = f"template needs a value for '{inner[1]}', which was not given"
        else:
            user = f"template needs an option that was not given ({_short(str(exc))})"
        return RenderError(user, f"template rendering: {_short(str(exc))}", "template")
    kind = "refused an unsafe operation" if isinstance(exc, SecurityError) else "failed"
    detail = f"({type(exc).__name__}) {_short(str(exc))}"
    return RenderError(
        f"the endpoint's config template {kind} with these options: {detail}; {_ASK_ADMIN}",
        f"template rendering {kind}: {detail}",
        "template",
    )


def _render(env: SandboxedEnvironment, text: str, context: dict) -> str:
    """Render, stopping as soon as the output is larger than any sane config."""
    chunks, size = [], 0
    for chunk in env.from_string(text).generate(context):
        size += len(chunk)
        if size > MAX_RENDERED:
            raise SecurityError(f"output is larger than {MAX_RENDERED} characters")
        chunks.append(chunk)
    return "".join(chunks)


def _context(
    options: dict,
    user_runtime: dict,
    mapped_identity: dict,
    parent_config: dict,
    env: t.Mapping[str, str] | None,
) -> dict:
    gc = {
        "parent_config": parent_config,
        "user_runtime": quoting.quote_value(user_runtime),
        "mapped_identity": _mapped_identity_view(mapped_identity),
        "env": quoting.quote_value({str(k): str(v) for k, v in (env or {}).items()}),
    }
    legacy = {name: gc[name] for name in ("parent_config", "user_runtime", "mapped_identity")}
    return {**quoting.quote_options(options), **legacy, "_GC": gc}


def render_user_config(
    template_text: str,
    schema: dict | bool | None,
    user_opts: dict,
    *,
    user_runtime: dict,
    mapped_identity: dict,
    parent_config: dict,
    env: t.Mapping[str, str] | None = None,
    include_dir: str | None = None,
) -> Rendered | RenderError:
    """Run the whole pipeline; never raises for bad input, returns a :class:`RenderError`.

    Files in ``include_dir`` serve ``{% include %}`` (read with the renderer's own
    permissions); ``env`` is offered to the template as ``_GC.env``.
    """
    try:
        quoting.check_options(user_opts)
        quoting.check_options(user_runtime, label="user_runtime")
    except quoting.OptionError as exc:
        return RenderError(str(exc), f"user options refused: {exc}", "input")
    taken = sorted((RESERVED | SHADOWING) & user_opts.keys())
    if taken:
        message = f"'{taken[0]}' is a reserved word and cannot be passed in user_endpoint_config"
        return RenderError(message, f"user options refused: {message}", "reserved")
    refused = _schema_step(schema, user_opts)
    if refused:
        return refused
    text = render_text(
        template_text,
        user_opts,
        user_runtime=user_runtime,
        mapped_identity=mapped_identity,
        parent_config=parent_config,
        env=env,
        include_dir=include_dir,
    )
    if isinstance(text, RenderError):
        return text
    return _load(text, bool(parent_config.get("high_assurance")))


def render_text(
    template_text: str,
    user_opts: dict,
    *,
    user_runtime: dict,
    mapped_identity: dict,
    parent_config: dict,
    env: t.Mapping[str, str] | None = None,
    include_dir: str | None = None,
) -> str | RenderError:
    """The rendered YAML text, once no submitted value changes its structure; not yet loaded."""
    if structure.OPEN in template_text or structure.CLOSE in template_text:
        return RenderError(
            f"the endpoint's config template is broken; {_ASK_ADMIN}",
            "the template holds the private-use characters U+E000/U+E001, which rendering uses",
            "template",
        )
    try:
        with quoting.minting() as minted:
            context = _context(user_opts, user_runtime, mapped_identity, parent_config, env)
            marked = _render(sandbox(include_dir, minted), template_text, context)
    except Exception as exc:
        return _template_error(exc)
    text, spans = structure.locate(marked)
    return _structure_error(text, spans, user_opts, template_text) or text


def _structure_error(text: str, spans: list, user_opts: dict, template: str) -> RenderError | None:
    """A submitted value that would change the config's structure, told twice.

    Invalid YAML is left to :func:`_load`, which says so.
    """
    try:
        breakout = structure.find_breakout(text, spans)
    except yaml.YAMLError:
        return None
    if breakout is None:
        return None
    names = [
        k for k, v in user_opts.items() if isinstance(v, str) and quoting.quote(v) in breakout.value
    ]
    named = f"the value of '{names[0]}'" if names else "a submitted value"
    lines = breakout.template_lines(template)
    where = f"template line {', '.join(map(str, lines))}" if lines else "the template"
    return RenderError(
        f"{named} cannot be used by this endpoint's template: it would change the structure"
        f" of the configuration; {_ASK_ADMIN}",
        f"{named} ({_short(breakout.value, 120)}) changes the structure of the rendered config at"
        f" line {breakout.line}: {_short(breakout.text.strip(), 200)!r}. {where} writes the"
        " value beside literal text where YAML reads commas, colons, braces, quotes or '#':"
        " write it as a whole value (key: {{ value }}), or in a block scalar",
        "structure",
    )


def _load(text: str, high_assurance: bool) -> Rendered | RenderError:
    try:
        data = parse_user_endpoint_yaml(text)
    except (ConfigError, RecursionError) as exc:
        return RenderError(
            f"the endpoint's config template produced invalid YAML with these options; {_ASK_ADMIN}",
            f"rendered config is not valid YAML: {exc}",
            "yaml",
        )
    if isinstance(data, dict) and "high_assurance" in data:
        return RenderError(
            f"Error generating the user endpoint config; {_ASK_ADMIN}",
            "the template sets high_assurance, which only the manager config may set",
            "high_assurance",
        )
    if high_assurance and isinstance(data, dict):
        text = "high_assurance: true\n" + text
        data["high_assurance"] = True
    try:
        config = user_endpoint_config_from_data(data)
    except ConfigError as exc:
        return RenderError(
            f"invalid user endpoint config: {exc}", f"rendered config is invalid: {exc}", "config"
        )
    except Exception as exc:
        return RenderError(
            f"the user endpoint config could not be checked; {_ASK_ADMIN}",
            f"checking the rendered config failed: ({type(exc).__name__}) {exc}",
            "config",
        )
    return Rendered(text, config)
