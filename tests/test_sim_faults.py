"""Fault injection: what a flaky Forgejo (or the network in front of it) does to RPCs."""

from __future__ import annotations

import httpx
import pytest
import trio

from scheduler.sim import FaultPlan, InstanceSpec
from tests.support.sim import Rpc, final_state, ids_of, running_sim


def faulty(**plan: object) -> InstanceSpec:
    return InstanceSpec("a", faults=FaultPlan(**plan))  # type: ignore[arg-type]


async def test_drop_after_assign_is_a_transport_error_and_not_delivered() -> None:
    async with running_sim(faulty(drop_after_assign=1.0)) as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        inst.add_job()
        with pytest.raises(httpx.TransportError):
            await rpc.call("FetchTask", {"taskCapacity": "1"}, key="K")
        assert sim.ledger.assigned_count == 1 and sim.ledger.delivered_count == 0
        assert inst.faults.injected == {"drop_after_assign": 1}
        # Forgejo 15: the retry with the same key brings the task back, delivered once.
        inst.set_faults(FaultPlan())
        got = await rpc.fetch(capacity=1, key="K")
        assert ids_of(got) == [1]
        snap = sim.ledger.statistics()
        assert snap.assigned == 1 and snap.delivered == 1
        assert snap.duplicate_executions == 0


async def test_drop_only_hits_answers_that_carry_tasks() -> None:
    async with running_sim(faulty(drop_after_assign=1.0)) as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        assert await rpc.fetch() == {"tasksVersion": "1"}


async def test_error_5xx_and_internal_assign_nothing() -> None:
    async with running_sim(faulty(error_5xx=1.0)) as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        sim.instances["a"].add_job()
        resp = await rpc.call("FetchTask", {})
        assert resp.status_code == 503 and resp.json()["code"] == "unavailable"
        sim.instances["a"].set_faults(FaultPlan(internal_error=1.0))
        resp = await rpc.call("FetchTask", {})
        assert resp.status_code == 500 and resp.json()["code"] == "internal"
        assert sim.ledger.assigned_count == 0
        assert sim.http.connections_accepted == 1  # errors keep the connection alive


async def test_reset_before_assign() -> None:
    async with running_sim(faulty(reset_before_assign=1.0)) as sim, httpx.AsyncClient() as client:
        sim.instances["a"].add_job()
        with pytest.raises(httpx.TransportError):
            await Rpc(sim, client).call("FetchTask", {})
        assert sim.ledger.assigned_count == 0


async def test_stall_hangs_until_the_client_gives_up(autojump_clock: trio.abc.Clock) -> None:
    async with running_sim(faulty(stall_windows=[(0, 100)])) as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        sim.instances["a"].add_job()
        start = trio.current_time()
        with pytest.raises(httpx.ReadTimeout):
            await rpc.call("FetchTask", {}, http_timeout=30)
        assert trio.current_time() - start == pytest.approx(30, abs=1)
        # A client that bounds the call itself (cancellation) is noticed too.
        with trio.move_on_after(20):
            await rpc.call("FetchTask", {}, http_timeout=None)
        await trio.sleep(1)
        assert sim.ledger.assigned_count == 0
        assert sim.instances["a"].faults.injected == {"stall": 2}
        assert sim.http.connections_open == 0  # both stalled handlers noticed and let go
        # After the window, FetchTask answers again.
        await trio.sleep(100 - (trio.current_time() - start))
        assert len(ids_of(await rpc.fetch())) == 1


async def test_delay_past_the_client_timeout_assigns_without_delivering(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_sim(faulty(delay=5.0)) as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        sim.instances["a"].add_job()
        sim.instances["a"].add_job()
        with pytest.raises(httpx.ReadTimeout):
            await rpc.call("FetchTask", {}, key="K", http_timeout=2)
        await trio.sleep(10)  # the server's delayed write must see that the client left
        assert sim.ledger.assigned_count == 1 and sim.ledger.delivered_count == 0
        start = trio.current_time()
        got = await rpc.fetch(key="K", http_timeout=10)
        assert trio.current_time() - start == pytest.approx(5, abs=0.5)
        assert ids_of(got) == [1]
        assert sim.ledger.delivered_count == 1 and sim.ledger.duplicate_executions == 0


async def test_update_faults_answer_503_without_effect() -> None:
    spec = faulty(fail_update_log=1.0, fail_update_task=1.0)
    async with running_sim(spec) as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        inst.add_job()
        (task_id,) = ids_of(await rpc.fetch())
        resp = await rpc.call(
            "UpdateLog", {"taskId": str(task_id), "index": "0", "rows": [{"content": "x"}]}
        )
        assert resp.status_code == 503 and resp.json()["code"] == "unavailable"
        resp = await rpc.call("UpdateTask", final_state(task_id))
        assert resp.status_code == 503
        task = inst.tasks[task_id]
        assert task.log_rows == [] and task.updates == [] and not task.done
        assert sim.ledger.finished_count == 0
        # FetchTask is not affected by these two
        inst.add_job()
        assert len(ids_of(await rpc.fetch())) == 1


async def outcomes(seed: int, n: int) -> list[int]:
    spec = faulty(error_5xx=0.5)
    async with running_sim(spec, seed=seed) as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        return [(await rpc.call("FetchTask", {})).status_code for _ in range(n)]


async def test_faults_are_reproducible_from_the_seed() -> None:
    a, b, c = await outcomes(7, 40), await outcomes(7, 40), await outcomes(8, 40)
    assert a == b
    assert a != c
    assert 5 < a.count(503) < 35


def test_fault_plan_validates() -> None:
    with pytest.raises(ValueError):
        FaultPlan(error_5xx=1.5)
    with pytest.raises(ValueError):
        FaultPlan(stall_windows=[(5, 1)])
    assert FaultPlan(stall_windows=[[1, 2]]).stall_windows == ((1.0, 2.0),)
