"""kill -9 the daemon at chosen points, restart it, and check the simulator's ledger.

The promise: every assigned task ends with a final state, none runs twice, and a
task that was running when the process died is reported failed on restart (it
cannot be resumed) instead of sitting "running" until Forgejo's zombie timeout.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest
import trio
import trio.testing

from scheduler.keys import KeyStore, PendingFetch
from scheduler.sim import FaultPlan, InstanceSpec, SimTask
from tests.support.harness import daemon_world, world
from tests.support.noloss import assert_no_loss
from tests.support.polling import wait_for
from tests.support.sim import running_sim

RESTARTED = "the runner restarted while this task was running"


async def test_kill9_after_assignment_before_the_answer(tmp_path: Path) -> None:
    # The server assigns, then takes 30 s to answer: the process dies in between.
    spec = InstanceSpec("a", faults=FaultPlan(delay=30))
    async with daemon_world(tmp_path, [spec], seed=1, capacity=2, fetch_interval=0.2) as w:
        sim = w.sim
        first = await w.start()
        sim.instances["a"].add_job(duration=0.3)
        await wait_for(lambda: sim.ledger.statistics().assigned == 1, within=60)
        first.kill9()
        assert await first.wait() == -signal.SIGKILL
        pending = KeyStore(tmp_path / "state", "a").load().pending
        assert pending is not None  # the key was on disk before the request went out

        sim.instances["a"].set_faults(FaultPlan())
        second = await w.start()
        await wait_for(lambda: sim.ledger.statistics().finished == 1, within=60)
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0
    snap = sim.ledger.statistics()
    assert_no_loss(sim)
    assert snap.results == {"RESULT_SUCCESS": 1}
    assert b"retrying the request key left by the last run" in second.log
    assert KeyStore(tmp_path / "state", "a").load().pending is None


async def test_kill9_while_tasks_run_reports_them_failed_on_restart(tmp_path: Path) -> None:
    async with daemon_world(tmp_path, ["a", "b"], seed=1, capacity=3, fetch_interval=0.2) as w:
        sim = w.sim
        first = await w.start()
        for name in "ab":
            sim.instances[name].add_job(duration=3)

        def running_tasks() -> list[SimTask]:
            return [t for i in sim.instances.values() for t in i.tasks.values()
                    if t.updates and not t.done]

        await wait_for(lambda: len(running_tasks()) == 2, within=60)
        first.kill9()
        await first.wait()
        orphans = {t.id for t in running_tasks()}

        second = await w.start()
        await wait_for(lambda: all(sim.instances[n].tasks[t].done for n in "ab"
                                for t in sim.instances[n].tasks if t in orphans), within=60)
        sim.instances["a"].add_job(duration=0.2)  # and it goes on working
        await wait_for(lambda: sim.ledger.statistics().finished == 3, within=60)
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0
    snap = sim.ledger.statistics()
    assert_no_loss(sim)
    assert snap.results == {"RESULT_FAILURE": 2, "RESULT_SUCCESS": 1}
    for inst in sim.instances.values():
        for task in inst.tasks.values():
            if task.id in orphans:
                assert any(RESTARTED in line for line in task.log_lines)
                assert task.log_archived
    assert b"cannot be resumed" in second.log


async def test_key_persisted_but_never_sent_behaves_as_a_fresh_request(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The process died between writing the key and sending it: the server never saw
    # the key, so the retry is an ordinary fetch recorded under it.
    async with running_sim("a", seed=1) as sim:
        store = KeyStore(tmp_path / "state", "a")
        store.load()
        await store.set_pending(PendingFetch("never-sent-key", 2, 0))
        sim.instances["a"].add_job(duration=1)
        async with world(tmp_path, sim=sim, capacity=2, service_seed=1) as (_, service, _):
            await wait_for(lambda: sim.ledger.statistics().finished == 1, within=120)
            (task,) = sim.instances["a"].tasks.values()
            assert task.request_key == "never-sent-key"
            service.request_stop()
            await wait_for(lambda: service.phase == "stopped", within=60)
    assert_no_loss(sim)
    assert KeyStore(tmp_path / "state", "a").load().pending is None


async def test_orphan_that_had_already_finished_is_settled_quietly(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Killed after the final report was acknowledged but before the id left the state
    # file: on restart the log is archived already; the runner must not retry forever.
    caplog.set_level(logging.INFO)
    async with running_sim("a", seed=1) as sim:
        sim.instances["a"].add_job(duration=1)
        async with world(tmp_path, sim=sim, capacity=1, service_seed=1) as (_, service, _):
            await wait_for(lambda: sim.ledger.statistics().finished == 1, within=120)
            service.request_stop()
            await wait_for(lambda: service.phase == "stopped", within=60)
        (task_id,) = sim.instances["a"].tasks
        store = KeyStore(tmp_path / "state", "a")
        store.load()
        await store.resolve((task_id,))  # as if the process died before forgetting it
        async with world(tmp_path, sim=sim, capacity=1, service_seed=1) as (_, again, _):
            await wait_for(lambda: KeyStore(tmp_path / "state", "a").load().running == (),
                           within=120)
            assert again.ledger.running("a") == 0
            sim.instances["a"].add_job(duration=1)  # the slot is free again
            await wait_for(lambda: sim.ledger.statistics().finished == 2, within=120)
            again.request_stop()
            await wait_for(lambda: again.phase == "stopped", within=60)
    snap = sim.ledger.statistics()
    assert_no_loss(sim)
    assert snap.results == {"RESULT_SUCCESS": 2}
    assert not any(RESTARTED in line for line in sim.instances["a"].tasks[task_id].log_lines)
    assert any("had already ended (success)" in r.message for r in caplog.records)
    assert not any("gave up" in r.message for r in caplog.records)
