"""Largest classes (lines, methods, attributes), functions and modules under scheduler/.

Usage: python scripts/code-sizes.py [TREE]   (stdlib ast; the figures of issue 10)
"""

import ast
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
classes, funcs = [], []
for path in sorted((root / "scheduler").rglob("*.py")):
    tree = ast.parse(path.read_text())
    rel = path.relative_to(root)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            methods = [
                n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            ]
            attrs_ = set()
            for n in node.body:
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
                    attrs_.add(n.target.id)
            for m in methods:
                for sub in ast.walk(m):
                    if isinstance(sub, (ast.Assign, ast.AnnAssign)):
                        targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                        for t in targets:
                            if (
                                isinstance(t, ast.Attribute)
                                and isinstance(t.value, ast.Name)
                                and t.value.id == "self"
                            ):
                                attrs_.add(t.attr)
            classes.append(
                (node.end_lineno - node.lineno + 1, len(methods), len(attrs_), f"{rel}:{node.name}")
            )
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            funcs.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}"))
print("largest classes (lines, methods, attributes):")
for c in sorted(classes, reverse=True)[:8]:
    print(f"  {c[0]:4d} lines {c[1]:3d} methods {c[2]:3d} attrs  {c[3]}")
print("largest functions (lines):")
for f in sorted(funcs, reverse=True)[:8]:
    print(f"  {f[0]:4d}  {f[1]}")
mods = sorted(
    (
        (len(p.read_text().splitlines()), str(p.relative_to(root)))
        for p in (root / "scheduler").rglob("*.py")
    ),
    reverse=True,
)[:6]
print("largest modules (lines):")
for n, p in mods:
    print(f"  {n:4d}  {p}")
