"""scheduler/errors.py draws every exception of the service in its docstring: the map
stays whole only if a new exception class cannot be added without drawing it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import scheduler.errors

PACKAGE = Path(scheduler.errors.__file__).parent
_BASE = re.compile(r"(Exception|Error|Failed|Failure|Closed|Lost)$")


def exception_classes() -> dict[str, tuple[str, str]]:
    """Every class in scheduler/ (the simulator aside) whose base names an exception:
    name → (file, first base)."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("sim/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.bases:
                base = ast.unparse(node.bases[0])
                if _BASE.search(base):
                    found[node.name] = (rel, base)
    return found


def test_the_scan_sees_the_known_exceptions() -> None:
    classes = exception_classes()
    assert classes["RpcTimeout"] == ("errors.py", "TransportFailure")
    assert classes["WorkflowError"] == ("executor/workflow.py", "ValueError")
    assert "ConnectError" in classes and len(classes) >= 20


def test_every_exception_class_is_drawn_in_the_tree() -> None:
    doc = scheduler.errors.__doc__ or ""
    drawn = set(re.findall(r"[├└]── (\w+)", doc))
    missing = {name: where for name, where in exception_classes().items() if name not in drawn}
    assert not missing, f"draw these in scheduler/errors.py's docstring: {missing}"


def test_errors_outside_errors_py_are_drawn_with_their_file() -> None:
    doc = scheduler.errors.__doc__ or ""
    for name, (rel, _) in exception_classes().items():
        if rel != "errors.py":
            assert re.search(rf"── {name}\s+{re.escape(rel)}\b", doc), (name, rel)
