"""The whole service against the simulator, over real loopback HTTP, on trio's MockClock.

Tasks run in the SimulatedExecutor (trio sleeps, no processes) so that virtual time
covers minutes of load in milliseconds; the host executor has its own tests with
real processes, and the demo test runs real processes end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from scheduler.keys import KeyStore
from scheduler.service import Service
from scheduler.sim import FaultPlan, InstanceSpec
from tests.support.harness import DEFAULT_EXECUTOR, world
from tests.support.metrics import metric
from tests.support.noloss import assert_no_loss
from tests.support.polling import wait_for
from tests.support.sim import running_sim


async def drain(service: Service) -> None:
    service.request_stop()
    await wait_for(lambda: service.phase == "stopped")


@pytest.mark.parametrize("capacity", [1, 3])
async def test_respond_then_drop_forgejo15_every_task_runs_exactly_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, capacity: int
) -> None:
    faults = FaultPlan(drop_after_assign=0.3, error_5xx=0.1)
    specs = [InstanceSpec("a", faults=faults), InstanceSpec("b", faults=faults)]
    async with world(tmp_path, specs, capacity=capacity) as (sim, service, executor):
        for i in range(20):
            sim.instances["a"].add_job(duration=1 + i % 3)
            sim.instances["b"].add_job(duration=2)
        await wait_for(lambda: sim.ledger.statistics().finished == 40)
        await drain(service)
        snap = sim.ledger.statistics()
    assert_no_loss(sim)
    assert snap.peak_outstanding <= capacity
    assert snap.late_updates == 0  # no heartbeat lands after a final report
    assert sorted(executor.executed) == sorted(set(executor.executed))
    assert len(executor.executed) == 40
    recovered = sum(metric(service, "tasks_recovered_total", connection=c) for c in "ab")
    reused = sum(metric(service, "request_keys_reused_total", connection=c) for c in "ab")
    assert recovered > 0 and reused >= recovered  # the drops really happened and were healed


async def test_forgejo14_ignores_the_key_and_the_simulator_counts_the_loss(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    specs = [InstanceSpec("a", forgejo14=True, faults=FaultPlan(drop_after_assign=0.3),
                          zombie_timeout=None)]
    async with world(tmp_path, specs, capacity=2) as (sim, service, executor):
        for _ in range(20):
            sim.instances["a"].add_job(duration=1)
        inst = sim.instances["a"]
        await wait_for(lambda: not inst.waiting_jobs and all(
            t.done for t in inst.tasks.values() if t.id in executor.executed))
        await drain(service)
        snap = sim.ledger.statistics()
    assert snap.lost > 0  # the tasks inside dropped answers: a retry cannot get them back
    assert snap.lost == snap.assigned - len(executor.executed)
    assert snap.duplicate_executions == 0


async def test_stalled_instance_does_not_delay_the_others(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    specs = [
        InstanceSpec("stuck", faults=FaultPlan(stall_windows=[(0, 10_000)])),
        InstanceSpec("fine"),
    ]
    async with world(tmp_path, specs, capacity=4) as (sim, service, _):
        await trio.sleep(5)  # stuck's first FetchTask is now hanging (timeout 30 s)
        fine = sim.instances["fine"]
        latencies = []
        for _ in range(10):
            t0 = trio.current_time()
            job = fine.add_job(duration=0.5)
            await wait_for(lambda j=job: fine.task_for_job(j) is not None)  # type: ignore[misc]
            latencies.append(trio.current_time() - t0)
            await trio.sleep(7.3)
        stuck_loop = service.loops["stuck"]
        assert stuck_loop.phase.value in ("fetching", "unresolved")
        # stuck's in-doubt reservation is bounded by its own share of the pool.
        assert service.ledger.reserved("stuck") <= 2
    # Pickup within one fetch interval (1 s ± 10 % jitter), never a fetch_timeout.
    assert max(latencies) <= 1.2, latencies


async def test_unresolved_key_survives_a_crash_and_brings_the_task_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    spec = InstanceSpec("a", faults=FaultPlan(drop_after_assign=1.0))
    async with running_sim(spec, seed=1) as sim:
        async with world(tmp_path, [], capacity=2, sim=sim, end="crash") as (_, svc1, executor):
            sim.instances["a"].add_job(duration=3)
            await wait_for(lambda: sim.ledger.statistics().assigned == 1)
            await trio.sleep(0.5)
            assert executor.executed == []
            # The key is in doubt since its first unknown outcome: exported for alerting.
            since = metric(svc1, "request_key_unresolved_since_timestamp_seconds", connection="a")
            assert since > 0
        # The service was cancelled mid-retry (as in a crash): the key is on disk.
        pending = KeyStore(tmp_path / "state", "a").load().pending
        assert pending is not None and pending.task_capacity >= 1
        sim.instances["a"].set_faults(FaultPlan())
        async with world(tmp_path, [], capacity=2, sim=sim) as (_, service2, executor2):
            await wait_for(lambda: sim.ledger.statistics().finished == 1)
            await drain(service2)
    assert_no_loss(sim)
    assert len(executor2.executed) == 1
    assert metric(service2, "tasks_recovered_total", connection="a") == 1
    assert metric(service2, "request_key_unresolved_since_timestamp_seconds", connection="a") == 0
    assert KeyStore(tmp_path / "state", "a").load().pending is None


async def test_more_tasks_than_slots_after_restart_are_reported_failed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    spec = InstanceSpec("a", faults=FaultPlan(drop_after_assign=1.0))
    async with running_sim(spec, seed=1) as sim:
        async with world(tmp_path, [], capacity=3, sim=sim, end="crash"):
            for _ in range(3):
                sim.instances["a"].add_job(duration=5)
            await wait_for(lambda: sim.ledger.statistics().assigned == 3)
        sim.instances["a"].set_faults(FaultPlan())
        # Restart with a smaller capacity: the key brings back 3 tasks for 2 slots.
        async with world(tmp_path, [], capacity=2, sim=sim) as (_, service, executor):
            await wait_for(lambda: sim.ledger.statistics().finished == 3)
            await drain(service)
    snap = sim.ledger.statistics()
    assert_no_loss(sim)
    assert len(executor.executed) == 2
    assert metric(service, "tasks_rejected_total", connection="a") == 1
    assert snap.results == {"RESULT_FAILURE": 1, "RESULT_SUCCESS": 2}
    (rejected,) = [t for t in sim.instances["a"].tasks.values() if t.id not in executor.executed]
    assert any("no runner slot is free" in line for line in rejected.log_lines)


async def test_no_fetch_while_a_connection_has_no_slot(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    specs = [InstanceSpec("a"), InstanceSpec("b")]
    async with world(tmp_path, specs, capacity=1) as (sim, service, _):
        sim.instances["a"].add_job(duration=100)
        await wait_for(lambda: service.ledger.running("a") == 1)
        before = sim.instances["b"].rpc_counts.get("FetchTask", 0)
        sim.instances["b"].add_job(duration=1)
        await trio.sleep(90)
        assert sim.instances["b"].rpc_counts.get("FetchTask", 0) == before
        assert service.ledger.is_hungry("b")
        assert metric(service, "connection_waiting_for_slot", connection="b") == 1
        assert metric(service, "connection_waiting_for_slot", connection="a") == 1  # to poll again
        await wait_for(lambda: sim.ledger.statistics().finished == 2)


async def test_refused_fetch_releases_slots_and_marks_the_connection_down(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    specs = [InstanceSpec("a"), InstanceSpec("b")]
    async with world(tmp_path, specs, capacity=2) as (sim, service, _):
        await wait_for(lambda: len(service.loops) == 2 and all(
            loop.declared for loop in service.loops.values()))
        sim.instances["b"].runner.token = "0" * 40  # b's registration is revoked
        await wait_for(lambda: metric(service, "connection_up", connection="b") == 0)
        assert service.ledger.held("b") == 0
        assert metric(service, "fetch_requests_total", connection="b", outcome="unauthorized") >= 1
        fetches = sim.instances["b"].rpc_counts.get("FetchTask", 0)
        # a alone may now use the whole pool.
        for _ in range(4):
            sim.instances["a"].add_job(duration=50)
        await wait_for(lambda: service.ledger.running("a") == 2)
        await trio.sleep(600)
        # While down, b probes with Declare only: no FetchTask, no slot.
        assert sim.instances["b"].rpc_counts.get("FetchTask", 0) == fetches
        assert sim.instances["b"].rpc_counts.get("Declare", 0) >= 2


async def test_weighted_shares_under_saturation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    specs = [InstanceSpec(n) for n in ("a", "b", "c")]
    weights = {"a": {"weight": 1}, "b": {"weight": 1}, "c": {"weight": 2}}
    async with world(tmp_path, specs, capacity=4, tuning=weights) as (sim, service, _):
        for name in "abc":
            for _ in range(200):
                sim.instances[name].add_job(duration=10)
        held = {n: 0.0 for n in "abc"}
        await trio.sleep(60)
        for _ in range(300):
            await trio.sleep(1)
            for n in "abc":
                held[n] += service.ledger.held(n)
    total = sum(held.values())
    assert held["c"] / total == pytest.approx(0.5, abs=0.02)
    assert held["a"] / total == pytest.approx(0.25, abs=0.02)
    assert metric(service, "fairness_jain_index") > 0.95


async def test_graceful_stop_lets_running_tasks_finish(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path, [InstanceSpec("a")], capacity=2) as (sim, service, _):
        sim.instances["a"].add_job(duration=50)
        await wait_for(lambda: service.ledger.running("a") == 1)
        t0 = trio.current_time()
        sim.instances["a"].add_job(duration=1)  # arrives after the stop: must not be taken
        service.request_stop()
        await wait_for(lambda: service.phase == "stopped")
        assert trio.current_time() - t0 >= 45
    snap = sim.ledger.statistics()
    assert snap.finished == 1 and snap.results == {"RESULT_SUCCESS": 1}
    assert len(sim.instances["a"].waiting_jobs) == 1


async def test_shutdown_timeout_cancels_and_reports(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    specs = [InstanceSpec("a")]
    async with world(tmp_path, specs, capacity=1, shutdown_timeout=5) as (sim, service, _):
        sim.instances["a"].add_job(duration=500)
        await wait_for(lambda: service.ledger.running("a") == 1)
        service.request_stop()
        await wait_for(lambda: service.phase == "stopped", within=60)
    snap = sim.ledger.statistics()
    assert_no_loss(sim)
    assert snap.results == {"RESULT_CANCELLED": 1}


async def test_drain_keeps_retrying_an_unresolved_key(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    specs = [InstanceSpec("a", faults=FaultPlan(drop_after_assign=1.0))]
    bound = {"shutdown_resolve_timeout": "5m"}
    async with world(tmp_path, specs, capacity=2, shutdown_timeout=300,
                     runner_extra=bound) as (sim, service, ex):
        sim.instances["a"].add_job(duration=5)
        await wait_for(lambda: sim.ledger.statistics().assigned == 1)
        service.request_stop()
        await trio.sleep(60)  # still draining: the task may be (and is) assigned
        assert service.phase == "draining"
        sim.instances["a"].set_faults(FaultPlan())
        await wait_for(lambda: service.phase == "stopped")
    assert service.stop_report is not None and service.stop_report.clean  # exit status 0
    assert ex.executed == list(sim.instances["a"].tasks)
    snap = sim.ledger.statistics()
    assert_no_loss(sim)
    assert snap.results == {"RESULT_SUCCESS": 1}


async def test_container_labels_are_not_declared_so_their_jobs_are_not_taken(
    tmp_path: Path,
) -> None:
    # Real time, real HostExecutor (the one `run` uses), labels per connection. Before
    # issue 14 the docker label was declared and its job taken and failed ("needs a
    # container executor", still the host executor's answer: test_executor_host); now
    # it is not declared, so Forgejo keeps the job for a runner that can run it.
    async with world(tmp_path, ["a"], seed=1, capacity=1, fetch_interval=0.1,
                     labels=("sim:host", "big:docker://node:20"), executor=DEFAULT_EXECUTOR,
                     service_seed=1) as (sim, service, _):
        inst = sim.instances["a"]
        docker_job = inst.add_job(runs_on=("big",), duration=0.1)
        host_job = inst.add_job(runs_on=("sim",), duration=0.1)
        await wait_for(lambda: sim.ledger.statistics().finished == 1, within=30)
        service.request_stop()
        await wait_for(lambda: service.phase == "stopped", within=30)
    assert inst.runner.labels == ["sim"]
    assert inst.task_for_job(docker_job) is None
    assert [job.id for job in inst.waiting_jobs] == [docker_job]
    task = inst.task_for_job(host_job)
    assert task is not None and task.result.name == "SUCCESS"


