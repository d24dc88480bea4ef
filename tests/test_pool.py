"""scheduler.pool alone: grants wake waiters, statistics(), repr, and what it exports."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from scheduler.config import Share
from scheduler.errors import PoolClosed
from scheduler.metrics import Metrics
from scheduler.pool import PoolStatistics, SlotPool
from scheduler.slots import SlotLedger


def make_pool(capacity: int = 3) -> tuple[SlotPool, Metrics]:
    metrics = Metrics(capacity=capacity, connections=["a", "b"], version="0")
    ledger = SlotLedger(capacity)
    ledger.add("a", Share(2, 0, capacity))
    ledger.add("b")
    return SlotPool(ledger, metrics), metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(f"forgejo_scheduler_{name}", labels)


async def test_statistics_follow_grants_and_the_peak_stays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool, metrics = make_pool()
    assert pool.statistics() == PoolStatistics(
        closed=False, waiting=(), peak_in_use=0, slots=pool.ledger.statistics()
    )
    k = await pool.acquire("a")
    stats = pool.statistics()
    assert k == 2 and stats.peak_in_use == 2 and stats.slots.connections["a"].reserved == 2
    pool.resolve("a", 1)
    pool.finish("a")
    stats = pool.statistics()
    assert stats.slots.in_use == 0 and stats.peak_in_use == 2  # the peak is kept
    # the pool itself exports the ledger's state and each grant's wait
    assert sample(metrics, "slots_held", connection="a") == 0
    assert sample(metrics, "slot_wait_seconds_count", connection="a") == 1


async def test_a_waiter_shows_in_statistics_and_repr(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool, metrics = make_pool(capacity=1)
    assert await pool.acquire("a") == 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.acquire, "b")
        await trio.testing.wait_all_tasks_blocked()
        assert pool.statistics().waiting == ("b",)
        assert pool.statistics().slots.connections["b"].hungry
        assert sample(metrics, "connection_waiting_for_slot", connection="b") == 1
        assert repr(pool) == "<SlotPool open in use 1/1 waiting: b>"
        await trio.sleep(7)
        pool.release("a")  # b is granted after waiting 7 s
    assert sample(metrics, "slot_wait_seconds_sum", connection="b") == pytest.approx(7)
    pool.close()
    assert pool.statistics().closed and repr(pool) == "<SlotPool closed in use 1/1 waiting: ->"
    with pytest.raises(PoolClosed):
        await pool.acquire("a")
