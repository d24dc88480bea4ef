"""Reloading the config of a running service (SIGHUP / --watch-config)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from scheduler.config import load_config
from scheduler.reload import plan_reload
from scheduler.sim import InstanceSpec, Simulator
from tests.support.config import sim_config
from tests.support.harness import world
from tests.support.metrics import metric
from tests.support.noloss import assert_no_loss
from tests.support.polling import wait_for


def write(sim: Simulator, tmp_path: Path, *, capacity: int,
          connections: dict[str, dict[str, Any]], only: set[str] | None = None) -> Path:
    """``tmp_path/config.toml`` for the instances ``only`` (all by default)."""
    names = [n for n in sim.instances if only is None or n in only]
    return sim_config(tmp_path, sim, capacity=capacity, connect=names, tuning=connections,
                      fetch_interval=1.0, metrics="127.0.0.1:0")


def test_plan_keeps_what_cannot_change_live(tmp_path: Path) -> None:
    sim = Simulator(["a", "b"])
    sim.address = ("127.0.0.1", 1)
    old = load_config(write(sim, tmp_path, capacity=2, connections={}))
    new_path = write(sim, tmp_path, capacity=3, connections={"a": {"weight": 2}},
                     only={"a"})
    new_path.write_text(new_path.read_text().replace('listen = "127.0.0.1:0"',
                                                     'listen = "127.0.0.1:9999"'))
    sim.address = ("127.0.0.1", 2)  # a's URL changes too
    text = new_path.read_text().replace("127.0.0.1:1/", "127.0.0.1:2/")
    new_path.write_text(text)
    plan = plan_reload(old, load_config(new_path))
    assert plan.capacity_changed and plan.removed == ("b",) and plan.added == ()
    assert [c.name for c in plan.retuned] == ["a"]
    assert plan.config.connections[0].url == old.connections[0].url  # kept
    assert plan.config.metrics == old.metrics
    assert any("url" in k for k in plan.kept) and any("metrics" in k for k in plan.kept)


async def test_reload_applies_capacity_weights_and_connections(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with world(tmp_path, ["a", "b", "c"], seed=2, capacity=2, connect=("a", "b"),
                     service_seed=1) as w:
        sim, service, path = w.sim, w.service, w.config
        for n in "abc":
            for _ in range(100):
                sim.instances[n].add_job(duration=20)
        await wait_for(lambda: service.ledger.running("a") + service.ledger.running("b") == 2)
        long_task = next(t for t in sim.instances["b"].tasks.values())

        # Grow the pool, weigh a up, remove b (it drains), add c.
        path = write(sim, tmp_path, capacity=5, connections={"a": {"weight": 3}},
                     only={"a", "c"})
        assert service.reload_file(path)
        await wait_for(lambda: service.ledger.names == ["a", "c"], within=120)
        assert sim.instances["b"].tasks[long_task.id].result.name == "SUCCESS"  # not disturbed
        assert metric(service, "capacity_slots") == 5
        assert metric(service, "connection_weight", connection="a") == 3
        assert service.metrics.registry.get_sample_value(
            "forgejo_scheduler_slots_held", {"connection": "b"}) is None
        b_fetches = sim.instances["b"].rpc_counts.get("FetchTask", 0)
        await trio.sleep(200)
        assert sim.instances["b"].rpc_counts.get("FetchTask", 0) == b_fetches
        # Saturated: a (weight 3) and c (weight 1) share 5 slots about 4:1.
        held = {"a": 0, "c": 0}
        for _ in range(100):
            await trio.sleep(1)
            for n in held:
                held[n] += service.ledger.held(n)
        assert held["a"] > 2.5 * held["c"] > 0
        assert service.ledger.capacity - service.ledger.free == 5

        # An invalid file is refused; the running config stays.
        bad = tmp_path / "bad.toml"
        bad.write_text(path.read_text().replace("capacity = 5", "capacity = -1"))
        assert not service.reload_file(bad)
        assert service.ledger.capacity == 5
        assert any("reload refused" in r.message and "runner.capacity" in r.message
                   for r in caplog.records)
        service.request_stop()
        await wait_for(lambda: service.phase == "stopped")
    snap = sim.ledger.statistics()
    assert_no_loss(sim)
    assert snap.peak_outstanding <= 5


async def test_relabel_declares_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path, [InstanceSpec("a", runs_on=("gpu",))], seed=2, capacity=1,
                     service_seed=1) as w:
        sim, service, path = w.sim, w.service, w.config
        job = sim.instances["a"].add_job(runs_on=("gpu",), duration=1)
        await trio.sleep(30)
        assert sim.instances["a"].task_for_job(job) is None  # label "sim" does not match "gpu"
        path.write_text(path.read_text().replace('labels = ["sim:host"]',
                                                 'labels = ["gpu:host"]'))
        assert service.reload_file(path)
        await wait_for(lambda: sim.ledger.statistics().finished == 1, within=60)
        service.request_stop()
        await wait_for(lambda: service.phase == "stopped")


def test_plan_retunes_a_new_fetch_interval_max(tmp_path: Path) -> None:
    sim = Simulator(["a", "b"])
    sim.address = ("127.0.0.1", 1)
    old = load_config(write(sim, tmp_path, capacity=2, connections={}))
    new = load_config(write(sim, tmp_path, capacity=2,
                            connections={"b": {"fetch_interval_max": "1m"}}))
    plan = plan_reload(old, new)
    assert [c.name for c in plan.retuned] == ["b"] and plan.kept == ()
    assert plan.config.connections[1].poll_ceiling == 60.0
