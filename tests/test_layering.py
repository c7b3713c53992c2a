"""The package's layering: no import cycles inside attnviz (module-level and function-level
imports alike), and the library never imports the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import attnviz

PACKAGE = Path(attnviz.__file__).parent
#: modules that make up the command line; nothing else may import them
CLI = {"attnviz.cli", "attnviz.__main__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    # "from . import x" names submodules; "from .m import f" names module m
    return [f"{prefix}.{a.name}" for a in node.names] + [prefix]


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of attnviz it imports}`` from the source (no imports executed)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                targets.update(_resolve(name, path.name == "__init__.py", node))
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _package_parents(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Imports of ``a.b.c`` run ``a.b``'s ``__init__`` first: an edge a package's own
    submodules may take (importing siblings through the package) is not a cycle of design, so
    edges from a submodule to one of its own parent packages are dropped."""
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exports its submodules; importing ``attnviz.x`` from a
    module of another package is an import of that package's public face. Package inits are
    kept as nodes: a cycle through them is a real cycle."""
    return graph


def test_no_import_cycles() -> None:
    cycles = find_cycles(_package_parents(import_graph()))
    assert cycles == [], "import cycles inside attnviz: " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_cycle_checker_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_library_never_imports_the_command_line() -> None:
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, ts in graph.items() if m not in CLI
                       for t in ts if t in CLI)
    assert offenders == []
