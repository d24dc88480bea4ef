"""proto3-JSON helpers and Connect error bodies, written for the simulator alone.

The simulator deliberately does not share the client's codec (``scheduler.protocol``):
two independent readings of protocol.md §1.3 cross-check each other, so a mistake on
one side shows up as a test failure instead of being mirrored on both.

Inbound values are parsed leniently, the way protojson does (int64 as string or
number, enums by name or number, both camelCase and snake_case keys, unknown keys
ignored, ``null`` = default). Outbound values follow protojson's canonical form
(int64 as strings, enum names, zero values omitted, RFC 3339 UTC timestamps).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import json
import re
from collections.abc import Mapping
from typing import Any

JSON = dict[str, Any]

#: Connect code → HTTP status (protocol.md §1.4, connect-go ≥ 1.16).
CODE_TO_HTTP: dict[str, int] = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}


class ConnectError(Exception):
    """A Connect error the simulator answers with (JSON body, mapped HTTP status)."""

    def __init__(self, code: str, message: str = "") -> None:
        if code not in CODE_TO_HTTP:
            raise ValueError(f"unknown Connect code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return CODE_TO_HTTP[self.code]

    def body(self) -> bytes:
        out: JSON = {"code": self.code}
        if self.message:
            out["message"] = self.message
        return json.dumps(out).encode()


def invalid(message: str) -> ConnectError:
    return ConnectError("invalid_argument", message)


class Result(enum.IntEnum):
    """``runner.v1.Result``; UNSPECIFIED is also the server's "not done yet"."""

    UNSPECIFIED = 0
    SUCCESS = 1
    FAILURE = 2
    CANCELLED = 3
    SKIPPED = 4

    @property
    def wire(self) -> str:
        return f"RESULT_{self.name}"

    @property
    def final(self) -> bool:
        return self is not Result.UNSPECIFIED


# ---------------------------------------------------------------- inbound


def field(obj: Mapping[str, Any], camel: str) -> Any:
    """The value of a field under its JSON name or its proto (snake_case) name; None if absent."""
    if camel in obj and obj[camel] is not None:
        return obj[camel]
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
    return obj.get(snake)


def has_field(obj: Mapping[str, Any], camel: str) -> bool:
    """Presence of an ``optional`` field (an explicit ``null`` counts as absent)."""
    return field(obj, camel) is not None


def parse_object(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{where}: expected an object")
    return value


def parse_int64(value: Any, where: str) -> int:
    """int64 from a JSON number or a decimal string (protojson accepts both)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise invalid(f"{where}: expected an integer, got a boolean")
    if isinstance(value, int):
        out = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise invalid(f"{where}: not an integer: {value!r}")
        out = int(value)
    elif isinstance(value, str):
        try:
            out = int(value.strip(), 10)
        except ValueError:
            try:
                as_float = float(value)
            except ValueError:
                raise invalid(f"{where}: not an integer: {value!r}") from None
            if not as_float.is_integer():
                raise invalid(f"{where}: not an integer: {value!r}") from None
            out = int(as_float)
    else:
        raise invalid(f"{where}: expected an integer")
    if not -(2**63) <= out < 2**63:
        raise invalid(f"{where}: out of int64 range")
    return out


def parse_string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid(f"{where}: expected a string")
    return value


def parse_bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{where}: expected a boolean")
    return value


def parse_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"{where}: expected an array")
    return value


def parse_string_list(value: Any, where: str) -> list[str]:
    return [parse_string(v, f"{where}[{i}]") for i, v in enumerate(parse_list(value, where))]


def parse_string_map(value: Any, where: str) -> dict[str, str]:
    obj = parse_object(value, where)
    return {str(k): parse_string(v, f"{where}.{k}") for k, v in obj.items()}


def parse_result(value: Any, where: str) -> Result:
    """Enum by name (``"RESULT_SUCCESS"``) or number.

    An unknown *name* reads as the default, as protojson does with ``DiscardUnknown``
    (which connect-go sets); an unknown *number* is refused rather than stored.
    """
    if value is None:
        return Result.UNSPECIFIED
    if isinstance(value, str):
        name = value.removeprefix("RESULT_")
        if value.startswith("RESULT_") and name in Result.__members__:
            return Result[name]
        return Result.UNSPECIFIED
    number = parse_int64(value, where)
    try:
        return Result(number)
    except ValueError:
        raise invalid(f"{where}: unknown enum number {number}") from None


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_timestamp(value: Any, where: str) -> dt.datetime | None:
    """RFC 3339 (``Z`` or offset, up to 9 fractional digits) → aware UTC datetime, µs precision."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"{where}: expected an RFC 3339 string")
    m = _RFC3339.match(value)
    if not m:
        raise invalid(f"{where}: not an RFC 3339 timestamp: {value!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or "0").ljust(9, "0")[:6])
    zone = m.group(8)
    if zone in ("Z", "z"):
        tz = dt.UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        stamp = dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise invalid(f"{where}: {exc}") from None
    return stamp.astimezone(dt.UTC)


def parse_bytes(value: Any, where: str) -> bytes:
    """Standard or URL-safe base64, padded or not."""
    if value is None:
        return b""
    if not isinstance(value, str):
        raise invalid(f"{where}: expected a base64 string")
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{where}: bad base64") from None


def parse_body(raw: bytes) -> Mapping[str, Any]:
    """A request body: must be one JSON object (an empty body is the empty message)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"unmarshal into message: {exc}") from None
    if not isinstance(value, dict):
        raise invalid("unmarshal into message: expected a JSON object")
    return value


# ---------------------------------------------------------------- outbound


def int64(value: int) -> str:
    return str(int(value))


def timestamp(value: dt.datetime) -> str:
    """RFC 3339 in UTC with ``Z`` and 0, 3 or 6 fractional digits (protojson style)."""
    utc = value.astimezone(dt.UTC)
    base = utc.strftime("%Y-%m-%dT%H:%M:%S")
    micro = utc.microsecond
    if micro == 0:
        return base + "Z"
    if micro % 1000 == 0:
        return f"{base}.{micro // 1000:03d}Z"
    return f"{base}.{micro:06d}Z"


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def put(out: JSON, key: str, value: Any) -> None:
    """Set a non-``optional`` field, omitting the proto3 default (0, "", False, [], {}, None)."""
    if value is None or value is False:
        return
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return
    if isinstance(value, str | list | dict | tuple) and not value:
        return
    out[key] = list(value) if isinstance(value, tuple) else value


def put_int64(out: JSON, key: str, value: int) -> None:
    if value:
        out[key] = int64(value)


def put_result(out: JSON, key: str, value: Result) -> None:
    if value is not Result.UNSPECIFIED:
        out[key] = value.wire


def dumps(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()
