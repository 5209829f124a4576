"""Mapping documents as admins write them: parse and validate, nothing more.

A configuration is a JSON list of Globus Connect Server documents, each with a
``DATA_TYPE``. Whatever is wrong with one is reported while loading, as a
:class:`MappingConfigError` naming the document index, the field and the
problem, so the admin learns of a typo at start-up (or from ``map-identity``)
rather than from a user whose start command failed. Suspicious but valid
settings (unknown ``DATA_TYPE`` prefix, unknown keys or fields) become warnings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from identity.dialect import DialectError, compile_match, nested_repetition, references

EXPRESSION = "expression_identity_mapping"
EXTERNAL = "external_identity_mapping"
SUPPORTED_VERSION = "1.0.0"
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
_RULE_KEYS = frozenset({"source", "match", "output", "ignore_case", "literal", "comment"})
_EXTERNAL_KEYS = frozenset({"DATA_TYPE", "command", "timeout_s", "run_as", "comment"})


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


def load_documents(data: object) -> tuple[tuple, tuple[str, ...]]:
    """Parse a configuration: (documents in order, warnings), or raise MappingConfigError."""
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
    return tuple(documents), tuple(warnings)


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


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
