"""Duration strings in the config: what is accepted, what is refused and how it is said."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1m30s", 90.0),
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1h2m3.5s", 3723.5),
        ("1.5h", 5400.0),
        ("1s500ms", 1.5),
        (".5s", 0.5),
        ("0s", 0.0),
        ("  10m ", 600.0),
        (30, 30.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_accepts_units_and_plain_seconds(value: object, seconds: float) -> None:
    assert parse_duration(value, where="x") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "got an empty string"),
        ("   ", "expected a duration such as"),
        ("-5s", "non-negative"),
        (-1, "non-negative"),
        (-0.5, "non-negative"),
        (True, "got a boolean (true)"),
        (False, "got a boolean (false)"),
        ("5d", 'unknown unit "d"'),
        ("5mins", 'unknown unit "mins"'),
        ("5S", 'unknown unit "S"'),
        ("30", 'missing unit after 30 in "30" (write e.g. "30s"'),
        ("1m30", "missing unit after 30"),
        ("30s1m", "largest first"),
        ("1m1m", "largest first"),
        ("abc", 'got "abc"'),
        ("1 m", "missing unit"),
        ("s", 'got "s"'),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("9" * 400 + "h", "finite"),
        ([1, 2], "got an array"),
        ({"s": 1}, "got a table"),
        (None, "got a NoneType"),
        (datetime.time(0, 1), "got a time of day"),
    ],
)
def test_parse_rejects_with_a_message_naming_where_and_what(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value, where="runner.fetch_interval")
    message = str(info.value)
    assert message.startswith("runner.fetch_interval: ")
    assert fragment in message
    # Every refusal says what would have been right, one way or another.
    assert any(w in message for w in ("expected", "units:", "write e.g."))


def test_parse_error_shortens_a_pasted_blob() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("x" * 500, where="w")
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (90.0, "1m30s"),
        (0.5, "500ms"),
        (2.0, "2s"),
        (0.0, "0s"),
        (3600.0, "1h"),
        (3723.5, "1h2m3.5s"),
        (600.0, "10m"),
        (1.25, "1.25s"),
        (0.0015, "1.5ms"),
        (7200.001, "2h0.001s"),
        (59.9999, "1m"),  # rounds to the millisecond instead of printing "60s"
    ],
)
def test_format_picks_the_spelling_an_operator_would_write(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_format_refuses_what_is_not_a_duration(bad: float) -> None:
    with pytest.raises(ValueError):
        format_duration(bad)


@given(st.integers(min_value=0, max_value=10**10))
def test_format_round_trips_through_parse_to_the_millisecond(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds), where="x") == pytest.approx(
        seconds, abs=1e-9, rel=1e-12
    )
