"""The ``${{ }}`` expression language of Forgejo Actions, as forgejo-runner evaluates it.

A real lexer and recursive-descent parser (``scheduler.executor.expr``), no ``eval``.
Contexts are plain mappings passed in by the caller: ``github`` (and the same object
under ``forge``, ``forgejo`` and ``gitea``; if those are not passed they read
``github``), ``env``, ``vars``, ``secrets``, ``needs``, ``matrix``, ``strategy``,
``job``, ``steps``, ``runner``, ``inputs``. A known context that is not passed reads
as an empty object; any other unknown name is an error ("Unavailable context").
Semantics, and where they differ from forgejo-runner: ``docs/expressions.md``.
"""

from __future__ import annotations

from scheduler.executor.expr.errors import ExpressionError
from scheduler.executor.expr.evaluator import (
    DefaultCheck,
    evaluate,
    evaluate_if,
    interpolate,
    split_template,
)
from scheduler.executor.expr.functions import StatusContext
from scheduler.executor.expr.values import coerce_str, to_json, to_string, truthy

__all__ = [
    "DefaultCheck",
    "ExpressionError",
    "StatusContext",
    "coerce_str",
    "evaluate",
    "evaluate_if",
    "interpolate",
    "split_template",
    "to_json",
    "to_string",
    "truthy",
]
