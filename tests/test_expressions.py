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

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- properties and API details the table cannot express ------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_any_text_survives_a_string_literal(text: str) -> None:
    assert evaluate("'" + text.replace("'", "''") + "'", {}) == text


@settings(max_examples=150, deadline=None)
@given(st.text().filter(lambda t: "${{" not in t))
def test_text_without_expressions_is_not_changed(text: str) -> None:
    assert interpolate(text, {}) == text


@settings(max_examples=150, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_python_float_text_reads_back_as_a_literal_and_from_a_string(x: float) -> None:
    assert evaluate(repr(x), {}) == x
    assert evaluate(f"'{x!r}' == {x!r}", {}) is True


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_tojson_is_json_and_fromjson_reads_it_back(value: Any) -> None:
    # Go prints a float without a fraction as an integer (1e16 -> 10000000000000000), so
    # numbers are compared as floats: exact for ints up to 2**53 and for every float.
    text = evaluate("toJSON(inputs.v)", {"inputs": {"v": value}})
    assert json.loads(text, parse_int=float) == value
    back = evaluate("fromJSON(toJSON(inputs.v))", {"inputs": {"v": value}})
    assert as_floats(back) == value


def as_floats(value: Any) -> Any:
    if isinstance(value, list):
        return [as_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: as_floats(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def test_error_is_a_value_error_with_its_position() -> None:
    with pytest.raises(ValueError) as info:
        evaluate("github.x == ", {})
    error = info.value
    assert isinstance(error, ExpressionError)
    assert (error.expression, error.offset) == ("github.x == ", 12)
    assert str(error).endswith("(at column 13 of 'github.x == ')")


def test_contexts_are_not_changed() -> None:
    contexts = {"github": {"event": {"items": [{"a": 1}, {"a": 2}]}}, "env": {"X": "1"}}
    before = json.dumps(contexts, sort_keys=True)
    evaluate("toJSON(github.event.items.*.a) && github.event.*", contexts)
    interpolate("${{ env.X }} ${{ github.event.items }}", contexts)
    assert json.dumps(contexts, sort_keys=True) == before


def test_deeply_nested_data_is_an_error_not_a_crash() -> None:
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(ExpressionError, match="nested too deeply"):
        evaluate("fromJSON(inputs.v)", {"inputs": {"v": deep}})
    nested: Any = 1
    for _ in range(150):
        nested = [nested]
    with pytest.raises(ExpressionError, match="toJSON: value nested too deeply"):
        interpolate("${{ inputs.v }}", {"inputs": {"v": nested}})


def test_a_value_of_an_unknown_type_is_an_expression_error() -> None:
    contexts = {"env": {"X": object()}}
    with pytest.raises(ExpressionError, match="unsupported type object"):
        evaluate("env.X == 1", contexts)
    assert evaluate("env.Y == null", contexts) is True


def test_evaluate_if_and_interpolate_take_the_same_keywords() -> None:
    calls: list[list[str]] = []

    def hash_files(patterns: Sequence[str]) -> str:
        calls.append(list(patterns))
        return "abc"

    kw: dict[str, Any] = {"status": StatusContext("failure"), "hash_files": hash_files}
    assert evaluate_if("always() && hashFiles('x') == 'ABC'", {}, **kw) is True
    assert evaluate_if("hashFiles('y') == 'abc'", {}, **kw) is False  # implicit success()
    assert interpolate("${{ hashFiles('z', 'w') }}/${{ failure() }}", {}, **kw) == "abc/true"
    assert calls == [["x"], ["z", "w"]]


def test_to_string_converts_like_interpolation() -> None:
    assert [to_string(v) for v in (None, True, False, 3, 1.0, 0.5, "x")] == [
        "", "true", "false", "3", "1", "0.5", "x",
    ]
    assert to_string({"b": [1], "a": None}) == '{\n  "a": null,\n  "b": [\n    1\n  ]\n}'
