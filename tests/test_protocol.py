"""The proto3 JSON mapping of runner.v1 messages (shared/reference/protocol.md §1.3)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from scheduler.errors import DecodeError
from scheduler.protocol import messages as m


def test_fetch_request_sends_int64_as_strings_and_capacity_always() -> None:
    assert m.fetch_task_request(0, 1) == {"taskCapacity": "1"}
    assert m.fetch_task_request(7, 3) == {"tasksVersion": "7", "taskCapacity": "3"}


def test_fetch_response_defaults_and_unknown_fields() -> None:
    assert m.FetchTaskResponse.from_json({}) == m.FetchTaskResponse()
    resp = m.FetchTaskResponse.from_json({"tasksVersion": "12", "brandNew": {"x": 1}})
    assert resp.tasks_version == 12 and resp.tasks == ()


def test_fetch_response_with_tasks() -> None:
    payload = base64.b64encode(b"on: push\n").decode()
    resp = m.FetchTaskResponse.from_json(
        {
            "task": {
                "id": "101",
                "workflowPayload": payload,
                "context": {"repository": "o/r"},
                "secrets": {"FORGEJO_TOKEN": "abc"},
                "needs": {"build": {"outputs": {"x": "1"}, "result": "RESULT_SUCCESS"}},
            },
            "additionalTasks": [{"id": 102}],
            "tasksVersion": "0",
        }
    )
    assert [t.id for t in resp.tasks] == [101, 102]
    first = resp.tasks[0]
    assert first.workflow_payload == b"on: push\n"
    assert first.needs["build"].result is m.Result.SUCCESS
    assert "abc" not in repr(first)


def test_additional_tasks_without_first_are_kept() -> None:
    # Forgejo 14.0.0/14.0.1 bug: never drop a task the server assigned.
    resp = m.FetchTaskResponse.from_json({"additionalTasks": [{"id": "5"}]})
    assert [t.id for t in resp.tasks] == [5]


@pytest.mark.parametrize(
    "bad",
    [
        {"task": {"id": "x"}},
        {"task": {"id": True}},
        {"task": {"id": "0"}},
        {"task": []},
        {"additionalTasks": {}},
        {"task": {"id": 1, "workflowPayload": "!!!"}},
        {"task": {"id": 1, "secrets": {"a": 1}}},
        {"tasksVersion": "1.5"},
    ],
)
def test_malformed_fetch_responses_raise_decode_error(bad: dict[str, object]) -> None:
    with pytest.raises(DecodeError):
        m.FetchTaskResponse.from_json(bad)


def test_enums_by_name_or_number() -> None:
    assert m.Result.decode("RESULT_CANCELLED", "r") is m.Result.CANCELLED
    assert m.Result.decode(2, "r") is m.Result.FAILURE
    assert m.Result.decode(None, "r") is m.Result.UNSPECIFIED
    assert m.Result.decode(99, "r") is m.Result.UNSPECIFIED
    with pytest.raises(DecodeError):
        m.Result.decode("RESULT_MAYBE", "r")


def test_task_state_encoding_omits_zero_values() -> None:
    t0 = dt.datetime(2026, 4, 1, 10, 0, tzinfo=dt.UTC)
    state = m.TaskState(
        id=101,
        result=m.Result.SUCCESS,
        started_at=t0,
        stopped_at=t0 + dt.timedelta(seconds=60, microseconds=123000),
        steps=(m.StepState(id=0, result=m.Result.SUCCESS, log_index=3, log_length=10),),
    )
    assert m.update_task_request(state, {"k": "v"}) == {
        "state": {
            "id": "101",
            "result": "RESULT_SUCCESS",
            "startedAt": "2026-04-01T10:00:00Z",
            "stoppedAt": "2026-04-01T10:01:00.123000Z",
            "steps": [{"result": "RESULT_SUCCESS", "logIndex": "3", "logLength": "10"}],
        },
        "outputs": {"k": "v"},
    }


def test_update_log_and_ack() -> None:
    t0 = dt.datetime(2026, 4, 1, 10, 0, 0, 123000, tzinfo=dt.UTC)
    body = m.update_log_request(101, 0, (m.LogRow(t0, "hello"),), False)
    assert body == {"taskId": "101", "rows": [{"time": "2026-04-01T10:00:00.123000Z",
                                                 "content": "hello"}]}
    assert m.decode_ack_index({}) == 0
    assert m.decode_ack_index({"ackIndex": "7"}) == 7


def test_update_task_response_is_server_view() -> None:
    resp = m.UpdateTaskResponse.from_json(
        {"state": {"id": "9", "result": "RESULT_CANCELLED"}, "sentOutputs": ["a"]}
    )
    assert (resp.task_id, resp.result, resp.sent_outputs) == (9, m.Result.CANCELLED, ("a",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00Z", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ("2026-01-01T00:00:00.123456789Z", dt.datetime(2026, 1, 1, 0, 0, 0, 123456, dt.UTC)),
        ("2026-01-01T01:00:00+01:00", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    ],
)
def test_timestamps(text: str, expected: dt.datetime) -> None:
    assert m.decode_time(text) == expected


def test_runner_token_not_in_repr() -> None:
    runner = m.Runner.from_json({"uuid": "u", "token": "s3cr3t-token", "labels": ["a"]})
    assert runner.labels == ("a",) and "s3cr3t-token" not in repr(runner)
