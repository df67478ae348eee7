"""The bridge's structure rules, checked on its source (docs/ARCHITECTURE.md, "Module map").

* Channel-layer message types and channel names are written only in
  ``bridge_app/messages.py``: everyone else uses its names and constructors.
* No import cycle inside ``bridge_app``, counting every import (also those inside
  functions, which only postpone a cycle): parts plug into the proxy and the runtime
  through ``hooks.py``, wired from ``AppConfig.ready()``. To see the cycles and the graph:
  ``python tests/test_bridge_structure.py``.
* docs/ARCHITECTURE.md's module map names every module and package of ``bridge_app``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "bridge_app"
sys.path.insert(0, str(ROOT))

from bridge_app import messages  # noqa: E402


def _sources(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*.py") if "migrations" not in p.parts)


def test_channel_layer_messages_are_spelled_only_in_messages_py():
    spelled = {value for name, value in vars(messages).items()
               if name.isupper() and isinstance(value, str) and "." in value}
    assert {"edge.request", "rpc.response", "bridge.invalidate", "portal.events", "bridge.inbox."} <= spelled
    found = []
    for path in _sources(BRIDGE, ROOT / "portal_app", ROOT / "radical_edge_site"):
        if path == BRIDGE / "messages.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in spelled:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "use bridge_app.messages instead of:\n" + "\n".join(found)


def import_graph(package: Path = BRIDGE) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, from every import statement
    anywhere in the module (function bodies too); ``from a import b`` counts ``a.b`` when
    that is a module. Imports of the package itself (``from . import x``'s ``bridge_app``)
    are left out: ``bridge_app/__init__.py`` is empty."""
    name = package.name
    modules = {}
    for path in _sources(package):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module and target != name:
                    graph[module].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), i.e. the cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_checker_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .c import x\n")
    (pkg / "c.py").write_text("from pkg.a import y\n")
    (pkg / "d.py").write_text("from .a import z\n")
    assert import_cycles(import_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_import_cycle_inside_bridge_app():
    graph = import_graph()
    assert {"bridge_app.calls.proxy", "bridge_app.core.rpc", "bridge_app.mcp.app"} <= graph.keys()
    assert "bridge_app.core.hooks" in graph["bridge_app.calls.proxy"]
    cycles = import_cycles(graph)
    assert not cycles, "import cycles inside bridge_app:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_module_map_names_every_module():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = text[text.index("## Module map"):text.index("## The proxy path")]
    names = {p.name for p in BRIDGE.glob("*.py") if p.name != "__init__.py"}
    names |= {f"{p.name}/" for p in BRIDGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    missing = sorted(n for n in names if f"`{n}" not in table)
    assert not missing, f"docs/ARCHITECTURE.md's module map lacks {missing}"


if __name__ == "__main__":
    graph = import_graph()
    for module in sorted(graph):
        print(f"{module}: {', '.join(sorted(graph[module])) or '-'}")
    found = import_cycles(graph)
    print("\nimport cycles:", found or "none")
    sys.exit(1 if found else 0)
