"""Provider, launcher and address blocks of a user-endpoint config, and building them.

A :class:`ComponentSpec` is data until :meth:`ComponentSpec.build` imports the
allow-listed Parsl class and instantiates it (or calls the address function).
Options are checked against the real Parsl signature when a spec is read, so a
misspelt ``walltme`` or an unquoted ``walltime: 1:00:00`` is reported with its key
path before any process starts.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import inspect
import types
import typing as t

from templates import allow_list
from templates import fields as f
from templates.errors import ConfigError
from templates.located_yaml import plain

_TABLES = {
    "provider": allow_list.PROVIDERS,
    "launcher": allow_list.LAUNCHERS,
    "address": allow_list.ADDRESSES,
}


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    """One ``type:`` block: the allow-listed name, its options, and a provider's launcher.

    ``options`` never holds YAML nulls: null means "Parsl's default", so the key
    is dropped. ``key`` is the block's path in the config, for error messages.
    """

    type: str
    options: dict
    launcher: ComponentSpec | None = None
    key: str = ""

    def build(self) -> t.Any:
        """Import the Parsl class or function and instantiate (or call) it."""
        target = _import(self.type, f.Where(f"{self.key}.type" if self.key else "type"))
        kwargs = dict(self.options)
        if self.launcher is not None:
            kwargs["launcher"] = self.launcher.build()
        try:
            return target(**kwargs)
        except Exception as exc:
            raise ConfigError(
                f"{self.type} refused its options: ({type(exc).__name__}) {exc}", key=self.key
            ) from None


def _kind_of(name: str) -> str | None:
    return next((kind for kind, table in _TABLES.items() if name in table), None)


def _import(name: str, where: f.Where) -> t.Any:
    kind = _kind_of(name)
    if kind is None:
        where.fail(f"'{name}' is not an allowed type")
    module_name, _, attr = _TABLES[kind][name].rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        where.fail(f"{name} cannot be used on this host: ({type(exc).__name__}) {exc}")


def read_component(kind: str, value: t.Any, where: f.Where) -> ComponentSpec:
    """Read a provider/launcher/address mapping, checking its ``type`` and options."""
    data = f.mapping(value, where)
    table = _TABLES[kind]
    if "type" not in data:
        where.fail(f"a {kind} needs a `type:`; one of {', '.join(sorted(table))}")
    type_at = where.child("type", data)
    name = f.string(data["type"], type_at)
    if name not in table:
        guess = f.unknown_hint(name, table)
        type_at.fail(
            f"'{name}' is not an allowed {kind} type{guess}; allowed: {', '.join(sorted(table))}"
        )
    launcher = None
    options = {}
    for key, item in data.items():
        if key == "type" or item is None:
            continue
        at = where.child(key, data)
        if key == "launcher" and kind == "provider":
            launcher = read_component("launcher", item, at)
        elif kind == "provider" and key == "container_uri" and name in allow_list.NO_CONTAINER_URI:
            at.fail(f"{name} does not take container_uri; set the image in its own options")
        else:
            options[str(key)] = plain(item)
    spec = ComponentSpec(name, options, launcher, where.key)
    check_signature(spec, data, where)
    return spec


def check_signature(spec: ComponentSpec, data: dict, where: f.Where) -> None:
    """Compare the options with the Parsl signature: names always, simple types when annotated."""
    target = _import(spec.type, where.child("type", data))
    params = inspect.signature(target).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    hints = _hints(target)
    for name, value in spec.options.items():
        at = where.child(name, data)
        if name not in params and not takes_any:
            at.fail(f"{spec.type} has no option '{name}'{f.unknown_hint(name, params)}")
        expected = hints.get(name) or _implied_by_default(params.get(name))
        if expected is not None and not _accepts(expected, value):
            quote = (
                "; quote it in YAML"
                if isinstance(value, int | float) and _wants_str(expected)
                else ""
            )
            at.fail(f"{spec.type} expects {_describe(expected)}, got {f.shown(value)}{quote}")


def _implied_by_default(param: inspect.Parameter | None) -> t.Any:
    """Some Parsl classes are unannotated; a text or boolean default says what is expected."""
    if param is None:
        return None
    default = param.default
    return type(default) if isinstance(default, str | bool) else None


def _hints(target: t.Any) -> dict[str, t.Any]:
    try:
        return t.get_type_hints(target.__init__ if isinstance(target, type) else target)
    except Exception:
        return {}


def _union_args(annotation: t.Any) -> tuple | None:
    if t.get_origin(annotation) in (t.Union, types.UnionType):
        return t.get_args(annotation)
    return None


def _accepts(annotation: t.Any, value: t.Any) -> bool:
    """True unless the annotation is simple enough to be sure the value is wrong."""
    members = _union_args(annotation)
    if members is not None:
        return any(_accepts(m, value) for m in members)
    origin = t.get_origin(annotation)
    if origin is t.Literal:
        return value in t.get_args(annotation)
    if origin is list or annotation is list:
        return isinstance(value, list)
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        return isinstance(value, dict)
    simple = {
        type(None): lambda v: v is None,
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }
    check = simple.get(annotation)
    return True if check is None else check(value)


def _wants_str(annotation: t.Any) -> bool:
    members = _union_args(annotation) or (annotation,)
    return str in members and not ({int, float} & set(members))


def _describe(annotation: t.Any) -> str:
    members = _union_args(annotation)
    if members is not None:
        return " or ".join(_describe(m) for m in members)
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
