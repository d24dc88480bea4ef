"""``run_task``/``reject_task`` and their reporting, end to end over loopback HTTP.

The server is the built-in simulator (``scheduler.sim``: Forgejo's UpdateLog/UpdateTask
semantics). Between client and server sits :class:`Wire`, an httpx transport that
records every request in order and can refuse a request (503 before any effect) or
lose its answer (after the server acted), so the retry paths are exercised for real.

Tests with scripted executors run on trio's MockClock (``autojump_clock``); the ones
with real bash processes run on the real clock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from scheduler import __version__
from scheduler.executor import HostExecutor
from scheduler.protocol import Result, RunnerClient, Task
from scheduler.sim import InstanceSpec, SimInstance, SimTask, Simulator
from scheduler.sim import Result as SimResult
from scheduler.sim.records import UpdateRecord
from scheduler.task.lifecycle import MAX_RUN_TIME_LINE, SHUTDOWN_LINE, reject_task, run_task
from scheduler.task.log import TaskLog
from scheduler.task.reporter import RetryPolicy

FAST = RetryPolicy(attempts=10, initial_delay=0.1, max_delay=5.0, budget=55.0)

# --- the wire between client and simulator --------------------------------------------


@attrs.frozen
class Call:
    method: str
    body: dict[str, Any]
    outcome: str  # "ok", "refused", "lost", "unrecorded", or the HTTP status


class Wire(httpx.AsyncBaseTransport):
    """Records every RPC in order; injects faults on request."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.calls: list[Call] = []
        #: Per method, verdicts for the next calls: "refuse" (503 before the server sees
        #: it), "lose" (the server acts, the answer is lost), "explode" (an unexpected
        #: exception out of the transport), "unrecorded" (a 200 answer with no result
        #: in its state, the server never sees the call) or "ok". Consumed in order.
        self.faults: dict[str, list[str]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        method = request.url.path.rsplit("/", 1)[-1]
        body = json.loads(request.content or b"{}")
        pending = self.faults.get(method)
        verdict = pending.pop(0) if pending else None
        if verdict == "explode":
            raise RuntimeError("injected: something the client does not translate")
        if verdict == "unrecorded":
            self.calls.append(Call(method, body, "unrecorded"))
            state = {"id": body.get("state", {}).get("id", "0")}
            return httpx.Response(200, json={"state": state}, request=request)
        if verdict == "refuse":
            self.calls.append(Call(method, body, "refused"))
            return httpx.Response(
                503, json={"code": "unavailable", "message": "injected"}, request=request
            )
        response = await self.inner.handle_async_request(request)
        if verdict == "lose":
            await response.aread()
            await response.aclose()
            self.calls.append(Call(method, body, "lost"))
            raise httpx.ReadError("injected: the answer was lost", request=request)
        self.calls.append(Call(method, body, "ok" if response.status_code == 200 else
                               str(response.status_code)))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def reports(self) -> list[Call]:
        return [c for c in self.calls if c.method in ("UpdateLog", "UpdateTask")]


@attrs.define
class Env:
    sim: Simulator
    inst: SimInstance
    client: RunnerClient
    wire: Wire

    async def task(self, **job: Any) -> tuple[Task, SimTask]:
        job_id = self.inst.add_job(**job)
        answer = await self.client.fetch_task(
            tasks_version=0, task_capacity=1, request_key=str(uuid.uuid4())
        )
        (task,) = answer.tasks
        sim_task = self.inst.task_for_job(job_id)
        assert sim_task is not None and sim_task.id == task.id
        return task, sim_task


@asynccontextmanager
async def simulated(rpc_timeout: float = 30.0) -> AsyncIterator[Env]:
    sim = Simulator([InstanceSpec("a", zombie_timeout=None)], seed=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve, "127.0.0.1", 0)
        inst = sim.instances["a"]
        wire = Wire()
        client = RunnerClient(
            sim.base_url("a"), uuid=inst.runner.uuid, token=inst.runner.token,
            timeout=rpc_timeout, transport=wire,
        )
        async with client:
            yield Env(sim, inst, client, wire)
        nursery.cancel_scope.cancel()


Script = Callable[[Task, TaskLog], Awaitable[Result]]


@attrs.define
class Scripted:
    """An executor whose job is a test function."""

    script: Script

    async def execute(self, task: Task, log: TaskLog) -> Result:
        return await self.script(task, log)


def header(task: Task) -> str:
    return (
        f"forgejo-scheduler {__version__} (test-runner) received task {task.id} of job job, "
        "triggered by event: push, on connection a"
    )


async def run(env: Env, task: Task, script: Script, **kw: Any) -> Any:
    kw.setdefault("report_interval", 1.0)
    kw.setdefault("retry", FAST)
    return await run_task(
        env.client, task, Scripted(script), connection="a", runner_name="test-runner", **kw
    )


def check_final_order(env: Env) -> None:
    """noMore exactly once (among accepted calls), before the final UpdateTask, the last call."""
    reports = env.wire.reports()
    no_more = [i for i, c in enumerate(reports) if c.method == "UpdateLog" and c.body.get("noMore")]
    accepted = [i for i in no_more if reports[i].outcome == "ok"]
    assert len(accepted) == 1, reports
    finals = [
        i for i, c in enumerate(reports)
        if c.method == "UpdateTask" and c.body["state"].get("result")
    ]
    assert finals and min(finals) > accepted[0]
    assert reports[-1].method == "UpdateTask" and reports[-1].outcome == "ok"
    assert all(i < min(finals) for i in no_more)


def stored_steps(sim_task: SimTask) -> list[tuple[str, int, int]]:
    return [(s.status, s.log_index, s.log_length) for s in sim_task.steps]


# --- run_task end to end -----------------------------------------------------------------


async def test_run_task_rows_steps_and_final_order(autojump_clock: trio.testing.MockClock) -> None:
    async def job(task: Task, rep: TaskLog) -> Result:
        rep.log("preparing")
        rep.set_steps(2)
        rep.start_step(0)
        rep.output("hello\nworld")
        await trio.sleep(2.5)
        rep.finish_step(0, Result.SUCCESS)
        rep.log("between")
        rep.start_step(1)
        rep.output("second")
        await trio.sleep(2.5)
        rep.finish_step(1, Result.SUCCESS)
        return Result.SUCCESS

    async with simulated() as env:
        task, sim_task = await env.task()
        t0 = trio.current_time()
        outcome = await run(env, task, job)
        assert outcome.result is Result.SUCCESS and outcome.reported
        assert outcome.duration == pytest.approx(trio.current_time() - t0)
        assert 5.0 <= outcome.duration < 6.0
        assert sim_task.log_lines == [
            header(task), "preparing", "hello", "world", "between", "second", "🏁 Job succeeded",
        ]
        assert sim_task.log_archived
        assert sim_task.result is SimResult.SUCCESS
        assert stored_steps(sim_task) == [("RESULT_SUCCESS", 2, 2), ("RESULT_SUCCESS", 4, 2)]
        final = sim_task.updates[-1]
        assert final.started_at is not None and final.stopped_at is not None
        assert final.started_at <= final.stopped_at
        check_final_order(env)
        # Heartbeats: rows went out while the job ran, and the state every second.
        beats = [c for c in env.wire.of("UpdateTask") if not c.body["state"].get("result")]
        assert 5 <= len(beats) <= 7
        assert env.sim.ledger.tasks[task.id].duplicate_reasons == []


async def test_heartbeat_sends_rows_before_the_end(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[list[str]] = []
    states: list[UpdateRecord] = []

    async with simulated() as env:
        task, sim_task = await env.task()

        async def job(task: Task, rep: TaskLog) -> Result:
            rep.set_steps(1)
            rep.start_step(0)
            rep.output("one")
            await trio.sleep(3)
            # What the server holds while the step is still running; checked after
            # run_task: an assertion failing in here would only fail the task.
            seen.append(list(sim_task.log_lines))
            states.extend(u for u in sim_task.updates if not u.result.final)
            rep.finish_step(0, Result.SUCCESS)
            return Result.SUCCESS

        outcome = await run(env, task, job)
        assert outcome.result is Result.SUCCESS and outcome.reported
        assert seen == [[header(task), "one"]]
        # The heartbeats during the step sent its state with its row counted.
        assert states and states[-1].steps[0].log_length == 1
        # Each UpdateLog starts at the index acknowledged before: nothing is sent twice.
        indexes = [int(c.body.get("index", "0")) for c in env.wire.of("UpdateLog")]
        assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)


async def test_update_log_failures_resend_from_ack(autojump_clock: trio.testing.MockClock) -> None:
    async def job(task: Task, rep: TaskLog) -> Result:
        rep.set_steps(1)
        rep.start_step(0)
        for i in range(6):
            rep.output(f"line {i}")
            await trio.sleep(1)
        rep.finish_step(0, Result.SUCCESS)
        return Result.SUCCESS

    async with simulated() as env:
        task, sim_task = await env.task()
        # The first two UpdateLogs are refused, the next answer is lost after the server
        # stored the rows; then the final noMore is refused once and its answer lost once.
        env.wire.faults["UpdateLog"] = ["refuse", "refuse", "lose"]
        outcome = await run(env, task, job)
        assert outcome.result is Result.SUCCESS and outcome.reported
        expected = [header(task), *(f"line {i}" for i in range(6)), "🏁 Job succeeded"]
        assert sim_task.log_lines == expected
        logs = env.wire.of("UpdateLog")
        assert [c.outcome for c in logs[:3]] == ["refused", "refused", "lost"]
        # The call after the lost answer resends from the old index; the server dedups.
        assert logs[3].body.get("index", "0") == logs[2].body.get("index", "0")
        assert stored_steps(sim_task)[:1] == [("RESULT_SUCCESS", 1, 6)]
        check_final_order(env)


async def test_final_report_retries(autojump_clock: trio.testing.MockClock) -> None:
    async def job(task: Task, rep: TaskLog) -> Result:
        rep.log("quick")
        await trio.sleep(1)  # one heartbeat (its log answer is lost), none after
        return Result.FAILURE

    async with simulated() as env:
        task, sim_task = await env.task()
        env.wire.faults["UpdateLog"] = ["lose", "refuse"]
        env.wire.faults["UpdateTask"] = ["ok", "refuse", "lose", "refuse"]
        outcome = await run(env, task, job, report_interval=100.0)
        assert outcome.result is Result.FAILURE and outcome.reported
        assert sim_task.result is SimResult.FAILURE
        assert sim_task.log_lines == [header(task), "quick", "🏁 Job failed"]
        logs = env.wire.of("UpdateLog")
        assert [c.outcome for c in logs] == ["lost", "refused", "ok"]
        assert all(c.body.get("noMore") for c in logs[1:])
        tasks = env.wire.of("UpdateTask")
        assert [c.outcome for c in tasks] == ["ok", "refused", "lost", "refused", "ok"]
        # The lost final UpdateTask already finished the task; the retry is harmless.
        assert env.sim.ledger.tasks[task.id].duplicate_reasons == []


async def test_unexpected_errors_do_not_stop_the_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def job(task: Task, rep: TaskLog) -> Result:
        rep.log("still here")
        await trio.sleep(2.5)
        return Result.SUCCESS

    async with simulated() as env:
        task, sim_task = await env.task()
        env.wire.faults["UpdateLog"] = ["explode"]
        env.wire.faults["UpdateTask"] = ["explode", "ok", "ok", "explode"]
        outcome = await run(env, task, job)
        assert outcome.result is Result.SUCCESS and outcome.reported
        assert sim_task.log_lines == [header(task), "still here", "🏁 Job succeeded"]


async def test_server_cancel_mid_step(autojump_clock: trio.testing.MockClock) -> None:
    cancelled_inside = trio.Event()

    async with simulated() as env:
        task, sim_task = await env.task()

        async def job(task: Task, rep: TaskLog) -> Result:
            rep.set_steps(2)
            rep.start_step(0)
            rep.output("working")
            try:
                await trio.sleep(1000)
            except trio.Cancelled:
                cancelled_inside.set()
                raise
            return Result.SUCCESS

        async def cancel_soon() -> None:
            await trio.sleep(2.5)
            assert env.inst.cancel_task(task.id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_soon)
            outcome = await run(env, task, job)
        assert cancelled_inside.is_set()
        assert outcome.result is Result.CANCELLED and outcome.reported
        assert outcome.duration < 5
        assert sim_task.result is SimResult.CANCELLED
        assert sim_task.log_lines == [
            header(task), "working",
            "The server stopped the task (cancelled); the job was cancelled",
        ]
        assert sim_task.log_archived
        final = env.wire.of("UpdateTask")[-1].body["state"]
        assert final["result"] == "RESULT_CANCELLED"
        assert [s.get("result") for s in final["steps"]] == ["RESULT_CANCELLED"] * 2


async def test_server_failure_result_also_stops(autojump_clock: trio.testing.MockClock) -> None:
    async def job(task: Task, rep: TaskLog) -> Result:
        await trio.sleep(1000)
        return Result.SUCCESS

    async with simulated() as env:
        task, sim_task = await env.task()

        async def zombie_cleanup() -> None:
            await trio.sleep(1.5)
            env.inst._stop(sim_task, SimResult.FAILURE, "zombie")  # Forgejo's StopTask(failure)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(zombie_cleanup)
            outcome = await run(env, task, job)
        assert outcome.result is Result.FAILURE and outcome.reported
        assert outcome.duration < 5


async def test_executor_exception_is_reported(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def job(task: Task, rep: TaskLog) -> Result:
        rep.set_steps(1)
        rep.start_step(0)
        raise KeyError("no such thing")

    async with simulated() as env:
        task, sim_task = await env.task()
        with caplog.at_level(logging.ERROR, "scheduler.task.lifecycle"):
            outcome = await run(env, task, job)
        assert outcome.result is Result.FAILURE and outcome.reported
        assert "internal error: the executor failed: KeyError: 'no such thing'" in (
            sim_task.log_lines
        )
        assert sim_task.log_lines[-1] == "🏁 Job failed"
        assert stored_steps(sim_task)[0][0] == "RESULT_CANCELLED"
        assert any("executor failed" in r.getMessage() for r in caplog.records)


async def test_executor_without_result(autojump_clock: trio.testing.MockClock) -> None:
    async def job(task: Task, rep: TaskLog) -> Result:
        return Result.UNSPECIFIED

    async with simulated() as env:
        task, sim_task = await env.task()
        outcome = await run(env, task, job)
        assert outcome.result is Result.FAILURE
        assert sim_task.log_lines[-1] == "internal error: the executor returned no result"


async def test_max_run_time(autojump_clock: trio.testing.MockClock) -> None:
    async def job(task: Task, rep: TaskLog) -> Result:
        await trio.sleep(10_000)
        return Result.SUCCESS

    async with simulated() as env:
        task, sim_task = await env.task()
        outcome = await run(env, task, job, max_run_time=60.0)
        assert outcome.result is Result.CANCELLED and outcome.reported
        assert 60 <= outcome.duration < 65
        assert sim_task.log_lines[-1] == MAX_RUN_TIME_LINE


async def test_shutdown_cancels_and_reports(autojump_clock: trio.testing.MockClock) -> None:
    cleaned = trio.Event()

    async def job(task: Task, rep: TaskLog) -> Result:
        rep.set_steps(1)
        rep.start_step(0)
        rep.output("long job")
        try:
            await trio.sleep(10_000)
        finally:
            cleaned.set()
        return Result.SUCCESS

    async with simulated() as env:
        task, sim_task = await env.task()
        with trio.move_on_after(3.5) as shutdown:
            await run(env, task, job)
        assert shutdown.cancelled_caught  # run_task re-raised the Cancelled
        assert cleaned.is_set()
        assert sim_task.result is SimResult.CANCELLED
        assert sim_task.log_lines[-1] == SHUTDOWN_LINE
        assert sim_task.log_archived
        assert stored_steps(sim_task)[:1] == [("RESULT_CANCELLED", 1, 1)]
        check_final_order(env)


async def test_shutdown_while_forgejo_does_not_answer(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The job is done, its final report keeps failing, the shutdown cancels it, the
    shielded shutdown report runs into its deadline too: run_task re-raises the
    Cancelled (seen with podman-compose, which stopped the simulator with the runner;
    it raised UnboundLocalError and the service exited 1)."""

    async def job(task: Task, rep: TaskLog) -> Result:
        await trio.sleep(1)
        return Result.SUCCESS

    async with simulated() as env:
        task, sim_task = await env.task()
        env.wire.faults["UpdateLog"] = ["refuse"] * 10_000
        env.wire.faults["UpdateTask"] = ["refuse"] * 10_000
        start = trio.current_time()
        with trio.move_on_after(10) as shutdown:
            await run(env, task, job)
        assert shutdown.cancelled_caught  # the Cancelled, nothing else
        # 10 s of drain, then at most SHUTDOWN_REPORT_TIMEOUT (30 s) for the last report.
        assert trio.current_time() - start <= 10 + 30 + 1
        assert sim_task.result is not SimResult.SUCCESS  # the job succeeded; no report got through
        unacknowledged = f"task {task.id} on a: the final result (success) was not acknowledged"
        assert unacknowledged in caplog.text


async def test_final_report_answered_without_a_result_is_sent_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Forgejo answers a final UpdateTask with the task's final result; an answer
    without one (a proxy's, a broken server's) did not record it: send it again."""

    async def job(task: Task, rep: TaskLog) -> Result:
        return Result.SUCCESS

    async with simulated() as env:
        task, sim_task = await env.task()
        env.wire.faults["UpdateTask"] = ["unrecorded"] * 3
        outcome = await run(env, task, job)
        assert outcome.reported
        assert sim_task.result is SimResult.SUCCESS  # the server has it after all
        finals = [c for c in env.wire.of("UpdateTask")
                  if c.body["state"].get("result", "RESULT_UNSPECIFIED") != "RESULT_UNSPECIFIED"]
        assert [c.outcome for c in finals][-1] == "ok"
        assert "unrecorded" in [c.outcome for c in finals]


async def test_outputs_are_sent_until_acknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def job(task: Task, rep: TaskLog) -> Result:
        rep.set_output("version", "1.2.3")
        await trio.sleep(2.5)
        return Result.SUCCESS

    async with simulated() as env:
        task, sim_task = await env.task()
        env.wire.faults["UpdateTask"] = ["refuse"]
        outcome = await run(env, task, job)
        assert outcome.reported
        assert sim_task.outputs == {"version": "1.2.3"}
        sent = [c.body.get("outputs") for c in env.wire.of("UpdateTask")]
        # Sent while unacknowledged (the first call was refused), then never again.
        assert sent[0] == sent[1] == {"version": "1.2.3"}
        assert all(s is None for s in sent[2:])


async def test_server_down_gives_up(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    task = Task(id=9, workflow_payload=b"", context={"job": "job", "event_name": "push"})

    async def job(task: Task, rep: TaskLog) -> Result:
        await trio.sleep(3)
        return Result.SUCCESS

    async with RunnerClient(f"http://127.0.0.1:{port}", uuid="u", token="t", timeout=5) as client:
        t0 = trio.current_time()
        with caplog.at_level(logging.INFO, "scheduler"):
            outcome = await run_task(
                client, task, Scripted(job), report_interval=1.0, connection="conn-x",
                retry=RetryPolicy(attempts=4, initial_delay=0.1),
            )
        assert outcome.result is Result.SUCCESS
        assert not outcome.reported
        assert trio.current_time() - t0 < 120
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "task 9" in errors[0].getMessage() and "conn-x" in errors[0].getMessage()
        # Heartbeat failures: one warning per streak, not one per tick.
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len([w for w in warnings if "will retry" in w.getMessage()]) == 1


async def test_retry_budget_bounds_a_hanging_server(autojump_clock: trio.testing.MockClock) -> None:
    """A server that never answers: every call hits the client timeout; the budget ends it."""

    async def hang(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, hang, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        task = Task(id=10)
        async with RunnerClient(f"http://127.0.0.1:{port}", uuid="u", token="t",
                                timeout=30) as client:
            t0 = trio.current_time()
            outcome = await reject_task(client, task, "no slot", connection="c")
            assert not outcome.reported
            assert trio.current_time() - t0 <= 2 * 55 + 30 + 1
        nursery.cancel_scope.cancel()


async def test_reject_task(autojump_clock: trio.testing.MockClock) -> None:
    async with simulated() as env:
        task, sim_task = await env.task()
        outcome = await reject_task(
            env.client, task, "no free slot for this task on this runner", connection="a",
        )
        assert outcome.result is Result.FAILURE and outcome.reported
        assert sim_task.log_lines == ["no free slot for this task on this runner"]
        assert sim_task.log_archived
        assert sim_task.result is SimResult.FAILURE
        (log_call,) = env.wire.of("UpdateLog")
        assert log_call.body.get("noMore") is True
        (task_call,) = env.wire.of("UpdateTask")
        state = task_call.body["state"]
        assert state["result"] == "RESULT_FAILURE"
        assert state["startedAt"] and state["stoppedAt"]
        check_final_order(env)


# --- with the host executor: real processes, real clock ----------------------------------


WORKFLOW = """\
name: e2e
on: push
jobs:
  job:
    runs-on: sim
    steps:
      - name: first
        run: |
          echo "hello from $GITHUB_JOB"
          echo "secret is top-secret-value"
      - name: second
        run: |
          echo one
          echo two >&2
      - name: third
        run: exit 4
      - run: echo never
"""


async def test_host_executor_end_to_end(tmp_path: Path) -> None:
    async with simulated(rpc_timeout=10) as env:
        task, sim_task = await env.task(
            workflow=WORKFLOW, secrets={"MY_SECRET": "top-secret-value"}
        )
        outcome = await run_task(
            env.client, task, HostExecutor(tmp_path), report_interval=0.2, connection="a",
            runner_name="test-runner", retry=FAST,
        )
        assert outcome.result is Result.FAILURE and outcome.reported
        lines = sim_task.log_lines
        steps = stored_steps(sim_task)
        assert [s[0] for s in steps] == [
            "RESULT_SUCCESS", "RESULT_SUCCESS", "RESULT_FAILURE", "RESULT_SKIPPED",
        ]

        def rows_of(i: int) -> list[str]:
            _, index, length = steps[i]
            return lines[index : index + length]

        assert rows_of(0) == ["hello from job", "secret is ***"]
        assert rows_of(1) == ["one", "two"]
        assert rows_of(2) == ["Error: Process completed with exit code 4."]
        assert rows_of(3) == []
        assert lines[0] == header(task)
        assert lines[-1] == "🏁 Job failed"
        assert not any("top-secret-value" in line for line in lines)
        check_final_order(env)
        assert not (tmp_path / str(task.id)).exists()


async def test_host_executor_server_cancel_kills_the_job(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    workflow = f"""\
on: push
jobs:
  job:
    steps:
      - run: |
          sleep 1000 &
          echo $! > {pidfile}
          echo started
          sleep 1000
"""
    async with simulated(rpc_timeout=10) as env:
        task, sim_task = await env.task(workflow=workflow)

        async def cancel_when_started() -> None:
            while "started" not in sim_task.log_lines:
                await trio.sleep(0.05)
            env.inst.cancel_task(task.id)

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_started)
            outcome = await run_task(
                env.client, task, HostExecutor(tmp_path / "work", kill_grace=1.0),
                report_interval=0.1, connection="a", retry=FAST,
            )
        assert trio.current_time() - t0 < 10
        assert outcome.result is Result.CANCELLED and outcome.reported
        pid = int(pidfile.read_text())
        with pytest.raises(ProcessLookupError):
            for _ in range(100):  # reaped by init soon after the KILL
                os.kill(pid, 0)
                await trio.sleep(0.05)
        assert not (tmp_path / "work" / str(task.id)).exists()
        assert stored_steps(sim_task)[0][0] == "RESULT_CANCELLED"
