"""The ``${{ }}`` expression language: a case table in ``tests/data/expressions/``.

Each ``*.yaml`` there (except ``_contexts.yaml``, the shared default contexts) holds
``cases:``, a list of mappings with exactly one of

- ``expr``: evaluated with :func:`evaluate`,
- ``interpolate``: a template for :func:`interpolate`,
- ``if``: a condition for :func:`evaluate_if` (``default:`` sets its implicit check),

and the expectation: ``value`` (the result; NaN matches NaN, a boolean never matches a
number), ``text`` (``to_string`` of the result) and/or ``error`` (an
:class:`ExpressionError` whose message contains this text). Optional: ``contexts``
(replaces those top-level contexts), ``without`` (removes contexts), ``status``
(``job_status``/``cancelled``), ``hash_files: false`` (no hashFiles callback; otherwise
a fake one returns ``hash[<patterns joined by |>]`` and raises OSError for
``oserror``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.executor.expressions import (
    ExpressionError,
    StatusContext,
    evaluate,
    evaluate_if,
    interpolate,
    to_string,
)

DATA = Path(__file__).parent / "data" / "expressions"
MODES = ("expr", "interpolate", "if")
KNOWN_KEYS = {
    *MODES, "value", "text", "error", "contexts", "without", "status", "hash_files", "default",
}


def _load_defaults() -> dict[str, Any]:
    with (DATA / "_contexts.yaml").open(encoding="utf-8") as f:
        return dict(yaml.safe_load(f))


def _load_cases() -> list[Any]:
    params = []
    for path in sorted(DATA.glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        with path.open(encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        for n, case in enumerate(doc["cases"], 1):
            unknown = set(case) - KNOWN_KEYS
            assert not unknown, f"{path.name} case {n}: unknown keys {unknown}"
            modes = [m for m in MODES if m in case]
            assert len(modes) == 1, f"{path.name} case {n}: needs exactly one of {MODES}"
            assert {"value", "text", "error"} & set(case), f"{path.name} case {n}: no expectation"
            source = case[modes[0]]
            label = source if isinstance(source, str) else repr(source)
            if len(label) > 70:
                label = label[:67] + "..."
            params.append(pytest.param(case, id=f"{path.stem}:{n}:{modes[0]}:{label}"))
    return params


CASES = _load_cases()
DEFAULTS = _load_defaults()


def fake_hash_files(patterns: Sequence[str]) -> str:
    if "oserror" in patterns:
        raise OSError("disk on fire")
    return "hash[" + "|".join(patterns) + "]"


def same(actual: Any, expected: Any) -> bool:
    """Equal as expression values: NaN matches NaN, booleans never match numbers."""
    if expected is None or isinstance(expected, bool):
        return actual is expected
    if isinstance(expected, int | float):
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return False
        if math.isnan(expected):
            return math.isnan(actual)
        return actual == expected
    if isinstance(expected, str):
        return isinstance(actual, str) and actual == expected
    if isinstance(expected, list):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(expected)
            and all(same(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, Mapping)
            and set(actual) == set(expected)
            and all(same(actual[k], v) for k, v in expected.items())
        )
    raise AssertionError(f"unsupported expected value {expected!r}")


def run_case(case: dict[str, Any]) -> Any:
    contexts = {**DEFAULTS, **case.get("contexts", {})}
    for name in case.get("without", []):
        del contexts[name]
    kw: dict[str, Any] = {
        "status": StatusContext(**case.get("status", {})),
        "hash_files": fake_hash_files if case.get("hash_files", True) else None,
    }
    if "expr" in case:
        return evaluate(case["expr"], contexts, **kw)
    if "interpolate" in case:
        return interpolate(case["interpolate"], contexts, **kw)
    if "default" in case:
        kw["default"] = case["default"]
    return evaluate_if(case["if"], contexts, **kw)


def test_case_table_is_large_enough() -> None:
    assert len(CASES) >= 300


@pytest.mark.parametrize("case", CASES)
def test_expression(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(ExpressionError) as info:
            run_case(case)
        assert case["error"] in str(info.value)
        return
    result = run_case(case)
    if "value" in case:
        assert same(result, case["value"]), f"got {result!r}, expected {case['value']!r}"
    if "text" in case:
        assert to_string(result) == case["text"]
