"""``ours``: the real service (scheduler.service.Service), configured through a real file.

Nothing is modelled here: the config the simulator writes is loaded with
``load_config``, the service runs exactly as ``forgejo-scheduler run`` does, except
that tasks run in the harness's RecordingExecutor and its clients count FetchTask
calls (the ``client_factory`` seam the service offers for tests).
"""

from __future__ import annotations

import trio

from bench.harness import World
from scheduler.config import ConnectionSettings, load_config
from scheduler.keys import on_the_event_loop
from scheduler.protocol import RunnerClient
from scheduler.service import Service


async def run(
    world: World, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    sc = world.scenario
    path = world.sim.write_runner_config(
        world.tmp / "config.toml",
        capacity=sc.capacity,
        state_dir=world.tmp / "state",
        fetch_timeout=sc.fetch_timeout,
        report_interval=sc.report_interval,
        shutdown_timeout=sc.drain,
        connections={
            c.name: {"weight": c.weight, "fetch_interval": c.fetch_interval}
            | ({} if c.fetch_interval_max is None else {"fetch_interval_max": c.fetch_interval_max})
            for c in sc.conns
        },
    )

    def client(settings: ConnectionSettings, timeout: float) -> RunnerClient:
        return world.client(settings.name, timeout)

    # Virtual time: the state files are written inline, taking no virtual time (a
    # MockClock cannot see the worker thread the service uses in real time).
    service = Service(load_config(path), executor=world.executor, client_factory=client,
                      seed=world.seed, disk_write=on_the_event_loop)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        task_status.started()
        await stop.wait()
        service.request_stop()
