"""The simulator's own proto3-JSON helpers (protocol.md §1.3, §1.4)."""

from __future__ import annotations

import datetime as dt

import pytest

from scheduler.sim.wire import (
    ConnectError,
    Result,
    field,
    parse_body,
    parse_bytes,
    parse_int64,
    parse_result,
    parse_timestamp,
    put,
    timestamp,
)


@pytest.mark.parametrize(
    ("raw", "want"), [("7", 7), (7, 7), (7.0, 7), ("-3", -3), (None, 0), ("1e2", 100)]
)
def test_int64_accepts_string_or_number(raw: object, want: int) -> None:
    assert parse_int64(raw, "x") == want


@pytest.mark.parametrize("raw", ["x", 1.5, True, [], "1.5", str(2**63)])
def test_int64_rejects_junk_as_invalid_argument(raw: object) -> None:
    with pytest.raises(ConnectError) as info:
        parse_int64(raw, "x")
    assert info.value.code == "invalid_argument" and info.value.http_status == 400


def test_enum_by_name_or_number() -> None:
    assert parse_result("RESULT_CANCELLED", "r") is Result.CANCELLED
    assert parse_result(2, "r") is Result.FAILURE
    assert parse_result(None, "r") is Result.UNSPECIFIED
    # Unknown names are discarded (connect-go unmarshals with DiscardUnknown) ...
    for unknown in ("CANCELLED", "RESULT_NOPE", "2"):
        assert parse_result(unknown, "r") is Result.UNSPECIFIED
    # ... unknown numbers are refused.
    with pytest.raises(ConnectError):
        parse_result(9, "r")
    assert Result.SUCCESS.wire == "RESULT_SUCCESS"


def test_timestamps_parse_any_precision_and_offset_and_format_canonically() -> None:
    t = parse_timestamp("2026-01-01T00:00:00.123456789Z", "t")
    assert t == dt.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=dt.UTC)
    assert parse_timestamp("2026-01-01T02:00:00+02:00", "t") == dt.datetime(
        2026, 1, 1, tzinfo=dt.UTC
    )
    assert timestamp(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) == "2026-01-01T00:00:00Z"
    assert timestamp(dt.datetime(2026, 1, 1, 0, 0, 0, 5000, dt.UTC)) == "2026-01-01T00:00:00.005Z"
    assert timestamp(t) == "2026-01-01T00:00:00.123456Z"
    with pytest.raises(ConnectError):
        parse_timestamp("2026-01-01 00:00:00", "t")


def test_bytes_accept_std_and_urlsafe_padded_or_not() -> None:
    assert parse_bytes("b24/Pw==", "b") == b"on??"
    assert parse_bytes("b24_Pw", "b") == b"on??"
    with pytest.raises(ConnectError):
        parse_bytes("***", "b")


def test_field_reads_camel_then_snake_and_null_is_absent() -> None:
    assert field({"tasks_version": 3}, "tasksVersion") == 3
    assert field({"tasksVersion": 4, "tasks_version": 3}, "tasksVersion") == 4
    assert field({"tasksVersion": None}, "tasksVersion") is None


def test_put_omits_proto3_defaults() -> None:
    out: dict[str, object] = {}
    for key, value in [("a", 0), ("b", ""), ("c", False), ("d", []), ("e", {}), ("f", None)]:
        put(out, key, value)
    put(out, "g", ("x",))
    put(out, "h", 1)
    assert out == {"g": ["x"], "h": 1}


def test_body_must_be_an_object() -> None:
    assert parse_body(b"") == {}
    assert parse_body(b'{"a": 1}') == {"a": 1}
    for bad in (b"[1]", b"{", b"\xff"):
        with pytest.raises(ConnectError) as info:
            parse_body(bad)
        assert info.value.code == "invalid_argument"


def test_connect_error_body_and_status() -> None:
    err = ConnectError("already_exists", "log file has been archived")
    assert err.http_status == 409
    assert err.body() == b'{"code": "already_exists", "message": "log file has been archived"}'
    assert ConnectError("unavailable").http_status == 503
    with pytest.raises(ValueError):
        ConnectError("nope", "x")
