"""The built-in functions. Names are case-insensitive; arguments are evaluated first."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from scheduler.executor.expr.errors import ExpressionError
from scheduler.executor.expr.values import (
    Kind,
    coerce_str,
    compare,
    from_json,
    kind,
    to_json,
)

HashFiles = Callable[[Sequence[str]], str]

STATUS_FUNCTIONS = frozenset({"success", "always", "cancelled", "failure"})


@attrs.frozen
class StatusContext:
    """What ``success()``/``failure()``/``cancelled()`` see.

    ``job_status`` is ``job.status`` for a step (``failure`` once a step failed), and
    for a job-level ``if:`` what its needs add up to (``failure`` if any transitive
    need failed, ``success`` if all succeeded, anything else, e.g. ``skipped``, makes
    both ``success()`` and ``failure()`` false). ``cancelled`` overrides it.
    """

    job_status: str = "success"
    cancelled: bool = False

    @property
    def effective(self) -> str:
        return "cancelled" if self.cancelled else self.job_status


@attrs.frozen
class Runtime:
    status: StatusContext
    hash_files: HashFiles | None


def _contains(rt: Runtime, search: Any, item: Any) -> bool:
    k = kind(search)
    if k is Kind.ARRAY:
        return any(compare("==", element, item) for element in search)
    if k is Kind.OBJECT:
        return False
    return coerce_str(item).lower() in coerce_str(search).lower()


def _starts_with(rt: Runtime, text: Any, prefix: Any) -> bool:
    return coerce_str(text).lower().startswith(coerce_str(prefix).lower())


def _ends_with(rt: Runtime, text: Any, suffix: Any) -> bool:
    return coerce_str(text).lower().endswith(coerce_str(suffix).lower())


_INDEX = re.compile(r"[0-9]+")


def _format(rt: Runtime, template: Any, *args: Any) -> str:
    text = coerce_str(template)
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            if text.startswith("{{", i):
                out.append("{")
                i += 2
                continue
            close = text.find("}", i + 1)
            if close < 0:
                raise ExpressionError(f"format: unclosed '{{' in format string {text!r}")
            spec = text[i + 1 : close]
            if not _INDEX.fullmatch(spec):
                raise ExpressionError(
                    f"format: {{{spec}}} is not a placeholder ({{0}}, {{1}}, ...) "
                    f"in format string {text!r}; write {{{{ and }}}} for braces"
                )
            index = int(spec)
            if index >= len(args):
                raise ExpressionError(
                    f"format: format string {text!r} references argument {index} "
                    f"but {len(args)} were supplied"
                )
            out.append(coerce_str(args[index]))
            i = close + 1
        elif c == "}":
            if not text.startswith("}}", i):
                raise ExpressionError(
                    f"format: '}}' without an opening '{{' in format string {text!r}; "
                    "write }} for a brace"
                )
            out.append("}")
            i += 2
        else:
            close = min((j for j in (text.find("{", i), text.find("}", i)) if j >= 0), default=n)
            out.append(text[i:close])
            i = close
    return "".join(out)


def _join(rt: Runtime, items: Any, separator: Any = ",") -> str:
    sep = coerce_str(separator)
    if kind(items) is Kind.ARRAY:
        return sep.join(coerce_str(item) for item in items)
    return coerce_str(items)


def _to_json(rt: Runtime, value: Any) -> str:
    return to_json(value)


def _from_json(rt: Runtime, text: Any) -> Any:
    if not isinstance(text, str):
        raise ExpressionError(f"fromJSON: needs a string, got {kind(text).value}")
    return from_json(text)


def _hash_files(rt: Runtime, *patterns: Any) -> str:
    if rt.hash_files is None:
        raise ExpressionError("hashFiles() is not available here")
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ExpressionError(f"hashFiles: patterns must be strings, got {kind(pattern).value}")
    try:
        result = rt.hash_files(list(patterns))
    except ExpressionError:
        raise
    except (OSError, ValueError) as exc:
        raise ExpressionError(f"hashFiles: {exc}") from None
    return result


def _success(rt: Runtime) -> bool:
    return rt.status.effective == "success"


def _failure(rt: Runtime) -> bool:
    return rt.status.effective == "failure"


def _cancelled(rt: Runtime) -> bool:
    return rt.status.effective == "cancelled"


def _always(rt: Runtime) -> bool:
    return True


#: lower-case name -> (display name, implementation, min args, max args or None)
FUNCTIONS: dict[str, tuple[str, Callable[..., Any], int, int | None]] = {
    "contains": ("contains", _contains, 2, 2),
    "startswith": ("startsWith", _starts_with, 2, 2),
    "endswith": ("endsWith", _ends_with, 2, 2),
    "format": ("format", _format, 1, None),
    "join": ("join", _join, 1, 2),
    "tojson": ("toJSON", _to_json, 1, 1),
    "fromjson": ("fromJSON", _from_json, 1, 1),
    "hashfiles": ("hashFiles", _hash_files, 1, None),
    "success": ("success", _success, 0, 0),
    "failure": ("failure", _failure, 0, 0),
    "cancelled": ("cancelled", _cancelled, 0, 0),
    "always": ("always", _always, 0, 0),
}


def check_arity(name: str, count: int) -> None:
    """Raise unless ``name`` is a function that takes ``count`` arguments."""
    entry = FUNCTIONS.get(name.lower())
    if entry is None:
        raise ExpressionError(f"unknown function {name}()")
    display, _, low, high = entry
    if count < low or (high is not None and count > high):
        if high is None:
            wanted = f"at least {low}"
        elif low == high:
            wanted = str(low)
        else:
            wanted = f"{low} to {high}"
        plural = "" if wanted in ("1", "at least 1") else "s"
        raise ExpressionError(f"{display}() takes {wanted} argument{plural}, got {count}")


def call(rt: Runtime, name: str, args: Sequence[Any]) -> Any:
    check_arity(name, len(args))
    return FUNCTIONS[name.lower()][1](rt, *args)
