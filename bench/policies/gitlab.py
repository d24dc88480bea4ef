"""``gitlab``: a model of GitLab Runner's slot offering (``commands/multi.go``), written here.

What it models (shared/reference/anchors.md §1.2):

* ``concurrent`` = capacity worker goroutines; a worker is a slot: it makes the job
  request itself and then runs the job, so a request in flight holds a slot;
* ``feedRunners``: forever, for each ``[[runners]]`` entry in order, an *unbuffered*
  send to the workers' channel (it blocks until a worker is idle), then a sleep of
  ``check_interval / N``. GitLab has one global ``check_interval`` (default 3 s), no
  per-entry interval and no weights, so the scenario's per-connection fetch
  intervals and weights do not apply here;
* after a worker received a job, ``requeueRunner``: a *non-blocking* send of the same
  entry (an idle worker, if any, polls it again at once; ``strict_check_interval`` off,
  the default);
* ``request_concurrency`` 1 (the default; the adaptive limit stays between 1 and it):
  a worker fed an entry that already has a request in flight returns at once;
* one job per request, and **no idempotency key**: each request goes out with a fresh
  ``x-runner-request-key``, so a retried or repeated request never replays;
* the retry requester: 408, 429, 500, 502, 503, 504 and ≥ 512 are retried up to
  5 attempts with exponential backoff from 100 ms; transport errors are not;
* the health helper: a request that failed at the transport level or got a 403 is
  unhealthy; after 3 in a row the entry is not fed for ``unhealthy_interval`` (60 min);
* graceful stop: no more feeding, running jobs get ``drain`` seconds, then are cancelled.

Shared with every policy: our client (with the scenario's ``fetch_timeout`` per call),
``run_task``, the executor and the simulator.
"""

from __future__ import annotations

import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable

import attrs
import trio

from bench.harness import World
from scheduler import __version__
from scheduler.errors import ConnectError, RpcError, TransportFailure
from scheduler.protocol import RunnerClient, Task
from scheduler.task.lifecycle import run_task

log = logging.getLogger(__name__)

REQUEST_CONCURRENCY = 1
UNHEALTHY_REQUESTS_LIMIT = 3
UNHEALTHY_INTERVAL = 3600.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_ATTEMPTS = 5
BACKOFF_MIN = 0.1
BACKOFF_MAX = 60.0


@attrs.define
class _Entry:
    name: str
    client: RunnerClient
    requests: int = 0
    failures: int = 0
    last_check: float = 0.0


async def run(
    world: World, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    sc = world.scenario
    rng = random.Random(f"{world.seed}/gitlab")
    send, receive = trio.open_memory_channel[_Entry](0)  # unbuffered, like the Go channel
    job_scopes: set[trio.CancelScope] = set()
    drain_deadline = [float("inf")]
    idle: set[trio.CancelScope] = set()
    stopping = False

    def healthy(entry: _Entry) -> bool:
        if entry.failures < UNHEALTHY_REQUESTS_LIMIT:
            return True
        if trio.current_time() - entry.last_check > UNHEALTHY_INTERVAL:
            entry.failures, entry.last_check = 0, trio.current_time()
            return True
        return False

    def mark_health(entry: _Entry, ok: bool) -> None:
        if ok:
            entry.failures, entry.last_check = 0, trio.current_time()
        else:
            entry.failures += 1

    async def request_job(entry: _Entry) -> tuple[Task | None, bool]:
        for attempt in range(MAX_ATTEMPTS):
            try:
                resp = await entry.client.fetch_task(
                    tasks_version=0, task_capacity=1, request_key=str(uuid.uuid4())
                )
            except ConnectError as exc:
                status = exc.http_status or 0
                retry = status in RETRY_STATUSES or status >= 512
                if retry and attempt < MAX_ATTEMPTS - 1:
                    await trio.sleep(rng.uniform(BACKOFF_MIN, min(BACKOFF_MAX, 0.1 * 2**attempt)))
                    continue
                return None, status != 403  # 403 forbidden: unhealthy; 503 and the rest: healthy
            except TransportFailure:
                return None, False  # clientError: unhealthy
            if len(resp.tasks) > 1:
                log.error("%s: %d jobs for one request", entry.name, len(resp.tasks))
            return (resp.tasks[0] if resp.tasks else None), True
        return None, True

    async def process(entry: _Entry) -> None:
        if entry.requests >= REQUEST_CONCURRENCY:
            return
        entry.requests += 1
        try:
            task, ok = await request_job(entry)
        finally:
            entry.requests -= 1
        mark_health(entry, ok)
        if task is None:
            return
        with contextlib.suppress(trio.WouldBlock):
            send.send_nowait(entry)  # requeueRunner
        with trio.CancelScope(deadline=drain_deadline[0]) as job:
            job_scopes.add(job)
            try:
                await run_task(entry.client, task, world.executor,
                               report_interval=sc.report_interval, connection=entry.name)
            finally:
                job_scopes.discard(job)

    async def worker() -> None:
        while not stopping:
            with trio.CancelScope() as waiting:
                idle.add(waiting)
                try:
                    entry = await receive.receive()
                finally:
                    idle.discard(waiting)
            if waiting.cancelled_caught:
                return
            await process(entry)

    async def feeder(entries: list[_Entry]) -> None:
        interval = sc.check_interval / len(entries)
        while True:
            for entry in entries:
                if healthy(entry):
                    await send.send(entry)
                await trio.sleep(interval)

    async with contextlib.AsyncExitStack() as stack:
        entries = []
        for c in sc.conns:
            client = await stack.enter_async_context(world.client(c.name))
            with contextlib.suppress(RpcError):  # labels, as the other policies declare them
                await client.declare(__version__, ("sim",))
            entries.append(_Entry(c.name, client, last_check=trio.current_time()))
        async with trio.open_nursery() as nursery:
            for _ in range(sc.capacity):
                nursery.start_soon(worker)
            feeding = trio.CancelScope()
            nursery.start_soon(_feed, feeding, feeder, entries)
            task_status.started()
            await stop.wait()
            stopping = True
            feeding.cancel()
            for scope in list(idle):
                scope.cancel()
            drain_deadline[0] = trio.current_time() + sc.drain
            for job in job_scopes:
                job.deadline = drain_deadline[0]


async def _feed(
    scope: trio.CancelScope, feeder: Callable[[list[_Entry]], Awaitable[None]],
    entries: list[_Entry],
) -> None:
    with scope:
        await feeder(entries)
