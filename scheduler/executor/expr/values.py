"""Values of the expression language and the rules that convert and compare them.

Values are plain Python: ``None`` (null), ``bool``, ``int``/``float`` (number), ``str``,
mappings (object) and lists or tuples (array). Numbers keep Python's int/float split
(forgejo-runner's Go code has int literals and float64 JSON numbers); every rule below
treats the two alike, except text conversion, where a float goes through ``%.15G``.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from scheduler.executor.expr.errors import ExpressionError


class Kind(enum.Enum):
    NULL = "null"
    BOOL = "boolean"
    NUMBER = "number"
    STRING = "string"
    ARRAY = "array"
    OBJECT = "object"


def kind(value: Any) -> Kind:
    if value is None:
        return Kind.NULL
    if isinstance(value, bool):
        return Kind.BOOL
    if isinstance(value, int | float):
        return Kind.NUMBER
    if isinstance(value, str):
        return Kind.STRING
    if isinstance(value, Mapping):
        return Kind.OBJECT
    if isinstance(value, list | tuple):
        return Kind.ARRAY
    raise ExpressionError(f"a context holds a value of unsupported type {type(value).__name__}")


#: A number as the lexer reads it: optional ``-``, ``0x`` hex, or decimal without leading
#: zeros with optional fraction and exponent. Also used to read numbers out of strings.
NUMBER_RE = re.compile(
    r"-?(?:0x[0-9a-fA-F]+|(?:0|[1-9][0-9]*)(?P<frac>\.[0-9]+)?(?P<exp>[eE][+-]?[0-9]+)?)"
)
#: The lexer's whitespace (actionlint's): a string is trimmed of these before conversion.
WHITESPACE = " \t\r\n"


def parse_number(text: str) -> int | float:
    """The value of a literal matched by :data:`NUMBER_RE`."""
    body = text.lstrip("-")
    sign = -1 if text.startswith("-") else 1
    if body.startswith("0x"):
        return sign * int(body[2:], 16)
    if any(c in body for c in ".eE"):
        return float(text)
    return int(text)


def truthy(value: Any) -> bool:
    """Falsy: null, false, 0, -0, NaN and ""; everything else (objects, arrays) is truthy."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, int | float):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    kind(value)  # rejects unsupported types
    return True


def to_number(value: Any) -> int | float:
    """Coercion for comparisons: null 0, booleans 1/0, "" 0, a string holding a number
    literal (surrounding whitespace allowed) that number, anything else NaN."""
    k = kind(value)
    if k is Kind.NUMBER:
        return value  # type: ignore[no-any-return]
    if k is Kind.NULL:
        return 0
    if k is Kind.BOOL:
        return 1 if value else 0
    if k is Kind.STRING:
        if value == "":
            return 0
        text = value.strip(WHITESPACE)
        if NUMBER_RE.fullmatch(text):
            return parse_number(text)
        lowered = text.lower()
        if lowered == "infinity":
            return math.inf
        if lowered == "-infinity":
            return -math.inf
    return math.nan


def format_number(value: int | float) -> str:
    """Numbers as text: ints in decimal, floats as Go's ``%.15G`` (``1.5``, ``1E+20``)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return f"{value:.15G}"


def coerce_str(value: Any) -> str:
    """Text of a value inside functions (``format``, ``join``, ``contains``...), as
    forgejo-runner's ``coerceToString``: arrays are ``Array``, objects ``Object``."""
    k = kind(value)
    if k is Kind.STRING:
        return value  # type: ignore[no-any-return]
    if k is Kind.NULL:
        return ""
    if k is Kind.BOOL:
        return "true" if value else "false"
    if k is Kind.NUMBER:
        return format_number(value)
    return "Array" if k is Kind.ARRAY else "Object"


def to_string(value: Any) -> str:
    """A value as the text that replaces a ``${{ }}``: like :func:`coerce_str`, but arrays
    and objects become their :func:`to_json` text instead of ``Array``/``Object``."""
    if kind(value) in (Kind.ARRAY, Kind.OBJECT):
        return to_json(value)
    return coerce_str(value)


def _json_float(value: float) -> str:
    """Go ``encoding/json``'s float64 text: positional between 1e-6 and 1e21, else
    shortest exponent form with no zero padding (``1e-7``, ``1e+21``)."""
    if math.isnan(value) or math.isinf(value):
        raise ExpressionError(f"toJSON: unsupported value {format_number(value)}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if 1e-6 <= abs(value) < 1e21:
        return format(Decimal(repr(value)).normalize(), "f")
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    sign = exponent[0] if exponent[0] in "+-" else "+"
    return f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"


def to_json(value: Any, depth: int = 0) -> str:
    """Pretty JSON, two-space indent, object keys sorted (as Go's ``json.MarshalIndent``
    on a map); ``<``, ``>``, ``&`` are not escaped."""
    k = kind(value)
    if k is Kind.NULL:
        return "null"
    if k is Kind.BOOL:
        return "true" if value else "false"
    if k is Kind.NUMBER:
        return str(value) if isinstance(value, int) else _json_float(value)
    if k is Kind.STRING:
        return json.dumps(value, ensure_ascii=False)
    if depth > 100:
        raise ExpressionError("toJSON: value nested too deeply")
    pad = "  " * (depth + 1)
    if k is Kind.ARRAY:
        if not value:
            return "[]"
        items = [pad + to_json(item, depth + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * depth + "]"
    if not value:
        return "{}"
    keys = sorted(value, key=str)
    items = [
        f"{pad}{json.dumps(str(key), ensure_ascii=False)}: {to_json(value[key], depth + 1)}"
        for key in keys
    ]
    return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_float_value(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number {text} is out of range")
    return number


def from_json(text: str) -> Any:
    """Strict JSON (no NaN/Infinity tokens, no out-of-range numbers)."""
    try:
        return json.loads(
            text, parse_constant=_reject_constant, parse_float=_json_float_value
        )
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ExpressionError(f"fromJSON: invalid JSON: {exc}") from None


def safe_value(value: Any) -> Any:
    """forgejo-runner's ``getSafeValue`` on ``&&``/``||`` results: a float zero
    (including -0.0) becomes the integer 0."""
    if isinstance(value, float) and value == 0:
        return 0
    return value


COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


def _ordered(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def compare(op: str, left: Any, right: Any) -> bool:
    """``left op right``. Different kinds: both sides become numbers (:func:`to_number`).
    Same kind: strings compare case-insensitively, null/booleans/numbers as numbers
    (NaN equals nothing), arrays and objects by identity (ordering them is false)."""
    lk, rk = kind(left), kind(right)
    if lk is not rk:
        return _ordered(op, to_number(left), to_number(right))
    if lk is Kind.STRING:
        return _ordered(op, left.lower(), right.lower())
    if lk in (Kind.ARRAY, Kind.OBJECT):
        if op == "==":
            return left is right
        if op == "!=":
            return left is not right
        return False
    return _ordered(op, to_number(left), to_number(right))


def get_property(value: Any, name: str) -> Any:
    """``value.name`` / ``value['name']``: case-insensitive key of an object (an exact
    match wins, else the first key equal ignoring case), mapped over the elements of an
    array, null for anything else or a missing key."""
    if isinstance(value, Mapping):
        if name in value:
            return value[name]
        lowered = name.lower()
        for key, item in value.items():
            if isinstance(key, str) and key.lower() == lowered:
                return item
        return None
    if isinstance(value, list | tuple):
        return [get_property(item, name) for item in value]
    return None


def get_index(value: Any, index: Any) -> Any:
    """``value[index]``: a string index is a property; an integral number indexes an
    array (null when out of range); anything else is null."""
    if isinstance(index, str):
        return get_property(value, index)
    if isinstance(index, bool) or not isinstance(index, int | float):
        return None
    if not isinstance(value, list | tuple):
        return None
    if isinstance(index, float):
        if not index.is_integer():
            return None
        index = int(index)
    if 0 <= index < len(value):
        return value[index]
    return None


def filter_all(value: Any) -> Any:
    """``value.*``: an object's values as an array, an array as itself; any other value
    is returned unchanged (as forgejo-runner does)."""
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, list | tuple):
        return list(value)
    return value
