"""Pickup latency of the healthy connection (the simulator's ``fine`` instance) beside
misbehaving servers: the promise is that a bad server does not slow the others down."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

import trio

from scheduler.service import Service
from scheduler.sim import InstanceSpec
from tests.support.harness import World, world
from tests.support.polling import wait_for

#: Pickup within one fetch interval: 1 s + 10 % jitter (+ a poll step of the test).
PICKUP = 1.2
#: How long one exchange with a bad server may keep the runner waiting.
FETCH_TIMEOUT = 30.0


def beside_fine(bad: Mapping[str, Mapping[str, object]], *, capacity: int = 4,
                fine: bool = True) -> AbstractAsyncContextManager[World]:
    """The simulator's ``fine`` instance and a connection to each server in ``bad``;
    a graceful stop at the end, after which no connection holds a slot.

    Config and state live on tmpfs when there is one: the healthy connection writes its
    request key (with fsync) twice a second of virtual time.
    """
    return world(None, [InstanceSpec("fine")], seed=5, capacity=capacity,
                 connect=("fine",) if fine else (), others=bad, fetch_interval="1s",
                 fetch_timeout=f"{FETCH_TIMEOUT:g}s", shutdown_timeout="2m", metrics=None,
                 end="drain")


async def pickup_latencies(world: World, jobs: int) -> list[float]:
    """Queue jobs on the healthy instance one by one; how long until each is picked up."""
    fine = world.sim.instances["fine"]
    out = []
    for _ in range(jobs):
        t0 = trio.current_time()
        job = fine.add_job(duration=0.5)
        await wait_for(lambda j=job: fine.task_for_job(j) is not None)  # type: ignore[misc]
        out.append(trio.current_time() - t0)
        await trio.sleep(7.3)
    return out


def declared(service: Service, name: str = "bad") -> bool:
    """The connection ``name`` got past Declare."""
    loop = service.loops.get(name)
    return loop is not None and loop.declared
