"""``forgejo-12.8``: a model of forgejo-runner 12.7-12.8's poller, written for this benchmark.

What it models (``internal/app/poll/poller.go``, shared/reference/protocol.md §7):

* one loop per connection, each with its own rate limiter: ``rate.Every(fetch_interval)``
  with a burst of 1 (a token is taken before every attempt, whether it fetches or not;
  time spent fetching counts towards the interval, there is no immediate re-poll);
* one global fetch mutex, held for the whole FetchTask (up to ``fetch_timeout``);
* under the mutex ``available = capacity - inProgress``; if positive, FetchTask with
  ``task_capacity = available``, ``inProgress += len(tasks)``, then unlock; if zero,
  unlock without a FetchTask;
* a per-connection request key, kept after *any* error and rotated after any answer
  (runner PR #1393); the retry asks for whatever ``available`` is at that later time;
* per-connection ``tasks_version``: raised to the answer's, reset to 0 after tasks;
* a task id already running on the same connection is refused locally;
* shutdown: polling is cancelled (an in-flight FetchTask with it), running tasks get
  ``shutdown_timeout`` (the scenario's ``drain``), then are cancelled.

What it shares with every policy: our client, ``run_task`` (heartbeats, final report;
the slot comes back when it returns, as ``inProgress -1`` does after ``runner.Run``),
the executor and the simulator. No weights: forgejo-runner has none.
"""

from __future__ import annotations

import contextlib
import logging
import uuid

import attrs
import trio

from bench.harness import Conn, World
from scheduler import __version__
from scheduler.errors import RpcError
from scheduler.protocol import RunnerClient, Task
from scheduler.task.lifecycle import run_task

log = logging.getLogger(__name__)


@attrs.define
class _Shared:
    capacity: int
    in_progress: int = 0
    mutex: trio.Lock = attrs.field(factory=trio.Lock)


async def run(
    world: World, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    sc = world.scenario
    shared = _Shared(sc.capacity)
    async with contextlib.AsyncExitStack() as stack:
        clients = {c.name: await stack.enter_async_context(world.client(c.name)) for c in sc.conns}
        async with trio.open_nursery() as jobs:
            async with trio.open_nursery() as pollers:
                for c in sc.conns:
                    pollers.start_soon(_poll_for_client, world, c, clients[c.name], shared, jobs)
                task_status.started()
                await stop.wait()
                pollers.cancel_scope.cancel()  # p.shutdownPolling(): also ends an in-flight fetch
            jobs.cancel_scope.deadline = trio.current_time() + sc.drain


async def _poll_for_client(
    world: World, conn: Conn, client: RunnerClient, shared: _Shared, jobs: trio.Nursery
) -> None:
    with contextlib.suppress(RpcError):  # the runner declares once at start
        await client.declare(__version__, ("sim",))
    request_key = str(uuid.uuid4())
    tasks_version = 0
    running: set[int] = set()
    next_token = trio.current_time()
    while True:
        # limiter.Wait: a token every fetch_interval, burst 1.
        at = max(trio.current_time(), next_token)
        await trio.sleep_until(at)
        next_token = at + conn.fetch_interval

        tasks: list[Task] = []
        async with shared.mutex:
            available = shared.capacity - shared.in_progress
            if available <= 0:
                continue
            try:
                resp = await client.fetch_task(
                    tasks_version=tasks_version, task_capacity=available, request_key=request_key
                )
            except RpcError as exc:
                log.debug("%s: fetch failed, keeping the request key: %s", conn.name, exc)
                continue  # reuseRequestKey = true
            v = tasks_version
            if resp.tasks_version > v:
                tasks_version = resp.tasks_version
            tasks = list(resp.tasks)
            if tasks and tasks_version == resp.tasks_version:
                tasks_version = 0  # CompareAndSwap(resp.tasksVersion, 0)
            shared.in_progress += len(tasks)
        request_key = str(uuid.uuid4())  # an answer: rotate
        for task in tasks:
            jobs.start_soon(_run, world, conn, client, shared, running, task)


async def _run(
    world: World, conn: Conn, client: RunnerClient, shared: _Shared, running: set[int], task: Task
) -> None:
    try:
        if task.id in running:
            log.error("%s: task %d is already running", conn.name, task.id)
            return
        running.add(task.id)
        try:
            await run_task(client, task, world.executor,
                           report_interval=world.scenario.report_interval, connection=conn.name)
        finally:
            running.discard(task.id)
    finally:
        shared.in_progress -= 1
