"""Seeded Poisson arrivals under trio's MockClock."""

from __future__ import annotations

import statistics

import pytest
import trio

from scheduler.sim import InstanceSpec, Simulator
from tests.support.sim import running_sim


def arrivals(sim: Simulator, name: str = "a") -> list[tuple[float, float]]:
    return [(j.created_at, j.duration) for j in sim.instances[name].jobs.values()]


async def test_poisson_rate_and_durations(autojump_clock: trio.abc.Clock) -> None:
    spec = InstanceSpec("a", rate=2.0, duration_range=(0.5, 3.0))
    async with running_sim(spec, seed=3) as sim:
        start = trio.current_time()
        await trio.sleep(1000)
        jobs = arrivals(sim)
        assert 1800 < len(jobs) < 2200  # mean 2000, sd ≈ 45
        assert all(0.5 <= d <= 3.0 for _, d in jobs)
        gaps = [b - a for (a, _), (b, _) in zip([(start, 0.0), *jobs], jobs, strict=False)]
        assert statistics.mean(gaps) == pytest.approx(0.5, rel=0.1)
        # exponential gaps: the standard deviation is close to the mean
        assert statistics.stdev(gaps) == pytest.approx(0.5, rel=0.15)
        assert sim.instances["a"].tasks_version == len(jobs)


async def run_for(seed: int, seconds: float) -> list[tuple[float, float]]:
    specs = InstanceSpec("a", rate=1.0), InstanceSpec("b", rate=1.0)
    async with running_sim(*specs, seed=seed) as sim:
        t0 = trio.current_time()
        await trio.sleep(seconds)
        return [(round(t - t0, 9), d) for t, d in arrivals(sim)]


async def test_same_seed_same_arrivals(autojump_clock: trio.abc.Clock) -> None:
    a, b, c = await run_for(5, 50), await run_for(5, 50), await run_for(6, 50)
    assert a == b and a != c


async def test_max_jobs_and_stop(autojump_clock: trio.abc.Clock) -> None:
    specs = (InstanceSpec("a", rate=10.0, max_jobs=7), InstanceSpec("b", rate=10.0))
    async with running_sim(*specs) as sim:
        await trio.sleep(10)
        assert len(sim.instances["a"].jobs) == 7
        assert sim.workloads["a"].added == 7
        sim.stop_arrivals()
        count = len(sim.instances["b"].jobs)
        assert count > 50
        await trio.sleep(100)
        assert len(sim.instances["b"].jobs) == count
        assert sim.workloads["b"].stopped


async def test_no_arrivals_at_rate_zero(autojump_clock: trio.abc.Clock) -> None:
    async with running_sim("a") as sim:
        await trio.sleep(1000)
        assert sim.instances["a"].jobs == {}
