"""Engines run tasks; :func:`build_engine` makes one from the config's EngineSpec.

Only the Parsl engines import Parsl, and only when one is built: an endpoint
on a thread or process pool starts without it.
"""

from __future__ import annotations

from templates.components import ComponentSpec
from templates.user_config import EngineSpec
from uep.engines.base import Engine, ResourceSpecError

ENGINE_TYPES = ("ThreadPoolEngine", "ProcessPoolEngine", "GlobusComputeEngine", "GlobusMPIEngine")


def _engine_class(name: str) -> type[Engine]:
    if name in ("ThreadPoolEngine", "ProcessPoolEngine"):
        from uep.engines import pools

        return getattr(pools, name)
    if name in ("GlobusComputeEngine", "GlobusMPIEngine"):
        from uep.engines import htex

        return getattr(htex, name)
    raise ValueError(f"unknown engine type {name!r}; choose one of {', '.join(ENGINE_TYPES)}")


def _built(component: ComponentSpec | str) -> object:
    """A provider/address spec made real (a Parsl object); a plain address passes through."""
    return component.build() if isinstance(component, ComponentSpec) else component


def build_engine(spec: EngineSpec) -> Engine:
    """An engine from ``EngineSpec(type, options, provider, address)``."""
    options = dict(spec.options)
    if spec.provider is not None:
        options["provider"] = _built(spec.provider)
    if spec.address is not None:
        options["address"] = _built(spec.address)
    kind = _engine_class(spec.type)
    try:
        return kind(**options)
    except TypeError as e:
        raise ValueError(f"{spec.type}: {e}") from None


__all__ = ["ENGINE_TYPES", "Engine", "ResourceSpecError", "build_engine"]
