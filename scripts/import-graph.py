#!/usr/bin/env python3
"""The import graph of ``scheduler/``: import cycles and function-level imports fail it.

Run ``python3 scripts/import-graph.py`` (stdlib only); ``tests/test_lint.py`` runs it too.
It prints the strongly connected components of the graph (every cycle, with the import
lines that make it), the imports written inside functions, and the imports under
``if TYPE_CHECKING:``; it exits 1 if there is a cycle or a function-level import.

Why both: a function-level import is how a cycle is usually hidden (the module imports
its importer lazily, at call time), so the graph counts imports wherever they are
written, module level or function level, and each function-level import is an error on
its own besides. A package is layered when every module imports only "downwards".

What counts as an edge, and why:

- ``import a.b.c`` and ``from a.b import c`` where ``a.b.c`` is a module of the
  package: an edge to ``a.b.c``; ``from a.b import name`` (not a module): an edge to
  ``a.b``. Relative imports are resolved. Imports of modules outside ``scheduler`` are
  not edges (they cannot close a cycle), but a function-level one is still reported.
- The parent packages Python initialises on the way (``import a.b.c`` runs
  ``a/__init__.py`` and ``a/b/__init__.py`` first) are not edges: the package is
  already in ``sys.modules`` while its ``__init__`` runs, so a submodule importing a
  sibling is not a cycle through the package. Counting them would make every
  ``__init__`` that re-exports a submodule "cyclic" with that submodule's siblings.
- Imports under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) never run, so they
  are not edges and not errors: they are listed, and the ones that would close a cycle
  if they ran are marked, since an annotation-only back reference is still worth
  knowing about when the layering is reviewed.
- Class bodies and module-level ``if``/``try`` blocks run at import time: module level.

``ALLOWED_FUNCTION_IMPORTS`` and ``ALLOWED_CYCLES`` list the exceptions still in the
code, each with why; they are printed as allowed and do not fail the check. They are
meant to be emptied, not grown.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "scheduler"

_LAZY = "lazy import, no cycle behind it (counted above): to move to module level"

#: (file, imported module) -> why it is still there. Lazy imports outside the executor,
#: owned by other parts of issue 10; the lead moves them to module level and empties this.
ALLOWED_FUNCTION_IMPORTS: dict[tuple[str, str], str] = {}

#: Sorted module names of a strongly connected component -> why it is still there.
ALLOWED_CYCLES: dict[tuple[str, ...], str] = {}


@dataclass(frozen=True)
class Import:
    """One ``import`` statement's target, where it is written and how it runs."""

    source: str  # the importing module
    target: str  # the imported module (dotted name)
    path: str  # the importing file, relative to the repository
    line: int
    function: str | None  # the enclosing function's name, if written inside one
    type_checking: bool  # under ``if TYPE_CHECKING:``: never runs

    def where(self) -> str:
        inside = f" (in {self.function})" if self.function else ""
        return f"{self.path}:{self.line}{inside}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_in(path: Path, root: Path, modules: set[str]) -> Iterator[Import]:
    """Every import written in ``path``, with the function around it (if any)."""
    source = module_name(path, root)
    is_package = path.name == "__init__.py"
    relative = str(path.relative_to(root))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)

    def targets(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
            return
        base = resolve(source, is_package, node.level, node.module)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            yield submodule if submodule in modules else base

    def walk(node: ast.AST, function: str | None, type_checking: bool) -> Iterator[Import]:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in targets(node):
                yield Import(source, target, relative, node.lineno, function, type_checking)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            name = getattr(node, "name", "<lambda>")
            function = f"{function}.{name}" if function else name
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for statement in node.body:
                yield from walk(statement, function, True)
            for statement in node.orelse:
                yield from walk(statement, function, type_checking)
            return
        for child in ast.iter_child_nodes(node):
            yield from walk(child, function, type_checking)

    yield from walk(tree, None, False)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with a cycle (several modules, or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def check(root: Path = ROOT) -> tuple[bool, str]:
    """(passed, report) for the package under ``root``."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(path, root) for path in files}
    # One statement importing several names of one module is one import.
    found = list(dict.fromkeys(imp for path in files for imp in imports_in(path, root, modules)))
    internal = [imp for imp in found if imp.target in modules]
    runtime = [imp for imp in internal if not imp.type_checking]
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for imp in runtime:
        graph[imp.source].add(imp.target)

    lines = [
        f"import graph of {PACKAGE}/: {len(modules)} modules, "
        f"{len({(i.source, i.target) for i in runtime})} runtime edges"
    ]
    failures = 0

    cycles = strongly_connected(graph)
    lines.append(f"cycles (strongly connected components): {len(cycles)}")
    for component in cycles:
        members = set(component)
        why = ALLOWED_CYCLES.get(tuple(component))
        failures += why is None
        label = f"allowed: {why}" if why else "error"
        lines.append(f"  [{label}] {' <-> '.join(component)}")
        for imp in runtime:
            if imp.source in members and imp.target in members:
                lines.append(f"      {imp.source} -> {imp.target}  {imp.where()}")

    in_functions = [imp for imp in found if imp.function and not imp.type_checking]
    lines.append(f"function-level imports: {len(in_functions)}")
    for imp in in_functions:
        why = ALLOWED_FUNCTION_IMPORTS.get((imp.path, imp.target))
        failures += why is None
        label = f"allowed: {why}" if why else "error"
        lines.append(f"  [{label}] {imp.where()}: {imp.target}")

    typing_only = [imp for imp in found if imp.type_checking]
    lines.append(f"TYPE_CHECKING imports (never run, allowed): {len(typing_only)}")
    for imp in typing_only:
        closes = imp.target in modules and reaches(graph, imp.target, imp.source)
        note = "  (would close a cycle if it ran)" if closes else ""
        lines.append(f"  {imp.where()}: {imp.target}{note}")

    lines.append("OK" if failures == 0 else f"FAILED: {failures} error(s)")
    return failures == 0, "\n".join(lines)


def main() -> int:
    passed, report = check()
    print(report)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
