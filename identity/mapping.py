"""Globus-Connect-Server-compatible identity mapping: load documents, map an identity set.

Pure on purpose: no AMQP, no fork, no module state. The manager, the
``map-identity`` admin command and the tests all build a :class:`Mapper` from
the same JSON list admins already use with Globus Connect Server / Globus
Compute. External-program documents are the one impure part; they run through
an injectable ``runner`` (by default :func:`identity.external.run_program`,
imported only when such a document is actually evaluated).

Precedence is the official one: document order, then rule order, then
identity-set order (for an external program: the order of its answers); the
first match wins. Unlike the official mapper, an identity whose field used by
a rule is null is skipped for that rule instead of failing the whole document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from identity.dialect import (
    DialectError,
    MissingValue,
    compile_match,
    interpolate,
    nested_repetition,
    references,
)

EXPRESSION = "expression_identity_mapping"
EXTERNAL = "external_identity_mapping"
SUPPORTED_VERSION = "1.0.0"
POSIX_CONNECTOR_ID = "145812c8-decc-41f1-83cf-bb2a85a2a70b"
NIL_GATEWAY_ID = "00000000-0000-0000-0000-000000000000"
MAPPED_STATUSES = ("used", "private")
DEFAULT_TIMEOUT_S = 5.0
MAX_TIMEOUT_S = 300.0
KNOWN_FIELDS = frozenset(
    {
        "id",
        "sub",
        "username",
        "email",
        "name",
        "identity_provider",
        "identity_provider_display_name",
        "organization",
        "status",
        "identity_type",
    }
)
_RULE_KEYS = frozenset({"source", "match", "output", "ignore_case", "literal"})
_EXTERNAL_KEYS = frozenset({"DATA_TYPE", "command", "timeout_s", "run_as"})


class MappingConfigError(ValueError):
    """An identity-mapping configuration that cannot be used; says where and why."""

    def __init__(self, problem: str, *, index: int | None = None, field: str | None = None):
        self.index, self.field, self.problem = index, field, problem
        where = []
        if index is not None:
            where.append(f"document {index}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)


@dataclass(frozen=True)
class ExpressionRule:
    """One ``{source, match, output}`` rule, its pattern compiled once at load."""

    index: int
    source: str
    match: str
    output: str
    pattern: re.Pattern
    ignore_case: bool = False
    literal: bool = False


@dataclass(frozen=True)
class ExpressionDocument:
    index: int
    rules: tuple[ExpressionRule, ...]


@dataclass(frozen=True)
class ExternalDocument:
    """An admin's program that maps identities; GCS's argv/stdin/stdout contract."""

    index: int
    command: tuple[str, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    run_as: str | None = None


@dataclass(frozen=True)
class ProgramAnswer:
    """What an external program said: (identity id, output) pairs, or why it failed."""

    results: tuple[tuple[str, str], ...] = ()
    error: str | None = None


Runner = Callable[[ExternalDocument, list, str, str], ProgramAnswer]


@dataclass(frozen=True)
class TraceStep:
    """One attempt: a document (and rule) tried on an identity, and why it did or did not match."""

    document: int
    kind: str
    matched: bool
    reason: str
    rule: int | None = None
    identity: int | None = None
    identity_id: str | None = None
    username: str | None = None
    output: str | None = None

    def describe(self) -> str:
        if self.kind == "input":
            return f"identity {self.identity}: skipped: {self.reason}"
        where = f"document {self.document} ({self.kind})"
        if self.rule is not None:
            where += f" rule {self.rule}"
        if self.identity is not None:
            who = self.username or self.identity_id or "?"
            where += f", identity {self.identity} [{who}]"
        verdict = "MATCH" if self.matched else "no match"
        return f"{where}: {verdict}: {self.reason}"


@dataclass(frozen=True)
class MappingOutcome:
    """The first match (if any) and the trace of every attempt that led to it."""

    local_user: str | None
    matched_identity: dict | None
    trace: tuple[TraceStep, ...] = ()

    @property
    def matched_identity_id(self) -> str | None:
        if self.matched_identity is None:
            return None
        return self.matched_identity.get("id") or self.matched_identity.get("sub")

    def candidates(self) -> list[dict[str, list[str]]]:
        """Matches in the official shape: one ``{identity id: [outputs]}`` per matching rule."""
        grouped: dict[tuple, dict[str, list[str]]] = {}
        for step in self.trace:
            if step.matched and step.identity_id is not None:
                outputs = grouped.setdefault((step.document, step.rule), {})
                outputs.setdefault(step.identity_id, []).append(step.output)
        return list(grouped.values())

    def explain(self) -> list[str]:
        return [step.describe() for step in self.trace]


@dataclass(frozen=True)
class Mapper:
    """Loaded mapping documents; ``map`` is the only operation."""

    documents: tuple[ExpressionDocument | ExternalDocument, ...]
    warnings: tuple[str, ...] = ()
    storage_gateway: str = NIL_GATEWAY_ID
    connector: str = POSIX_CONNECTOR_ID
    runner: Runner | None = field(default=None, compare=False)

    def map(self, identity_set: Sequence, *, exhaustive: bool = False) -> MappingOutcome:
        """Map an identity set (submitter first) to a local user name.

        Stops at the first match unless ``exhaustive`` (what ``--explain``
        wants: every document tried, so the admin sees all that would match).
        """
        trace: list[TraceStep] = []
        identities = _identity_views(identity_set, trace)
        winner: tuple[str, dict] | None = None
        for document in self.documents:
            if isinstance(document, ExpressionDocument):
                steps = _evaluate_expression(document, identities)
            else:
                steps = self._evaluate_external(document, identities)
            for step in steps:
                trace.append(step)
                if step.matched and winner is None:
                    winner = (step.output, identity_set[step.identity])
                if winner is not None and not exhaustive:
                    return MappingOutcome(winner[0], winner[1], tuple(trace))
        if winner is None:
            return MappingOutcome(None, None, tuple(trace))
        return MappingOutcome(winner[0], winner[1], tuple(trace))

    def _evaluate_external(self, document: ExternalDocument, identities: list) -> list:
        runner = self.runner
        if runner is None:
            from identity.external import run_program

            runner = run_program
        valid = [(index, view) for index, view in identities if view is not None]
        answer = runner(document, [view for _, view in valid], self.connector, self.storage_gateway)
        return _external_steps(document, valid, answer)


def _identity_views(identity_set: Sequence, trace: list) -> list[tuple[int, dict | None]]:
    """Each identity as a dict with ``id`` (taken from ``sub`` when only that is present).

    Entries that are not identity objects are recorded in the trace and skipped.
    """
    views: list[tuple[int, dict | None]] = []
    for index, identity in enumerate(identity_set):
        problem = None
        if not isinstance(identity, dict):
            problem = f"not an identity object ({type(identity).__name__})"
        elif not isinstance(identity.get("id") or identity.get("sub"), str):
            problem = "identity has no string 'id' or 'sub'"
        if problem:
            trace.append(TraceStep(-1, "input", False, problem, identity=index))
            views.append((index, None))
            continue
        views.append((index, {**identity, "id": identity.get("id") or identity.get("sub")}))
    return views


def _evaluate_expression(document: ExpressionDocument, identities: list) -> list[TraceStep]:
    steps = []
    for rule in document.rules:
        for index, identity in identities:
            if identity is not None:
                steps.append(_try_rule(document.index, rule, index, identity))
    return steps


def _try_rule(document: int, rule: ExpressionRule, index: int, identity: dict) -> TraceStep:
    def step(matched: bool, reason: str, output: str | None = None) -> TraceStep:
        return TraceStep(
            document,
            "expression",
            matched,
            reason,
            rule=rule.index,
            identity=index,
            identity_id=identity["id"],
            username=_username(identity),
            output=output,
        )

    status = identity.get("status")
    if status not in MAPPED_STATUSES:
        return step(False, f"skipped: status {status!r} is not 'used' or 'private'")
    try:
        source = interpolate(rule.source, identity)
    except MissingValue as why:
        return step(False, f"skipped: source {rule.source!r}: {why}")
    found = rule.pattern.fullmatch(source)
    if found is None:
        return step(False, f"source {source!r} does not match {rule.match!r}")
    try:
        output = interpolate(rule.output, identity, found.groups())
    except MissingValue as why:
        return step(False, f"skipped: output {rule.output!r}: {why}")
    if not output:
        return step(False, f"source {source!r} matched but output {rule.output!r} is empty")
    return step(True, f"source {source!r} matches {rule.match!r}; output {output!r}", output)


def _external_steps(document: ExternalDocument, valid: list, answer: ProgramAnswer) -> list:
    command = " ".join(document.command)
    if answer.error is not None:
        return [TraceStep(document.index, "external", False, f"{command}: {answer.error}")]
    if not answer.results:
        return [TraceStep(document.index, "external", False, f"{command}: no identity mapped")]
    position = {view["id"]: (index, view) for index, view in reversed(valid)}
    strangers = sorted({identity_id for identity_id, _ in answer.results} - set(position))
    if strangers:
        return [
            TraceStep(
                document.index,
                "external",
                False,
                f"{command}: answer ignored: it names identities not in the input: {strangers}",
            )
        ]
    steps = []
    for identity_id, output in answer.results:
        index, view = position[identity_id]
        steps.append(
            TraceStep(
                document.index,
                "external",
                True,
                f"{command} mapped it to {output!r}",
                identity=index,
                identity_id=identity_id,
                username=_username(view),
                output=output,
            )
        )
    return steps


def load_mapping_documents(
    data: object,
    *,
    storage_gateway: str = NIL_GATEWAY_ID,
    runner: Runner | None = None,
) -> Mapper:
    """Build a Mapper from the parsed JSON list, or raise MappingConfigError.

    ``storage_gateway`` is what external programs receive after ``-s``; the
    official manager passes its endpoint id.
    """
    if not isinstance(data, list):
        raise MappingConfigError(
            f"the configuration must be a JSON list of mapping documents, not {_kind(data)}"
        )
    documents, warnings = [], []
    for index, document in enumerate(data):
        loaded = _load_document(index, document, warnings)
        if loaded is not None:
            documents.append(loaded)
    if not documents:
        warnings.append("no usable mapping documents: no identity will map")
    return Mapper(tuple(documents), tuple(warnings), storage_gateway, runner=runner)


def load_mapping_file(path: str | Path, **options) -> Mapper:
    """Read and load a mapping file; every failure is a MappingConfigError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MappingConfigError(f"cannot read {path}: {error}") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise MappingConfigError(f"{path} is not valid JSON: {error}") from error
    return load_mapping_documents(data, **options)


def _load_document(index: int, document: object, warnings: list):
    if not isinstance(document, dict):
        raise MappingConfigError(f"must be a JSON object, not {_kind(document)}", index=index)
    data_type = document.get("DATA_TYPE")
    if not isinstance(data_type, str) or not data_type:
        raise MappingConfigError("missing or not a string", index=index, field="DATA_TYPE")
    prefix, _, version = data_type.partition("#")
    if prefix not in (EXPRESSION, EXTERNAL):
        warnings.append(f"document {index}: unknown DATA_TYPE {data_type!r}; document skipped")
        return None
    if version != SUPPORTED_VERSION:
        raise MappingConfigError(
            f"unsupported version in {data_type!r} (expected '{prefix}#{SUPPORTED_VERSION}')",
            index=index,
            field="DATA_TYPE",
        )
    if prefix == EXPRESSION:
        return _load_expression(index, document, warnings)
    return _load_external(index, document, warnings)


def _load_expression(index: int, document: dict, warnings: list) -> ExpressionDocument:
    rules = document.get("mappings")
    if not isinstance(rules, list):
        raise MappingConfigError(
            f"must be a list of rules, not {_kind(rules)}", index=index, field="mappings"
        )
    if not rules:
        warnings.append(f"document {index}: 'mappings' is empty; it never matches")
    return ExpressionDocument(
        index, tuple(_load_rule(index, number, rule, warnings) for number, rule in enumerate(rules))
    )


def _load_rule(index: int, number: int, rule: object, warnings: list) -> ExpressionRule:
    where = f"mappings[{number}]"
    if not isinstance(rule, dict):
        raise MappingConfigError(f"must be an object, not {_kind(rule)}", index=index, field=where)
    for key in ("source", "match", "output"):
        if not isinstance(rule.get(key), str):
            raise MappingConfigError(
                f"required string, got {_kind(rule.get(key))}", index=index, field=f"{where}.{key}"
            )
    for key in ("ignore_case", "literal"):
        if not isinstance(rule.get(key, False), bool):
            raise MappingConfigError(
                f"must be true or false, not {rule[key]!r}", index=index, field=f"{where}.{key}"
            )
    for key in sorted(set(rule) - _RULE_KEYS):
        warnings.append(f"document {index}: {where}: unknown key {key!r} ignored")
    literal, ignore_case = rule.get("literal", False), rule.get("ignore_case", False)
    try:
        pattern = compile_match(rule["match"], ignore_case=ignore_case, literal=literal)
    except DialectError as error:
        raise MappingConfigError(str(error), index=index, field=f"{where}.match") from None
    if not literal and nested_repetition(rule["match"]):
        warnings.append(
            f"document {index}: {where}.match: a '*' repeats a group containing '*'; "
            "matching can take exponential time (write '(.*)' rather than '(.*)*')"
        )
    _check_references(index, where, rule, pattern.groups, warnings)
    return ExpressionRule(
        number, rule["source"], rule["match"], rule["output"], pattern, ignore_case, literal
    )


def _check_references(index: int, where: str, rule: dict, groups: int, warnings: list) -> None:
    """Catch at load what the official mapper only discovers while a user waits."""
    for key in ("source", "output"):
        for reference in references(rule[key]):
            problem = None
            if not reference.name:
                problem = "empty reference '{}'"
            elif reference.group is not None and key == "source":
                problem = f"{reference.text} refers to a match group; only output may"
            elif reference.group is not None and reference.group >= groups:
                problem = (
                    f"{reference.text} refers to a match group that 'match' does not have "
                    f"({groups} group(s){', literal match' if rule.get('literal') else ''})"
                )
            elif reference.group is None and reference.name not in KNOWN_FIELDS:
                warnings.append(
                    f"document {index}: {where}.{key}: {reference.text} is not a known "
                    "Globus identity field; identities without it are skipped"
                )
            if problem:
                raise MappingConfigError(problem, index=index, field=f"{where}.{key}")


def _load_external(index: int, document: dict, warnings: list) -> ExternalDocument:
    command = document.get("command")
    if not isinstance(command, list) or not command:
        raise MappingConfigError(
            "must be a non-empty list (program, arguments...)", index=index, field="command"
        )
    for number, argument in enumerate(command):
        if isinstance(argument, bool) or not isinstance(argument, str | int | float):
            raise MappingConfigError(
                f"must be a string or number, not {_kind(argument)}",
                index=index,
                field=f"command[{number}]",
            )
    if not str(command[0]):
        raise MappingConfigError("the program name is empty", index=index, field="command[0]")
    timeout_s = document.get("timeout_s", DEFAULT_TIMEOUT_S)
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s <= MAX_TIMEOUT_S
    ):
        raise MappingConfigError(
            f"must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], not {timeout_s!r}",
            index=index,
            field="timeout_s",
        )
    run_as = document.get("run_as")
    if run_as is not None and (not isinstance(run_as, str) or not run_as):
        raise MappingConfigError(
            f"must be a local account name, not {run_as!r}", index=index, field="run_as"
        )
    for key in sorted(set(document) - _EXTERNAL_KEYS):
        warnings.append(f"document {index}: unknown key {key!r} ignored")
    return ExternalDocument(index, tuple(map(str, command)), float(timeout_s), run_as)


def _username(identity: dict) -> str | None:
    username = identity.get("username")
    return username if isinstance(username, str) else None


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
