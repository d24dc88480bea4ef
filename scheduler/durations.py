"""Human-readable durations for the config file: ``"1m30s"``, ``"500ms"``, ``"10m"``.

Operators write intervals and timeouts far more often as "1m30s" than as 90, and
a bare number is ambiguous (seconds? milliseconds?). So the config accepts the Go-style
spelling that Forgejo's own ``act_runner`` config uses, plus a plain TOML number
meaning seconds. Internally everything is a ``float`` of seconds, which is what trio
wants.

The grammar is deliberately strict: each unit at most once, largest first
(``"1h2m3.5s"``, never ``"30s1m"``), no signs, no spaces inside, no unit-less strings.
A typo should fail at start-up with a message saying what was expected, not turn
into a surprising interval.
"""

from __future__ import annotations

import datetime
import math
import re

__all__ = ["describe_value", "format_duration", "parse_duration"]

#: Seconds per unit, largest first; the order is the order a value must use.
_UNITS: dict[str, float] = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

# The whole run of letters after a number is captured, so that "5d" or "5mins" is
# reported as an unknown unit by name instead of as generic garbage.
_COMPONENT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([A-Za-zµ]+)?")

_EXPECTED = 'a duration such as "2s", "1m30s", "500ms", "1h" or a number of seconds'


def describe_value(value: object) -> str:
    """Name a value's TOML type (and show it when short) for "expected X, got Y" messages.

    Shared with :mod:`scheduler.config` so that both speak the config file's language
    ("a boolean", "an array") rather than Python's ("bool", "list").
    """
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value!r})"
    if isinstance(value, str):
        if value == "":
            return "an empty string"
        return f"a string ({_quote(value)})"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.datetime):
        return "a date-time"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, datetime.time):
        return "a time of day"
    return f"a {type(value).__name__}"


def _quote(text: str) -> str:
    """Double-quote for messages (repr() would switch to single quotes, unlike TOML),
    cut short so that a pasted blob does not drown the message."""
    if len(text) > 60:
        text = text[:57] + "..."
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_duration(value: object, *, where: str) -> float:
    """Seconds from ``"1m30s"`` / ``"2s"`` / ``"500ms"`` / ``"1h"`` / ``"1h2m3.5s"``,
    or from a plain int/float (seconds).

    Zero is accepted (``"0s"`` or ``0``): whether it makes sense depends on the setting,
    which the caller checks. Raises :class:`ValueError` whose message starts with
    ``where`` and says what was expected, for anything else: negative numbers, an empty
    string, booleans (TOML ``true`` is not 1 second), unknown units, unit-less strings,
    units out of order or repeated, and garbage.
    """
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected {_EXPECTED}, got {describe_value(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
        if math.isnan(seconds) or math.isinf(seconds):
            raise ValueError(f"{where}: expected a finite duration, got {describe_value(value)}")
        if seconds < 0:
            raise ValueError(
                f"{where}: expected a non-negative duration, got {describe_value(value)}"
            )
        return seconds
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected {_EXPECTED}, got {describe_value(value)}")

    text = value.strip()
    if not text:
        raise ValueError(f"{where}: expected {_EXPECTED}, got {describe_value(value)}")
    if text.startswith("-"):
        raise ValueError(f"{where}: expected a non-negative duration, got {_quote(value)}")

    total = 0.0
    pos = 0
    seen: list[str] = []
    order = list(_UNITS)
    while pos < len(text):
        match = _COMPONENT.match(text, pos)
        if match is None:
            raise ValueError(f"{where}: expected {_EXPECTED}, got {_quote(value)}")
        number, unit = match.group(1), match.group(2)
        if unit is None:
            raise ValueError(
                f"{where}: missing unit after {number} in {_quote(value)} "
                f'(write e.g. "{number}s"; units: h, m, s, ms)'
            )
        if unit not in _UNITS:
            raise ValueError(
                f"{where}: unknown unit {_quote(unit)} in {_quote(value)} (units: h, m, s, ms)"
            )
        if seen and order.index(unit) <= order.index(seen[-1]):
            raise ValueError(
                f"{where}: expected units largest first and each at most once "
                f'(like "1h2m3s"), got {_quote(value)}'
            )
        seen.append(unit)
        total += float(number) * _UNITS[unit]
        pos = match.end()

    if math.isinf(total):
        raise ValueError(f"{where}: expected a finite duration, got {_quote(value)}")
    return total


def _trim(number: str) -> str:
    """``"1.500"`` → ``"1.5"``, ``"2.000"`` → ``"2"``."""
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return number


def format_duration(seconds: float) -> str:
    """The canonical spelling of a duration: ``90.0`` → ``"1m30s"``, ``0.5`` → ``"500ms"``.

    Used to show resolved settings (``check-config``) and in log lines, so it picks the
    form an operator would write, and :func:`parse_duration` reads it back to the same
    value (to the millisecond for values of a second or more, to the microsecond below).
    """
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration")
    if seconds == 0:
        return "0s"
    if seconds < 1:
        millis = round(seconds * 1000, 3)
        if millis < 1000:
            return _trim(f"{millis:.3f}") + "ms"
    total_ms = round(seconds * 1000)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        parts.append(_trim(f"{rest / 1000:.3f}") + "s")
    return "".join(parts)
