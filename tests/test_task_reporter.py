"""TaskReporter against a scripted client (no server): what it sends and how it retries.

The same paths over real loopback HTTP, with refused requests and lost answers, are
in ``tests/test_task_lifecycle.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import pytest
import trio
import trio.testing

from scheduler.errors import ConnectError, LogsLost
from scheduler.protocol import LogRow, Result, Task, TaskState, UpdateTaskResponse
from scheduler.task.log import TaskLog
from scheduler.task.reporter import RetryPolicy, TaskReporter


@attrs.define
class Client:
    """Answers from scripts; records what was sent."""

    #: Per call, the acknowledged index to answer (None: the rows sent, all of them),
    #: or an exception to raise.
    log_answers: list[int | Exception | None] = attrs.field(factory=list)
    #: Per call, the server's result and sent outputs to answer.
    task_answers: list[UpdateTaskResponse] = attrs.field(factory=list)
    logs: list[tuple[int, tuple[str, ...], bool]] = attrs.field(factory=list)
    states: list[tuple[TaskState, dict[str, str]]] = attrs.field(factory=list)

    async def update_task(
        self, state: TaskState, outputs: Mapping[str, str] | None = None
    ) -> UpdateTaskResponse:
        self.states.append((state, dict(outputs or {})))
        if self.task_answers:
            return self.task_answers.pop(0)
        return UpdateTaskResponse(task_id=state.id, result=state.result)

    async def update_log(
        self, task_id: int, index: int, rows: tuple[LogRow, ...], no_more: bool
    ) -> int:
        self.logs.append((index, tuple(r.content for r in rows), no_more))
        answer = self.log_answers.pop(0) if self.log_answers else None
        if isinstance(answer, Exception):
            raise answer
        return index + len(rows) if answer is None else answer


def reporter(client: Client) -> TaskReporter:
    return TaskReporter(client, TaskLog(Task(id=1), connection="c"))


def test_retry_policy_delays() -> None:
    assert list(RetryPolicy(attempts=10, initial_delay=0.1, max_delay=5.0).delays()) == [
        0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0,
    ]
    assert list(RetryPolicy(attempts=1).delays()) == []


async def test_send_log_sends_the_unsent_rows_from_the_acknowledged_index() -> None:
    client = Client(log_answers=[1, None])
    rep = reporter(client)
    await rep.send_log()  # nothing to say: no call
    rep.task_log.log("a\nb")
    await rep.send_log()  # the server holds one of the two
    rep.task_log.log("c")
    await rep.send_log()
    assert client.logs == [(0, ("a", "b"), False), (1, ("b", "c"), False)]
    assert rep.task_log.queued == ()


async def test_an_acknowledgement_going_back_is_logs_lost() -> None:
    client = Client(log_answers=[2, 1])
    rep = reporter(client)
    rep.task_log.log("a\nb\nc")
    await rep.send_log()
    with pytest.raises(LogsLost):
        await rep.send_log()


async def test_outputs_are_sent_until_the_server_lists_them() -> None:
    listed = UpdateTaskResponse(1, sent_outputs=("k",))
    client = Client(task_answers=[UpdateTaskResponse(1), listed])
    rep = reporter(client)
    assert rep.task_log.set_output("k", "v1")
    assert not rep.task_log.set_output("k", "v2")
    assert rep.outputs_unsent == 1
    await rep.send_state()
    await rep.send_state()
    await rep.send_state()
    assert [outputs for _, outputs in client.states] == [{"k": "v1"}, {"k": "v1"}, {}]
    assert rep.outputs_unsent == 0


async def test_a_stop_result_cancels_the_job_once() -> None:
    client = Client(task_answers=[UpdateTaskResponse(1, Result.CANCELLED)])
    rep = reporter(client)
    await rep.send_state()
    assert rep.server_result is Result.CANCELLED and rep.cancel_scope.cancel_called


async def test_final_report_log_first_then_state(autojump_clock: trio.testing.MockClock) -> None:
    client = Client(log_answers=[ConnectError("unavailable", "x"), None])
    rep = reporter(client)
    rep.task_log.log("last")
    with pytest.raises(RuntimeError):
        await rep.send_final()  # not closed yet
    rep.task_log.close(Result.SUCCESS, None)
    assert await rep.send_final()
    assert client.logs == [(0, ("last",), True), (0, ("last",), True)]
    ((state, _),) = client.states
    assert state.result is Result.SUCCESS


async def test_an_archived_log_counts_as_sent(autojump_clock: trio.testing.MockClock) -> None:
    client = Client(log_answers=[ConnectError("already_exists", "log file has been archived")])
    rep = reporter(client)
    rep.task_log.log("lost answer")
    rep.task_log.close(Result.FAILURE, None)
    assert await rep.send_final()
    assert len(client.logs) == 1 and rep.task_log.queued == ()
