"""TaskLog on its own: rows, steps, held rows, masking, outputs (no client, no server)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from scheduler.protocol import Result, Task
from scheduler.task.log import TaskLog, split_row


def task_log(**task: Any) -> TaskLog:
    return TaskLog(Task(id=1, **task), connection="c")


def contents(log: TaskLog) -> list[str]:
    return [r.content for r in log.queued]


def test_rows_setup_steps_between_and_trailing() -> None:
    log = task_log()
    log.log("setup 1\nsetup 2\n")
    log.set_steps(3)
    log.start_step(0)
    log.output("s0 a")
    log.finish_step(0, Result.SUCCESS)
    log.log("between steps")  # must not end up between steps: joins step 1
    assert log.held and contents(log) == ["setup 1", "setup 2", "s0 a"]
    log.start_step(1)
    log.output("s1 a\r\ns1 b")
    log.finish_step(1, Result.FAILURE)
    log.log("after a failure")
    log.skip_step(2)
    log.log("trailing")
    assert contents(log) == [
        "setup 1", "setup 2", "s0 a", "between steps", "s1 a", "s1 b", "after a failure",
        "trailing",
    ]
    s0, s1, s2 = log.steps
    assert (s0.log_index, s0.log_length, s0.result) == (2, 1, Result.SUCCESS)
    assert (s1.log_index, s1.log_length, s1.result) == (3, 3, Result.FAILURE)
    assert (s2.log_index, s2.log_length, s2.result) == (6, 0, Result.SKIPPED)
    assert s2.started_at is None


def test_an_open_step_counts_its_rows_so_far() -> None:
    log = task_log()
    log.set_steps(1)
    log.start_step(0)
    log.output("a\nb")
    (step,) = log.steps
    assert (step.log_index, step.log_length, step.result) == (0, 2, Result.UNSPECIFIED)
    assert log.state().steps == log.steps


def test_close_cancels_unfinished_steps() -> None:
    log = task_log()
    log.set_steps(3)
    log.start_step(0)
    log.output("x")
    assert log.close(Result.FAILURE, "the end") is Result.FAILURE
    assert [s.result for s in log.steps] == [Result.CANCELLED] * 3
    assert log.steps[0].stopped_at is not None
    assert (log.steps[0].log_index, log.steps[0].log_length) == (0, 1)
    assert contents(log) == ["x", "the end"]
    # A second close keeps the first result.
    assert log.close(Result.CANCELLED, "again") is Result.FAILURE
    assert contents(log) == ["x", "the end"]


def test_close_skipped_job_skips_steps() -> None:
    log = task_log()
    log.set_steps(1)
    log.close(Result.SKIPPED, None)
    assert log.steps[0].result is Result.SKIPPED


def test_step_misuse_is_an_error() -> None:
    log = task_log()
    log.set_steps(2)
    log.start_step(0)
    with pytest.raises(RuntimeError):
        log.start_step(1)
    with pytest.raises(IndexError):
        log.finish_step(5, Result.SUCCESS)
    with pytest.raises(ValueError):
        log.finish_step(0, Result.UNSPECIFIED)


def test_long_lines_are_split_on_character_boundaries() -> None:
    log = task_log()
    line = "é" * 40_000  # 80,000 bytes
    log.output(line)
    pieces = contents(log)
    assert len(pieces) == 2
    assert all(len(p.encode()) <= 64 * 1024 for p in pieces)
    assert "".join(pieces) == line
    assert split_row("a" * 10) == ["a" * 10]
    assert split_row("ab€" * 3, limit=4) == ["ab", "€a", "b€", "ab", "€"]


def test_secrets_are_masked_before_queueing_and_late_masks_when_sent() -> None:
    log = task_log(secrets={"S": "s3cr3t-value"})
    log.log("runner says s3cr3t-value")
    log.output("early late-value")
    log.output("::add-mask::late-value")
    assert contents(log) == ["runner says ***", "early late-value"]
    index, rows = log.unsent()  # what the reporter sends
    assert index == 0 and [r.content for r in rows] == ["runner says ***", "early ***"]
    assert contents(log) == ["runner says ***", "early ***"]


def test_acknowledged_rows_are_dropped() -> None:
    log = task_log()
    log.log("a\nb\nc")
    log.acknowledge(2)
    assert log.unsent()[0] == 2 and contents(log) == ["c"]
    assert log.next_index == 3
    log.acknowledge(1)  # an older answer: nothing more to drop
    assert contents(log) == ["c"]
    log.acknowledge(10)  # more than was queued: everything queued is held by the server
    assert contents(log) == [] and log.next_index == 3


def test_outputs_limits_and_first_wins() -> None:
    log = task_log()
    assert log.set_output("k", "v1")
    assert not log.set_output("k", "v2")
    assert not log.set_output("x" * 256, "v")
    assert not log.set_output("big", "v" * (1024 * 1024 + 1))
    assert log.outputs == {"k": "v1"}


def test_timestamps_are_wall_clock() -> None:
    log = task_log()
    log.log("x")
    (row,) = log.queued
    assert abs((dt.datetime.now(dt.UTC) - row.time).total_seconds()) < 5
    assert log.started_at.tzinfo is dt.UTC
