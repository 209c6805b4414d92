"""The layout is the architecture: which layer may import which, and no
import cycle anywhere (deferred imports included). Read from the source,
so a new module is checked the day it is written."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "auth")

# layer -> the layers it must never import
FORBIDDEN = {
    "gateway.core": ("gateway.transports", "gateway.protocols", "gateway.nsq", "gateway.cluster", "gateway.ops",
                     "gateway.workers", "gateway.node", "gateway.app", "gateway.cli"),
    "gateway.transports": ("gateway.protocols", "gateway.nsq", "gateway.cluster", "gateway.ops", "gateway.workers",
                           "gateway.node", "gateway.app", "gateway.cli", "gateway.config"),
    "gateway.protocols.centrifugo": ("gateway.protocols.cable", "gateway.ops", "gateway.workers", "gateway.node",
                                     "gateway.app", "gateway.cli"),
    "gateway.protocols.cable": ("gateway.protocols.centrifugo", "gateway.nsq", "gateway.cluster", "gateway.ops",
                                "gateway.workers", "gateway.node", "gateway.app", "gateway.cli"),
    "gateway.nsq": ("gateway.transports", "gateway.protocols", "gateway.cluster", "gateway.ops", "gateway.workers",
                    "gateway.node", "gateway.app", "gateway.cli"),
    "gateway.cluster": ("gateway.transports", "gateway.protocols", "gateway.ops", "gateway.workers", "gateway.node",
                        "gateway.app", "gateway.cli"),
    "gateway.backend": ("gateway.transports", "gateway.protocols", "gateway.nsq", "gateway.cluster", "gateway.ops",
                        "gateway.workers", "gateway.node", "gateway.app", "gateway.cli"),
    "auth": ("gateway",),
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, known: dict[str, Path], runtime_only: bool) -> set[str]:
    """The modules ``name`` imports, wherever in the file (functions included);
    ``runtime_only`` leaves out ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _type_checking(node):
                skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                out.add(target if target in known else node.module)
    return {m for m in out if m.split(".")[0] in PACKAGES and m != name}


def _inside(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def test_each_layer_imports_only_what_is_below_it():
    known = modules()
    breaches = []
    for name, path in sorted(known.items()):
        for layer, forbidden in FORBIDDEN.items():
            if not _inside(name, layer):
                continue
            for target in sorted(imports(name, path, known, runtime_only=False)):
                if any(_inside(target, f) for f in forbidden):
                    breaches.append(f"{name} imports {target}")
    assert not breaches, "\n".join(breaches)


def test_no_module_imports_itself_back_through_others():
    known = modules()
    graph = {name: {t for t in imports(name, path, known, runtime_only=True) if t in known}
             for name, path in known.items()}
    # A package's __init__ is imported before its modules anyway: an edge from
    # a module to its own package is no cycle of ours.
    for name, targets in graph.items():
        targets -= {t for t in targets if _inside(name, t)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:   # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_see_the_layers():
    # The rules above would pass vacuously on a tree they cannot read.
    known = modules()
    for layer in FORBIDDEN:
        assert any(_inside(name, layer) for name in known), layer
    core_session = imports("gateway.core.session", known["gateway.core.session"], known, False)
    assert "gateway.core.vocabulary" in core_session and "gateway.core.channels" in core_session
