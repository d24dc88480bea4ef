"""One simulated workload, one policy, one trio run: the measuring harness.

Every policy (``ours``, ``forgejo-12.8``, ``gitlab``) gets the same things and only
decides *when to fetch and how much*:

* the same simulator (``scheduler.sim``), started fresh for each run with the same
  seed, so the same jobs arrive at the same virtual times;
* the same client (:class:`~scheduler.protocol.RunnerClient`, wrapped to count
  FetchTask calls) and the same per-call timeout (``fetch_timeout``);
* the same task runner (:func:`scheduler.executor.run_task`) with the same
  :class:`RecordingExecutor` (a :class:`SimulatedExecutor` that sleeps on the trio
  clock and records when each task started and ended), so a slot is released the
  same way and at the same moment whichever policy holds it.

Figures 1-5 run on ``trio.testing.MockClock(autojump_threshold=0)``: virtual time
over real loopback sockets to the in-process simulator. Whenever every task is
blocked the clock jumps to the next deadline; loopback I/O inside one process
completes before that, so ten virtual minutes take seconds and a seed reproduces
a run exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio
import trio.testing

from scheduler.executor.simulated import SimulatedExecutor
from scheduler.protocol import FetchTaskResponse, Result, RunnerClient, Task
from scheduler.sim import FaultPlan, InstanceSpec, Simulator
from scheduler.task.log import TaskLog

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- scenario


@attrs.frozen
class Conn:
    """One connection (= one simulated Forgejo instance) of a scenario."""

    name: str
    weight: float = 1.0
    fetch_interval: float = 2.0
    #: ``ours`` only (adaptive polling); None: the service's default (10 x fetch_interval).
    fetch_interval_max: float | None = None
    rate: float = 0.0  # Poisson job arrivals on its instance, jobs/s
    durations: tuple[float, float] = (2.0, 10.0)  # uniform job duration, s
    faults: FaultPlan = attrs.field(factory=FaultPlan)


@attrs.frozen
class Scenario:
    name: str
    conns: tuple[Conn, ...]
    capacity: int = 4
    duration: float = 600.0  # virtual seconds of job arrivals
    warmup: float = 60.0  # left out of the slot-second shares
    fetch_timeout: float = 30.0  # forgejo-runner 12.8's default; the same for every policy
    report_interval: float = 1.0
    drain: float = 120.0  # after arrivals stop: time for running tasks to finish
    check_interval: float = 3.0  # GitLab's global check_interval (default 3 s)
    zombie_timeout: float | None = 600.0  # Forgejo's default

    def specs(self) -> list[InstanceSpec]:
        return [
            InstanceSpec(
                c.name, rate=c.rate, duration_range=c.durations, faults=c.faults,
                zombie_timeout=self.zombie_timeout,
            )
            for c in self.conns
        ]

    def fair_shares(self) -> dict[str, float]:
        """Weighted share of the capacity when every connection has work (all demand)."""
        total = sum(c.weight for c in self.conns)
        return {c.name: self.capacity * c.weight / total for c in self.conns}


# --------------------------------------------------------------------------- recording


@attrs.define
class Span:
    """One execution of one task on the runner side (virtual seconds since the start)."""

    task_id: int
    conn: str
    queued: float  # the job entered the simulator's queue
    started: float  # the runner had the task and started it
    ended: float | None = None


@attrs.define
class Recorder:
    """What the runner side did, observed the same way for every policy."""

    sim: Simulator
    capacity: int
    t0: float = 0.0
    spans: list[Span] = attrs.field(factory=list)
    running: int = 0
    peak_running: int = 0
    overshoots: int = 0  # times the number of executing tasks went above capacity
    fetches: dict[str, int] = attrs.field(factory=dict)
    fetches_while_full: dict[str, int] = attrs.field(factory=dict)
    empty_answers: dict[str, int] = attrs.field(factory=dict)
    _open: dict[int, Span] = attrs.field(factory=dict)

    def now(self) -> float:
        return trio.current_time() - self.t0

    def started(self, task: Task) -> Span:
        conn = str(task.vars.get("SIM_INSTANCE", "?"))
        job = self.sim.instances[conn].tasks[task.id].job
        span = Span(task.id, conn, job.created_at - self.t0, self.now())
        self.spans.append(span)
        self._open[id(span)] = span
        self.running += 1
        if self.running > self.capacity and self.running - 1 <= self.capacity:
            self.overshoots += 1
        self.peak_running = max(self.peak_running, self.running)
        return span

    def ended(self, span: Span) -> None:
        span.ended = self.now()
        self._open.pop(id(span), None)
        self.running -= 1

    def fetch(self, conn: str) -> None:
        self.fetches[conn] = self.fetches.get(conn, 0) + 1
        if self.running >= self.capacity:
            self.fetches_while_full[conn] = self.fetches_while_full.get(conn, 0) + 1


class RecordingExecutor(SimulatedExecutor):
    """The simulated executor (trio sleeps, no processes) plus start/end records."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    async def execute(self, task: Task, log: TaskLog) -> Result:
        span = self.recorder.started(task)
        try:
            return await super().execute(task, log)
        finally:
            self.recorder.ended(span)


class CountingClient(RunnerClient):
    """Our client; every FetchTask is counted (and whether all slots were executing)."""

    def __init__(self, recorder: Recorder, conn: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder
        self.conn = conn

    async def fetch_task(
        self, *, tasks_version: int, task_capacity: int, request_key: str
    ) -> FetchTaskResponse:
        self.recorder.fetch(self.conn)
        resp = await super().fetch_task(
            tasks_version=tasks_version, task_capacity=task_capacity, request_key=request_key
        )
        if not resp.tasks:
            empty = self.recorder.empty_answers
            empty[self.conn] = empty.get(self.conn, 0) + 1
        return resp


@attrs.define
class World:
    """What a policy is handed: the simulator, the scenario and the shared plumbing."""

    sim: Simulator
    scenario: Scenario
    recorder: Recorder
    executor: RecordingExecutor
    tmp: Path
    seed: int

    def conn(self, name: str) -> Conn:
        return next(c for c in self.scenario.conns if c.name == name)

    def client(self, name: str, timeout: float | None = None) -> CountingClient:
        inst = self.sim.instances[name]
        return CountingClient(
            self.recorder, name, self.sim.base_url(name), uuid=inst.runner.uuid,
            token=inst.runner.token,
            timeout=self.scenario.fetch_timeout if timeout is None else timeout,
        )


class Policy(Protocol):
    """Run until ``stop`` is set, then drain (at most ``scenario.drain``) and return."""

    def __call__(
        self, world: World, stop: trio.Event, *, task_status: trio.TaskStatus[None]
    ) -> Awaitable[None]: ...


# --------------------------------------------------------------------------- outcome


@attrs.frozen
class Outcome:
    policy: str
    scenario: Scenario
    seed: int
    spans: tuple[Span, ...]
    ledger: dict[str, Any]
    rpc_counts: dict[str, dict[str, int]]
    fetches: dict[str, int]
    fetches_while_full: dict[str, int]
    empty_answers: dict[str, int]
    peak_running: int
    overshoots: int
    virtual_seconds: float
    wall_seconds: float

    # -- derived figures -------------------------------------------------------------

    def slot_seconds(self) -> dict[str, float]:
        """Seconds x tasks executing per connection, between warm-up and end of arrivals."""
        lo, hi = self.scenario.warmup, self.scenario.duration
        out = {c.name: 0.0 for c in self.scenario.conns}
        for s in self.spans:
            end = hi if s.ended is None else s.ended
            out[s.conn] += max(0.0, min(end, hi) - max(s.started, lo))
        return out

    def share_ratios(self) -> dict[str, float]:
        """Slot-seconds over the weighted fair share's slot-seconds (1.0 = exactly fair)."""
        window = self.scenario.duration - self.scenario.warmup
        shares = self.scenario.fair_shares()
        got = self.slot_seconds()
        return {n: got[n] / (shares[n] * window) for n in shares}

    def jain(self, *, weighted: bool = True) -> float:
        if weighted:
            return jain_index(list(self.share_ratios().values()))
        return jain_index(list(self.slot_seconds().values()))

    def latencies(self, conn: str) -> list[float]:
        """Job queued on the simulator → task started on the runner, one per execution."""
        return sorted(s.started - s.queued for s in self.spans if s.conn == conn)

    def fetch_calls(self, conn: str | None = None) -> int:
        """FetchTask RPCs the simulator received (every attempt, including retries)."""
        names = [conn] if conn else list(self.rpc_counts)
        return sum(self.rpc_counts[n].get("FetchTask", 0) for n in names)

    def delivered(self, conn: str | None = None) -> int:
        if conn is None:
            return int(self.ledger["delivered"])
        return int(self.ledger["instances"][conn]["delivered"])


def jain_index(xs: list[float]) -> float:
    """Jain's fairness index (Σx)² / (n·Σx²), in [1/n, 1]."""
    if not xs or not any(xs):
        return 1.0
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def percentile(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of an already sorted list; NaN if empty."""
    if not sorted_xs:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_xs)))
    return sorted_xs[min(rank, len(sorted_xs)) - 1]


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def _quiet(level: int) -> Iterator[None]:
    root = logging.getLogger()
    old = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(old)


async def run_world(
    policy: Policy,
    scenario: Scenario,
    seed: int,
    *,
    before: Callable[[Simulator], None] | None = None,
) -> tuple[Simulator, Recorder, float]:
    """Serve the simulator, run ``policy`` for ``scenario.duration``, stop, drain."""
    sim = Simulator(scenario.specs(), seed=seed)
    if before is not None:
        before(sim)
    with tempfile.TemporaryDirectory(prefix="forgejo-scheduler-bench-") as tmp:
        recorder = Recorder(sim, scenario.capacity)
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve, "127.0.0.1", 0)
            recorder.t0 = trio.current_time()
            world = World(sim, scenario, recorder, RecordingExecutor(recorder), Path(tmp), seed)
            stop, done = trio.Event(), trio.Event()

            async def main(task_status: trio.TaskStatus[None]) -> None:
                try:
                    await policy(world, stop, task_status=task_status)
                finally:
                    done.set()

            await nursery.start(main)
            await trio.sleep_until(recorder.t0 + scenario.duration)
            sim.stop_arrivals()
            stop.set()
            # Drain, plus room for a last report; a policy that hangs is cut off here.
            with trio.move_on_after(scenario.drain + scenario.fetch_timeout + 30):
                await done.wait()
            elapsed = trio.current_time() - recorder.t0
            nursery.cancel_scope.cancel()
    return sim, recorder, elapsed


def _seed_trio_scheduler(seed: int) -> None:
    """trio randomly reverses each batch of runnable tasks (to shake out ordering bugs);
    seed that private generator too, so that a seed gives the same interleaving."""
    rng = getattr(getattr(trio, "_core", None), "_run", None)
    gen = getattr(rng, "_r", None)
    if isinstance(gen, random.Random):
        gen.seed(f"bench/{seed}")


def run(
    name: str,
    policy: Policy,
    scenario: Scenario,
    seed: int = 1,
    *,
    log_level: int = logging.CRITICAL,
) -> Outcome:
    """One policy on one scenario, on a fresh MockClock; returns the measurements."""
    wall = time.perf_counter()
    clock = trio.testing.MockClock(autojump_threshold=0)
    _seed_trio_scheduler(seed)
    with _quiet(log_level):
        sim, rec, elapsed = trio.run(run_world, policy, scenario, seed, clock=clock)
    wall = time.perf_counter() - wall
    return Outcome(
        policy=name,
        scenario=scenario,
        seed=seed,
        spans=tuple(rec.spans),
        ledger=sim.ledger.statistics().to_json(),
        rpc_counts={n: dict(i.rpc_counts) for n, i in sim.instances.items()},
        fetches=dict(rec.fetches),
        fetches_while_full=dict(rec.fetches_while_full),
        empty_answers=dict(rec.empty_answers),
        peak_running=rec.peak_running,
        overshoots=rec.overshoots,
        virtual_seconds=elapsed,
        wall_seconds=wall,
    )
