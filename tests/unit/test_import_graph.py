"""The packages' import graph: layers that only look down, no cycles, a small root monitor.

Read from the source with :mod:`ast` (imports under ``TYPE_CHECKING`` count:
a cycle in the types is a cycle in the design). The layers, bottom up: wire;
identity; templates; uep; then mep and service at the top. The root monitor
(``mep.monitor``) may import only itself, the account policy, names and
paths, the PID lock, the standard library and setproctitle.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("wire", "identity", "templates", "uep", "mep", "service")
MAY_IMPORT = {
    "wire": set(),
    "identity": {"wire"},
    "templates": {"identity", "wire"},
    "uep": {"templates", "identity", "wire"},
    "service": {"wire"},
    "mep": {"uep", "templates", "identity", "wire"},  # uep: only the CLI's table of contents
}
MONITOR_MAY_IMPORT = {"mep.monitor", "identity.policy", "templates.paths", "templates.pidfile"}
MONITOR_THIRD_PARTY = {"setproctitle"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


GRAPH = {
    name: {m for m in _imports(path) if m in MODULES and m != name}
    for name, path in MODULES.items()
}


def test_every_package_imports_only_the_layers_below_it():
    wrong = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if target.split(".")[0] != name.split(".")[0]
        and target.split(".")[0] not in MAY_IMPORT[name.split(".")[0]]
    )
    assert wrong == []


def test_no_module_imports_itself_back():
    successors = defaultdict(set, GRAPH)
    cycles = []
    for start in sorted(MODULES):
        stack, seen = [(start, (start,))], set()
        while stack:
            node, path = stack.pop()
            for nxt in successors[node]:
                if nxt == start:
                    cycles.append(" -> ".join((*path, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    assert cycles == []


def test_the_root_monitor_imports_nothing_that_parses_or_talks_to_the_network():
    ours = {"wire", "identity", "templates", "uep", "mep", "service"}
    stdlib = set(sys.stdlib_module_names)
    wrong = []
    for name, path in MODULES.items():
        if not name.startswith("mep.monitor"):
            continue
        for target in _imports(path):
            top = target.split(".")[0]
            if top in ours:
                if target in MODULES and not any(
                    target == allowed or target.startswith(allowed + ".")
                    for allowed in MONITOR_MAY_IMPORT
                ):
                    wrong.append(f"{name} -> {target}")
            elif top not in stdlib and top not in MONITOR_THIRD_PARTY and top != "__future__":
                wrong.append(f"{name} -> {target}")
    assert wrong == []
