"""The ledger: peak outstanding across instances, duplicates, zombies, the snapshot."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from scheduler.sim import InstanceSpec, Ledger, Result
from tests.support.sim import Rpc, final_state, ids_of, running_sim


async def test_peak_outstanding_counts_across_instances() -> None:
    async with running_sim("a", "b") as sim, httpx.AsyncClient() as client:
        a, b = Rpc(sim, client, "a"), Rpc(sim, client, "b")
        for name in ("a", "b"):
            for _ in range(3):
                sim.instances[name].add_job()
        on_a = ids_of(await a.fetch(capacity=2))
        on_b = ids_of(await b.fetch(capacity=1))
        assert sim.ledger.outstanding == 3 and sim.ledger.peak_outstanding == 3
        await a.ok("UpdateTask", final_state(on_a[0]))
        assert sim.ledger.outstanding == 2
        ids_of(await b.fetch(capacity=1))
        assert sim.ledger.peak_outstanding == 3
        ids_of(await a.fetch(capacity=1))
        assert sim.ledger.outstanding == 4 and sim.ledger.peak_outstanding == 4
        snap = sim.ledger.statistics()
        assert snap.instances["a"].peak_outstanding == 2
        assert snap.instances["b"].peak_outstanding == 2
        assert snap.instances["b"].outstanding == 2
        assert len(set(on_a + on_b)) == 3


async def test_duplicates_after_the_runner_finished_a_task() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        for _ in range(3):
            inst.add_job()
        t1, t2, t3 = ids_of(await rpc.fetch(capacity=3))
        for t in (t1, t2, t3):
            await rpc.ok("UpdateLog", {"taskId": str(t), "rows": [{"content": "a"}]})
            await rpc.ok("UpdateTask", final_state(t))
        # t1: a non-final UpdateTask after the final one: a late heartbeat, not a rerun...
        await rpc.ok("UpdateTask", {"state": {"id": str(t1)}})
        assert sim.ledger.duplicate_executions == 0
        assert sim.ledger.statistics().late_updates == 1
        # ...unless it carries another start time: that is a second execution.
        await rpc.ok("UpdateTask", {"state": {"id": str(t1), "startedAt": "2026-01-01T00:00:00Z"}})
        await rpc.ok("UpdateTask", {"state": {"id": str(t1), "startedAt": "2026-01-01T00:01:00Z"}})
        assert sim.ledger.duplicate_executions == 1
        # t2: new log rows after the final UpdateTask (a resend of stored rows is fine)
        await rpc.ok("UpdateLog", {"taskId": str(t2), "rows": [{"content": "a"}]})
        assert sim.ledger.duplicate_executions == 1
        await rpc.ok("UpdateLog", {"taskId": str(t2), "index": "1", "rows": [{"content": "b"}]})
        # t3: final retries are fine
        await rpc.ok("UpdateTask", final_state(t3))
        assert sim.ledger.duplicate_executions == 2
        assert sim.ledger.tasks[t1].duplicate and sim.ledger.tasks[t2].duplicate
        assert not sim.ledger.tasks[t3].duplicate


async def test_a_second_start_time_is_a_second_execution() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        sim.instances["a"].add_job()
        (t,) = ids_of(await rpc.fetch(capacity=1))
        first = {"state": {"id": str(t), "startedAt": "2026-01-01T00:00:00Z"}}
        await rpc.ok("UpdateTask", first)
        await rpc.ok("UpdateTask", first)  # heartbeats of one execution
        assert sim.ledger.duplicate_executions == 0
        second = {"state": {"id": str(t), "startedAt": "2026-01-01T00:00:07Z"}}
        await rpc.ok("UpdateTask", second)
        assert sim.ledger.duplicate_executions == 1


async def test_zombie_reaper_fails_silent_tasks(autojump_clock: trio.abc.Clock) -> None:
    async with running_sim(InstanceSpec("a", zombie_timeout=600)) as sim:
        async with httpx.AsyncClient() as client:
            rpc = Rpc(sim, client)
            inst = sim.instances["a"]
            inst.add_job()
            inst.add_job()
            silent, busy = ids_of(await rpc.fetch(capacity=2))
            for _ in range(4):  # heartbeats keep `busy` alive well past 600 s
                await trio.sleep(300)
                await rpc.ok("UpdateLog", {"taskId": str(busy)})
            assert inst.tasks[silent].result is Result.FAILURE
            assert all(s.status == "RESULT_FAILURE" for s in inst.tasks[silent].steps)
            assert not inst.tasks[busy].done
            rec = sim.ledger.tasks[silent]
            assert rec.finished_by == "zombie"
            assert rec.finished_at == pytest.approx(600, abs=1)
            # the runner, if it comes back, learns it in the next UpdateTask answer
            got = await rpc.ok("UpdateTask", {"state": {"id": str(silent)}})
            assert got["state"]["result"] == "RESULT_FAILURE"
            await trio.sleep(601)
            snap = sim.ledger.statistics()
            assert snap.zombie == 2 and snap.finished == 2 and snap.lost == 2
            assert snap.outstanding == 0 and snap.results == {"RESULT_FAILURE": 2}


async def test_no_zombie_reaper_when_disabled(autojump_clock: trio.abc.Clock) -> None:
    async with running_sim(InstanceSpec("a", zombie_timeout=None)) as sim:
        async with httpx.AsyncClient() as client:
            sim.instances["a"].add_job()
            await Rpc(sim, client).fetch()
            await trio.sleep(80_000)
            assert sim.ledger.zombie == 0 and sim.ledger.outstanding == 1
            assert sim.ledger.lost == 1  # never finished


async def test_snapshot_is_json_and_has_per_instance_counts() -> None:
    async with running_sim("a", "b") as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client, "b")
        sim.instances["b"].add_job()
        (t,) = ids_of(await rpc.fetch())
        await rpc.ok("UpdateTask", final_state(t, "RESULT_FAILURE"))
        snap = json.loads(json.dumps(sim.ledger.statistics().to_json()))
        keys = {
            "assigned",
            "delivered",
            "finished",
            "lost",
            "zombie",
            "cancelled",
            "duplicate_executions",
            "outstanding",
            "peak_outstanding",
            "results",
        }
        assert keys <= set(snap)
        assert set(snap["instances"]) == {"a", "b"}
        assert snap["instances"]["a"]["assigned"] == 0
        assert snap["instances"]["b"]["results"] == {"RESULT_FAILURE": 1}
        assert "assigned=1 delivered=1 finished=1" in sim.ledger.summary()


def test_ledger_unit() -> None:
    led = Ledger()
    led.add_instance("x")
    a, b = led.next_task_id(), led.next_task_id()
    led.assigned("x", a, 1, 0.0)
    led.assigned("x", b, 2, 0.0)
    led.delivered([a])
    led.delivered([a, b])
    led.finished(a, Result.SUCCESS, "runner", 1.0)
    led.finished(a, Result.FAILURE, "zombie", 2.0)  # a second ending is ignored
    snap = led.statistics()
    assert snap.delivered == 2 and snap.redelivered == 1
    assert snap.duplicate_executions == 0
    assert snap.finished == 1 and snap.zombie == 0 and snap.lost == 1
    assert snap.peak_outstanding == 2 and snap.outstanding == 1


def test_statistics_is_a_frozen_value_and_renders_the_old_json_keys() -> None:
    led = Ledger()
    led.add_instance("y")
    led.add_instance("x")
    t = led.next_task_id()
    led.assigned("x", t, 1, 0.0)
    led.delivered([t])
    led.finished(t, Result.CANCELLED, "cancel", 1.0)
    stats = led.statistics()
    assert stats == led.statistics()  # a value: equal while nothing happens
    assert list(stats.instances) == ["x", "y"]  # sorted, as before
    assert stats.instances["x"].cancelled == 1 and stats.instances["y"].assigned == 0
    assert stats.results == {"RESULT_CANCELLED": 1}
    doc = stats.to_json()
    assert list(doc) == [
        "assigned", "delivered", "redelivered", "finished", "zombie", "cancelled",
        "duplicate_executions", "late_updates", "outstanding", "peak_outstanding",
        "lost", "results", "instances",
    ]
    assert doc["instances"]["x"] == {**stats.instances["x"].to_json()}
    assert "instances" not in doc["instances"]["x"]
    with pytest.raises(AttributeError):
        stats.assigned = 5  # type: ignore[misc]
