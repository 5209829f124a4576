"""One start's rendering inputs as data: what the manager hands the user endpoint.

The manager never renders. It has the admin's template and schema read (by
its root monitor: they may be root-only), adds the submitter's options, the
mapped account and the template's directory, and sends this request to the
user endpoint, which renders it as its own user, reading include files from
that directory with the user's permissions (as upstream): researcher input
never meets Jinja, jsonschema or YAML in a privileged process.
``render-user-config`` builds the same request from the same files, so the
admin's preview and a real start cannot disagree.

The document form travels in the launch payload; :meth:`RenderRequest.from_document`
checks every field's type, so a damaged payload is a clear error, not a crash.
"""

from __future__ import annotations

import dataclasses
import typing as t

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
    include_dir: str | None = None  # read as whoever renders: the user, in production

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
            include_dir=self.include_dir,
        )

    def to_document(self) -> dict[str, t.Any]:
        return {
            "template": self.template,
            "include_dir": self.include_dir,
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
        unknown = set(document) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise RenderRequestError(f"render: unknown fields {sorted(unknown)[:5]}")
        template = document.get("template")
        if not isinstance(template, str):
            raise RenderRequestError("render.template: expected the template text")
        include_dir = document.get("include_dir")
        if include_dir is not None and not (
            isinstance(include_dir, str) and include_dir.startswith("/") and "\0" not in include_dir
        ):
            raise RenderRequestError("render.include_dir: expected an absolute path")
        schema = document.get("schema")
        if schema is not None and not isinstance(schema, dict | bool):
            raise RenderRequestError("render.schema: expected a JSON schema object")
        fields = {}
        for key in ("options", "user_runtime", "mapped_identity", "parent_config"):
            value = document.get(key) if document.get(key) is not None else {}
            if not isinstance(value, dict):
                raise RenderRequestError(f"render.{key}: expected an object")
            fields[key] = value
        return cls(template=template, schema=schema, include_dir=include_dir, **fields)
