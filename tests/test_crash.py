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

from scheduler.config import load_config
from scheduler.executor.simulated import SimulatedExecutor
from scheduler.keys import KeyStore, PendingFetch
from scheduler.service import Service
from scheduler.sim import FaultPlan, InstanceSpec, Simulator
from tests.conftest import wait_for
from tests.daemon import Daemon

RESTARTED = "the runner restarted while this task was running"


async def test_kill9_after_assignment_before_the_answer(tmp_path: Path) -> None:
    # The server assigns, then takes 30 s to answer: the process dies in between.
    sim = Simulator([InstanceSpec("a", faults=FaultPlan(delay=30))], seed=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve, "127.0.0.1", 0)
        config = sim.write_runner_config(tmp_path / "config.toml", capacity=2,
                                         state_dir=tmp_path / "state", fetch_interval=0.2)
        first = Daemon(config)
        await first.start(nursery)
        sim.instances["a"].add_job(duration=0.3)
        await wait_for(lambda: sim.ledger.statistics().assigned == 1, within=60)
        first.kill9()
        assert await first.wait() == -signal.SIGKILL
        pending = KeyStore(tmp_path / "state", "a").load().pending
        assert pending is not None  # the key was on disk before the request went out

        sim.instances["a"].set_faults(FaultPlan())
        second = Daemon(config)
        await second.start(nursery)
        await wait_for(lambda: sim.ledger.statistics().finished == 1, within=60)
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0
        nursery.cancel_scope.cancel()
    snap = sim.ledger.statistics()
    assert snap.lost == 0 and snap.duplicate_executions == 0
    assert snap.results == {"RESULT_SUCCESS": 1}
    assert b"retrying the request key left by the last run" in second.log
    assert KeyStore(tmp_path / "state", "a").load().pending is None


async def test_kill9_while_tasks_run_reports_them_failed_on_restart(tmp_path: Path) -> None:
    sim = Simulator([InstanceSpec("a"), InstanceSpec("b")], seed=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve, "127.0.0.1", 0)
        config = sim.write_runner_config(tmp_path / "config.toml", capacity=3,
                                         state_dir=tmp_path / "state", fetch_interval=0.2)
        first = Daemon(config)
        await first.start(nursery)
        for name in "ab":
            sim.instances[name].add_job(duration=3)
        running = lambda: [t for i in sim.instances.values() for t in i.tasks.values()  # noqa: E731
                           if t.updates and not t.done]
        await wait_for(lambda: len(running()) == 2, within=60)
        first.kill9()
        await first.wait()
        orphans = {t.id for t in running()}

        second = Daemon(config)
        await second.start(nursery)
        await wait_for(lambda: all(sim.instances[n].tasks[t].done for n in "ab"
                                for t in sim.instances[n].tasks if t in orphans), within=60)
        sim.instances["a"].add_job(duration=0.2)  # and it goes on working
        await wait_for(lambda: sim.ledger.statistics().finished == 3, within=60)
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0
        nursery.cancel_scope.cancel()
    snap = sim.ledger.statistics()
    assert snap.lost == 0 and snap.duplicate_executions == 0
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
    sim = Simulator(["a"], seed=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve, "127.0.0.1", 0)
        path = sim.write_runner_config(tmp_path / "config.toml", capacity=2,
                                       state_dir=tmp_path / "state", fetch_interval=1.0)
        store = KeyStore(tmp_path / "state", "a")
        store.load()
        store.set_pending(PendingFetch("never-sent-key", 2, 0))
        sim.instances["a"].add_job(duration=1)
        service = Service(load_config(path), executor=SimulatedExecutor(), seed=1)
        await nursery.start(service.run)
        await wait_for(lambda: sim.ledger.statistics().finished == 1, within=120)
        (task,) = sim.instances["a"].tasks.values()
        assert task.request_key == "never-sent-key"
        service.request_stop()
        await wait_for(lambda: service.phase == "stopped", within=60)
        nursery.cancel_scope.cancel()
    assert sim.ledger.statistics().lost == 0
    assert KeyStore(tmp_path / "state", "a").load().pending is None


async def test_orphan_that_had_already_finished_is_settled_quietly(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Killed after the final report was acknowledged but before the id left the state
    # file: on restart the log is archived already; the runner must not retry forever.
    caplog.set_level(logging.INFO)
    sim = Simulator(["a"], seed=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve, "127.0.0.1", 0)
        path = sim.write_runner_config(tmp_path / "config.toml", capacity=1,
                                       state_dir=tmp_path / "state", fetch_interval=1.0)
        sim.instances["a"].add_job(duration=1)
        service = Service(load_config(path), executor=SimulatedExecutor(), seed=1)
        await nursery.start(service.run)
        await wait_for(lambda: sim.ledger.statistics().finished == 1, within=120)
        service.request_stop()
        await wait_for(lambda: service.phase == "stopped", within=60)
        (task_id,) = sim.instances["a"].tasks
        store = KeyStore(tmp_path / "state", "a")
        store.load()
        store.resolve((task_id,))  # as if the process died before forgetting it
        again = Service(load_config(path), executor=SimulatedExecutor(), seed=1)
        await nursery.start(again.run)
        await wait_for(lambda: KeyStore(tmp_path / "state", "a").load().running == (), within=120)
        assert again.ledger.running("a") == 0
        sim.instances["a"].add_job(duration=1)  # the slot is free again
        await wait_for(lambda: sim.ledger.statistics().finished == 2, within=120)
        again.request_stop()
        await wait_for(lambda: again.phase == "stopped", within=60)
        nursery.cancel_scope.cancel()
    snap = sim.ledger.statistics()
    assert snap.results == {"RESULT_SUCCESS": 2} and snap.duplicate_executions == 0
    assert not any(RESTARTED in line for line in sim.instances["a"].tasks[task_id].log_lines)
    assert any("had already ended (success)" in r.message for r in caplog.records)
    assert not any("gave up" in r.message for r in caplog.records)
