"""Globus-Connect-Server-compatible identity mapping: load documents, map an identity set.

Pure on purpose: no AMQP, no fork, no module state. The manager, the
``map-identity`` admin command and the tests all build a :class:`Mapper` from
the same JSON list admins already use with Globus Connect Server / Globus
Compute (parsed and checked by :mod:`identity.documents`). External-program
documents are the one impure part; they run through the ``runner`` the caller
gives (:func:`identity.external.run_program` for the manager and the CLI, a
fake in tests); this module never imports it.

Precedence is the official one: document order, then rule order, then
identity-set order (for an external program: the order of its answers); the
first match wins. Unlike the official mapper, an identity whose field used by
a rule is null is skipped for that rule instead of failing the whole document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from identity.dialect import MissingValue, interpolate
from identity.documents import (
    ExpressionDocument,
    ExpressionRule,
    ExternalDocument,
    MappingConfigError,
    ProgramAnswer,
    load_documents,
)

__all__ = [
    "ExpressionDocument",
    "ExpressionRule",
    "ExternalDocument",
    "Mapper",
    "MappingConfigError",
    "MappingOutcome",
    "ProgramAnswer",
    "TraceStep",
    "load_mapping_documents",
    "load_mapping_file",
    "load_mapping_text",
]

POSIX_CONNECTOR_ID = "145812c8-decc-41f1-83cf-bb2a85a2a70b"
NIL_GATEWAY_ID = "00000000-0000-0000-0000-000000000000"
MAPPED_STATUSES = ("used", "private")


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
                    return MappingOutcome(*winner, tuple(trace))
        return MappingOutcome(*(winner or (None, None)), tuple(trace))

    def _evaluate_external(self, document: ExternalDocument, identities: list) -> list:
        runner = self.runner
        if runner is None:
            return [TraceStep(document.index, "external", False, "no program runner was given")]
        valid = [(index, view) for index, view in identities if view is not None]
        answer = runner(document, [view for _, view in valid], self.connector, self.storage_gateway)
        return _external_steps(document, valid, answer)


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
    documents, warnings = load_documents(data)
    return Mapper(documents, warnings, storage_gateway, runner=runner)


def load_mapping_file(path: str | Path, **options) -> Mapper:
    """Read and load a mapping file; every failure is a MappingConfigError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MappingConfigError(f"cannot read {path}: {error}") from error
    return load_mapping_text(text, str(path), **options)


def load_mapping_text(text: str, source: str, **options) -> Mapper:
    """Load a mapping file's text; ``source`` names it in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise MappingConfigError(f"{source} is not valid JSON: {error}") from error
    return load_mapping_documents(data, **options)


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


def _evaluate_expression(document: ExpressionDocument, identities: list) -> Iterator[TraceStep]:
    """Rule order, then identity order; lazy, so the caller can stop at the first match."""
    for rule in document.rules:
        for index, identity in identities:
            if identity is not None:
                yield _try_rule(document.index, rule, index, identity)


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


def _username(identity: dict) -> str | None:
    username = identity.get("username")
    return username if isinstance(username, str) else None
