"""Check Action Provider documents with globus-action-provider-tools; run in that package's venv.

The package pins globus-sdk<4 and pydantic<2, so it cannot share the project's
venv (globus-sdk 4, pydantic 2): ``make action-provider-tools`` builds it its
own, and ``tests/action_docs.py`` pipes documents here. Reads a JSON list of
``[kind, document]`` (or ``[kind, document, input_schema]`` for a request) from
stdin and prints a JSON list with one list of problems per document.

Every document goes through the package's pydantic model and, where it ships
one, its JSON schema (``request_validator``). One known disagreement inside
the package: its ``ProviderType`` enum spells the provider type ``ACTION``,
while its own OpenAPI spec (``types: enum [Action, Event]``) and Flows use
``Action``; introspection documents are checked against the spec's spelling
and every other field against the model.
"""

import json
import sys

from globus_action_provider_tools.data_types import (
    ActionProviderDescription,
    ActionRequest,
    ActionStatus,
)
from globus_action_provider_tools.validation import ValidationRequest, request_validator
from jsonschema.validators import validator_for
from pydantic import ValidationError

SPEC_TYPES = {"Action", "Event"}


def _model(model, doc):
    try:
        model.parse_obj(doc)
    except ValidationError as e:
        return [f"{model.__name__}: {e}"]
    return []


def _schema(name, doc):
    return [
        f"{name} schema: {err}" for err in request_validator(ValidationRequest(name, doc)).errors
    ]


def check_status(doc):
    return _model(ActionStatus, doc) + _schema("ActionStatus", doc)


def check_request(doc, input_schema=None):
    problems = _model(ActionRequest, doc) + _schema("ActionRequest", doc)
    if input_schema is not None:
        validator = validator_for(input_schema)(input_schema)
        problems += [f"input_schema: {e.message}" for e in validator.iter_errors(doc["body"])]
    return problems


def check_introspection(doc):
    problems = []
    types = doc.get("types")
    if not isinstance(types, list) or not types or not set(types) <= SPEC_TYPES:
        problems.append(f"types {types!r} is not a list of {sorted(SPEC_TYPES)}")
    model_view = dict(doc, types=["ACTION"])
    problems += _model(ActionProviderDescription, model_view)
    schema = doc.get("input_schema")
    try:
        validator_for(schema).check_schema(schema)
    except Exception as e:
        problems.append(f"input_schema is not a JSON schema: {e}")
    return problems


CHECKS = {"status": check_status, "request": check_request, "introspection": check_introspection}


def main():
    items = json.load(sys.stdin)
    print(json.dumps([CHECKS[kind](*rest) for kind, *rest in items]))


if __name__ == "__main__":
    main()
