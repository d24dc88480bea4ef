"""Cross-check: the project's Connect client (``scheduler.protocol``) against the simulator.

The two sides were written independently from protocol.md; this is where a
disagreement between them would show up.
"""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from scheduler.errors import ConnectError, TransportFailure
from scheduler.protocol import messages as m
from scheduler.protocol.client import RunnerClient
from scheduler.sim import FaultPlan, InstanceSpec, Simulator
from tests.support.sim import running_sim


def client_for(sim: Simulator, name: str = "a", *, timeout: float = 10.0) -> RunnerClient:
    runner = sim.instances[name].runner
    return RunnerClient(sim.base_url(name), uuid=runner.uuid, token=runner.token, timeout=timeout)


async def test_client_and_simulator_agree_on_a_whole_task() -> None:
    async with running_sim() as sim, client_for(sim) as client:
        inst = sim.instances["a"]
        declared = await client.declare("0.1.0", ("sim:host",))
        assert declared.uuid == inst.runner.uuid and declared.token == ""
        assert declared.labels == ("sim:host",)
        first = await client.fetch_task(tasks_version=0, task_capacity=2, request_key="k0")
        assert first.tasks == () and first.tasks_version == 1
        inst.add_job(duration=0.1)
        inst.add_job(duration=0.1)
        got = await client.fetch_task(tasks_version=1, task_capacity=2, request_key="k1")
        assert [t.id for t in got.tasks] == [1, 2] and got.tasks_version == inst.tasks_version
        task = got.tasks[0]
        assert yaml.safe_load(task.workflow_payload)["jobs"]["job"]["runs-on"] == ["sim"]
        assert task.secrets["FORGEJO_TOKEN"] == task.context["token"]
        replay = await client.fetch_task(tasks_version=0, task_capacity=1, request_key="k1")
        assert [t.id for t in replay.tasks] == [1, 2] and replay.tasks_version == 0

        now = dt.datetime(2026, 4, 1, 10, 0, 0, 123456, dt.UTC)
        rows = tuple(m.LogRow(now, f"line {i}") for i in range(3))
        assert await client.update_log(task.id, 0, rows, False) == 3
        assert await client.update_log(task.id, 3, (), True) == 3
        assert await client.update_log(task.id, 3, (m.LogRow(now, "end"),), True) == 4
        with pytest.raises(ConnectError) as info:
            await client.update_log(task.id, 4, (m.LogRow(now, "late"),), False)
        assert info.value.code == "already_exists"

        state = m.TaskState(
            task.id,
            started_at=now,
            steps=(m.StepState(0, m.Result.SUCCESS, now, now, 0, 3), m.StepState(1)),
        )
        answer = await client.update_task(state, {"out": "1"})
        assert answer.result is m.Result.UNSPECIFIED and answer.sent_outputs == ("out",)
        final = m.TaskState(task.id, m.Result.SUCCESS, now, now, state.steps)
        answer = await client.update_task(final)
        assert answer.task_id == task.id and answer.result is m.Result.SUCCESS
        sim_task = inst.tasks[task.id]
        assert sim_task.log_lines == ["line 0", "line 1", "line 2", "end"]
        assert sim_task.log_rows[0].time == now
        assert sim_task.updates[0].steps[0].started_at == now

        inst.cancel_task(2)
        answer = await client.update_task(m.TaskState(2))
        assert answer.result is m.Result.CANCELLED
        snap = sim.ledger.statistics()
        assert snap.redelivered == 2  # the k1 replay...
        assert snap.duplicate_executions == 0  # ...which was never started twice


async def test_client_sees_sim_faults_as_unknown_outcomes() -> None:
    spec = InstanceSpec("a", faults=FaultPlan(drop_after_assign=1.0))
    async with running_sim(spec) as sim, client_for(sim) as client:
        sim.instances["a"].add_job()
        with pytest.raises(TransportFailure) as transport:
            await client.fetch_task(tasks_version=0, task_capacity=1, request_key="k")
        assert transport.value.outcome_unknown
        sim.instances["a"].set_faults(FaultPlan(error_5xx=1.0))
        with pytest.raises(ConnectError) as refused:
            await client.fetch_task(tasks_version=0, task_capacity=1, request_key="k")
        assert refused.value.code == "unavailable" and refused.value.outcome_unknown
        sim.instances["a"].set_faults(FaultPlan())
        got = await client.fetch_task(tasks_version=0, task_capacity=1, request_key="k")
        assert [t.id for t in got.tasks] == [1]
        assert sim.ledger.statistics().delivered == 1


async def test_client_unauthenticated() -> None:
    async with running_sim() as sim:
        runner = sim.instances["a"].runner
        async with RunnerClient(
            sim.base_url("a"), uuid=runner.uuid, token="0" * 40, timeout=5
        ) as client:
            with pytest.raises(ConnectError) as info:
                await client.declare("v", ())
            assert info.value.code == "unauthenticated" and not info.value.outcome_unknown
