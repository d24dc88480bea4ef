"""Evaluating a syntax tree against contexts; ``${{ }}`` templates and ``if:`` conditions."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, Literal

from scheduler.executor.expr import functions
from scheduler.executor.expr.errors import ExpressionError
from scheduler.executor.expr.functions import HashFiles, Runtime, StatusContext
from scheduler.executor.expr.parser import (
    Call,
    Compare,
    Const,
    Filter,
    Index,
    Logical,
    Node,
    Not,
    Property,
    Variable,
    parse,
    walk,
)
from scheduler.executor.expr.values import (
    compare,
    filter_all,
    get_index,
    get_property,
    safe_value,
    to_string,
    truthy,
)

DEFAULT_STATUS = StatusContext()

#: Contexts every job has; one the caller did not pass reads as an empty object.
KNOWN_CONTEXTS = frozenset({
    "github", "gitea", "forge", "forgejo", "env", "vars", "secrets", "needs", "matrix",
    "strategy", "job", "steps", "runner", "inputs",
})
#: Other names for ``github`` (forgejo-runner's ``evaluateVariable``).
GITHUB_ALIASES = ("gitea", "forge", "forgejo")
#: Pseudo-variables of forgejo-runner (not GitHub's).
CONSTANTS: dict[str, float] = {"infinity": math.inf, "nan": math.nan}

DefaultCheck = Literal["success", "always", "failure", "cancelled"] | None


class _Evaluator:
    def __init__(self, source: str, contexts: Mapping[str, Any], runtime: Runtime) -> None:
        self.source = source
        self.contexts = contexts
        self.runtime = runtime

    def fail(self, error: ExpressionError, node: Node) -> ExpressionError:
        return error.located(self.source, node.offset)

    def variable(self, node: Variable) -> Any:
        name = node.name
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in self.contexts:
            return self.contexts[name]
        for key, value in self.contexts.items():
            if isinstance(key, str) and key.lower() == name:
                return value
        if name in GITHUB_ALIASES and "github" in self.contexts:
            return self.contexts["github"]
        if name in KNOWN_CONTEXTS:
            return {}
        raise ExpressionError(f"Unavailable context: {name}", self.source, node.offset)

    def eval(self, node: Node) -> Any:
        try:
            return self._eval(node)
        except ExpressionError as exc:
            raise self.fail(exc, node) from None

    def _eval(self, node: Node) -> Any:
        match node:
            case Const(value=constant):
                return constant
            case Variable():
                return self.variable(node)
            case Property(target=target, name=name):
                return get_property(self.eval(target), name)
            case Index(target=target, index=index):
                return get_index(self.eval(target), self.eval(index))
            case Filter(target=target):
                return filter_all(self.eval(target))
            case Not(operand=operand):
                return not truthy(self.eval(operand))
            case Compare(op=op, left=left, right=right):
                return compare(op, self.eval(left), self.eval(right))
            case Logical(op=op, operands=operands):
                stop_when = op == "||"
                result: Any = None
                for operand in operands:
                    result = self.eval(operand)
                    if truthy(result) is stop_when:
                        break
                return safe_value(result)
            case Call(name=name, args=args):
                return functions.call(self.runtime, name, [self.eval(arg) for arg in args])
        raise AssertionError(f"unknown node {node!r}")  # pragma: no cover


def _check_calls(tree: Node, source: str) -> None:
    """Unknown functions and wrong argument counts are errors before anything runs."""
    for node in walk(tree):
        if isinstance(node, Call):
            try:
                functions.check_arity(node.name, len(node.args))
            except ExpressionError as exc:
                raise exc.located(source, node.offset) from None


@functools.lru_cache(maxsize=1024)
def compile_expression(source: str) -> Node:
    """The checked syntax tree of ``source`` (trees are immutable, so they are cached)."""
    tree = parse(source)
    _check_calls(tree, source)
    return tree


def _run(source: str, tree: Node, contexts: Mapping[str, Any], runtime: Runtime) -> Any:
    try:
        return _Evaluator(source, contexts, runtime).eval(tree)
    except RecursionError:
        raise ExpressionError("value nested too deeply", source) from None


def evaluate(
    expr: str,
    contexts: Mapping[str, Any],
    *,
    status: StatusContext = DEFAULT_STATUS,
    hash_files: HashFiles | None = None,
) -> Any:
    """The value of ``expr`` (written without ``${{ }}``)."""
    return _run(expr, compile_expression(expr), contexts, Runtime(status, hash_files))


def split_template(template: str) -> list[tuple[bool, str]]:
    """``template`` as (is_expression, text) parts. An expression runs from ``${{`` to
    the first ``}}`` outside a single-quoted string; its text is stripped."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    while True:
        start = template.find("${{", pos)
        if start < 0:
            if pos < len(template):
                parts.append((False, template[pos:]))
            return parts
        if start > pos:
            parts.append((False, template[pos:start]))
        i = start + 3
        while True:
            end = template.find("}}", i)
            quote = template.find("'", i)
            if quote >= 0 and (end < 0 or quote < end):
                i = quote + 1
                while True:  # skip the string, '' is a quote inside it
                    close = template.find("'", i)
                    if close < 0:
                        raise ExpressionError(
                            "unterminated string literal in ${{ }}", template, quote
                        )
                    if template.startswith("''", close):
                        i = close + 2
                        continue
                    i = close + 1
                    break
                continue
            if end < 0:
                raise ExpressionError("'${{' without a closing '}}'", template, start)
            parts.append((True, template[start + 3 : end].strip()))
            pos = end + 2
            break


def _is_template(text: str) -> bool:
    return "${{" in text and "}}" in text


def interpolate(
    template: str,
    contexts: Mapping[str, Any],
    *,
    status: StatusContext = DEFAULT_STATUS,
    hash_files: HashFiles | None = None,
) -> str:
    """``template`` with every ``${{ expr }}`` replaced by :func:`to_string` of its value.
    Text without both ``${{`` and ``}}`` is returned as is."""
    if not _is_template(template):
        return template
    runtime = Runtime(status, hash_files)
    compiled = [
        (compile_expression(text), text) if is_expr else (None, text)
        for is_expr, text in split_template(template)
    ]
    out: list[str] = []
    for tree, text in compiled:
        out.append(text if tree is None else to_string(_run(text, tree, contexts, runtime)))
    return "".join(out)


def evaluate_if(
    condition: str | bool | None,
    contexts: Mapping[str, Any],
    *,
    status: StatusContext = DEFAULT_STATUS,
    hash_files: HashFiles | None = None,
    default: DefaultCheck = "success",
) -> bool:
    """An ``if:``. Empty means ``success()``; ``${{ }}`` around the whole condition is
    optional; a condition calling none of ``success``/``failure``/``cancelled``/``always``
    gets ``<default>() &&`` in front (``default="always"`` for ``post-if``, ``None`` for
    ``continue-on-error``). Text around or between several ``${{ }}`` makes the condition
    a string, true unless empty (as on GitHub)."""
    if isinstance(condition, bool):
        text = "true" if condition else "false"
    else:
        text = (condition or "").strip()
    runtime = Runtime(status, hash_files)
    if not text:
        return default is not None and bool(functions.call(runtime, default, []))
    parts: list[tuple[bool, str]] = [(True, text)]
    if _is_template(text):
        parts = split_template(text)
    compiled = [(compile_expression(t), t) if is_expr else (None, t) for is_expr, t in parts]
    calls_status = any(
        isinstance(node, Call) and node.name.lower() in functions.STATUS_FUNCTIONS
        for tree, _ in compiled
        if tree is not None
        for node in walk(tree)
    )
    if default is not None and not calls_status and not functions.call(runtime, default, []):
        return False
    if len(compiled) == 1 and compiled[0][0] is not None:
        tree, source = compiled[0]
        return truthy(_run(source, tree, contexts, runtime))
    pieces = [
        text if tree is None else to_string(_run(text, tree, contexts, runtime))
        for tree, text in compiled
    ]
    return truthy("".join(pieces))
