"""One start's rendering inputs as data: what the manager hands the user endpoint.

The manager never renders. It reads the admin's template, include files and
schema, adds the submitter's options and the mapped account, and sends this
request to the user endpoint, which renders it as its own user: researcher
input never meets Jinja, jsonschema or YAML in a privileged process (the
official endpoint also renders after the privilege drop). ``render-user-config``
builds the same request from the same files, so the admin's preview and a real
start cannot disagree.

The document form travels in the launch payload; :meth:`RenderRequest.from_document`
checks every field's type, so a damaged payload is a clear error, not a crash.
"""

from __future__ import annotations

import dataclasses
import typing as t
from collections.abc import Mapping

if t.TYPE_CHECKING:
    from templates.rendering import Rendered, RenderError


class RenderRequestError(ValueError):
    """The document is not a render request; the message names the field."""


@dataclasses.dataclass(frozen=True)
class RenderRequest:
    template: str
    options: dict
    user_runtime: dict
    mapped_identity: dict
    parent_config: dict
    schema: dict | bool | None = None
    includes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def render(self) -> Rendered | RenderError:
        """The whole pipeline of :func:`templates.rendering.render_user_config`.

        Imported here: the manager builds requests and never needs Jinja loaded.
        """
        from templates.rendering import render_user_config

        return render_user_config(
            self.template,
            self.schema,
            self.options,
            user_runtime=self.user_runtime,
            mapped_identity=self.mapped_identity,
            parent_config=self.parent_config,
            template_files=self.includes,
        )

    def to_document(self) -> dict[str, t.Any]:
        return {
            "template": self.template,
            "includes": dict(self.includes),
            "schema": self.schema,
            "options": self.options,
            "user_runtime": self.user_runtime,
            "mapped_identity": self.mapped_identity,
            "parent_config": self.parent_config,
        }

    @classmethod
    def from_document(cls, document: t.Any) -> RenderRequest:
        if not isinstance(document, dict):
            raise RenderRequestError("render: expected an object")
        template = document.get("template")
        if not isinstance(template, str):
            raise RenderRequestError("render.template: expected the template text")
        includes = document.get("includes") or {}
        if not isinstance(includes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in includes.items()
        ):
            raise RenderRequestError("render.includes: expected an object of name: text")
        schema = document.get("schema")
        if schema is not None and not isinstance(schema, dict | bool):
            raise RenderRequestError("render.schema: expected a JSON schema object")
        fields = {}
        for key in ("options", "user_runtime", "mapped_identity", "parent_config"):
            value = document.get(key) if document.get(key) is not None else {}
            if not isinstance(value, dict):
                raise RenderRequestError(f"render.{key}: expected an object")
            fields[key] = value
        return cls(template=template, schema=schema, includes=includes, **fields)
