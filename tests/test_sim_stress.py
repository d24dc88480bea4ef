"""End to end against faults: a minimal, correct runner loop (plain httpx) must leave the
ledger clean on Forgejo 15, and lose exactly the dropped tasks on Forgejo 14."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import trio

from scheduler.sim import FaultPlan, InstanceSpec, Simulator
from tests.support.noloss import assert_no_loss
from tests.support.sim import Rpc, final_state, ids_of, running_sim

CAPACITY = 4


class MiniRunner:
    """One global capacity, a reservation per fetch kept across unknown outcomes."""

    def __init__(self, sim: Simulator, client: httpx.AsyncClient) -> None:
        self.sim = sim
        self.client = client
        self.free = CAPACITY
        self.changed = trio.Event()
        self.max_running = 0

    def _release(self, n: int) -> None:
        self.free += n
        self.changed.set()
        self.changed = trio.Event()

    async def connection(self, name: str, nursery: trio.Nursery) -> None:
        rpc = Rpc(self.sim, self.client, name)
        inst = self.sim.instances[name]
        while inst.waiting_jobs:
            if self.free == 0:
                await self.changed.wait()
                continue
            k = min(self.free, 2)
            self.free -= k
            key = str(uuid.uuid4())
            while True:  # same key, same capacity until a definite answer
                try:
                    resp = await rpc.call("FetchTask", {"taskCapacity": str(k)}, key=key)
                except httpx.TransportError:
                    await trio.sleep(0.001)
                    continue
                if resp.status_code in (500, 503):
                    await trio.sleep(0.001)
                    continue
                assert resp.status_code == 200, resp.text
                break
            ids = ids_of(resp.json())
            assert len(ids) <= k
            self._release(k - len(ids))
            self.max_running = max(self.max_running, CAPACITY - self.free)
            for task_id in ids:
                nursery.start_soon(self.run_task, rpc, task_id)

    async def run_task(self, rpc: Rpc, task_id: int) -> None:
        await trio.sleep(0.005)
        body = {"taskId": str(task_id), "rows": [{"content": "done"}], "noMore": True}
        await until_ok(rpc, "UpdateLog", body)
        await until_ok(rpc, "UpdateTask", final_state(task_id))
        self._release(1)


async def until_ok(rpc: Rpc, method: str, body: dict[str, Any]) -> None:
    """Retry through injected 503s (a reporter's bounded retry)."""
    for _ in range(1000):
        if (await rpc.call(method, body)).status_code == 200:
            return
        await trio.sleep(0.001)
    raise AssertionError(f"{method} never succeeded")


async def drive(*specs: InstanceSpec, jobs_each: int) -> Simulator:
    async with running_sim(*specs, seed=11) as sim, httpx.AsyncClient() as client:
        for inst in sim.instances.values():
            for _ in range(jobs_each):
                inst.add_job()
        runner = MiniRunner(sim, client)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for name in sim.instances:
                    nursery.start_soon(runner.connection, name, nursery)
        assert runner.max_running <= CAPACITY
        return sim


async def test_forgejo15_with_faults_loses_nothing() -> None:
    plan = FaultPlan(
        drop_after_assign=0.2,
        error_5xx=0.1,
        reset_before_assign=0.05,
        internal_error=0.05,
        fail_update_log=0.1,
        fail_update_task=0.1,
    )
    specs = [InstanceSpec(n, faults=plan) for n in ("a", "b", "c")]
    sim = await drive(*specs, jobs_each=20)
    snap = sim.ledger.statistics()
    assert snap.assigned == snap.delivered == snap.finished == 60, snap
    assert_no_loss(sim)
    assert snap.peak_outstanding <= CAPACITY
    injected = sum(i.faults.injected.get("drop_after_assign", 0) for i in sim.instances.values())
    assert injected > 0  # the faults did happen


async def test_forgejo14_loses_exactly_the_dropped_tasks() -> None:
    spec = InstanceSpec("old", forgejo14=True, faults=FaultPlan(drop_after_assign=0.3))
    sim = await drive(spec, jobs_each=30)
    snap = sim.ledger.statistics()
    dropped_answers = sim.instances["old"].faults.injected.get("drop_after_assign", 0)
    lost = [r for r in sim.ledger.tasks.values() if r.deliveries == 0]
    assert dropped_answers > 0 and len(lost) >= dropped_answers
    assert snap.lost == len(lost) == snap.assigned - snap.delivered
    assert snap.finished == snap.delivered and snap.duplicate_executions == 0
    assert snap.assigned == 30
