"""One Forgejo connection's fetch loop, as a small state machine.

::

    DECLARE --> HUNGRY --grant k--> FETCHING(key, k)
                  ^                   | n tasks: n run, k-n released, key rotates
                  |                   |          --> HUNGRY at once if n = k, else IDLE
                  |                   | empty:   k released, key rotates --> IDLE
                  |                   | refused: k released, key rotates --> DOWN
                  |                   | unknown: keep key, keep k --> UNRESOLVED
                  |                   |          --backoff--> FETCHING(same key, same k)
                  +-- IDLE (fetch_interval) / DOWN (Declare works again) ----+

The rules that matter (shared/reference/core-design.md): slots are granted before
the FetchTask, which asks ``taskCapacity = k``; a connection with no slot sends no
FetchTask, except the retry of an unresolved key, which holds its own reservation;
the same key always goes out with the same capacity and ``tasks_version``; the
key is persisted before its first use and forgotten only after an answer.
"""

from __future__ import annotations

import enum
import logging
import random

import attrs
import trio

from scheduler import __version__
from scheduler.config import ConnectionSettings, RunnerSettings
from scheduler.errors import ConnectError, PoolClosed, RpcError, RpcTimeout
from scheduler.executor import Executor, reject_task, run_task
from scheduler.keys import KeyStore, PendingFetch
from scheduler.metrics import Metrics
from scheduler.orphans import REASON, settle_orphan
from scheduler.pool import SlotPool
from scheduler.protocol import FetchTaskResponse, Result, RunnerClient, Task

log = logging.getLogger(__name__)

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
DOWN_BACKOFF_BASE = 30.0
DOWN_BACKOFF_CAP = 600.0


class Phase(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    HUNGRY = "hungry"
    FETCHING = "fetching"
    UNRESOLVED = "unresolved"
    DOWN = "down"
    DRAINING = "draining"
    STOPPED = "stopped"


def backoff(attempt: int, rng: random.Random, *, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base·2^attempt)]."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


def jittered(interval: float, rng: random.Random) -> float:
    """``interval`` ± 10 %, so connections that started together drift apart."""
    return interval * rng.uniform(0.9, 1.1)


def classify(exc: RpcError) -> str:
    """The ``outcome`` label of a failed fetch."""
    if isinstance(exc, ConnectError):
        if exc.code in ("unauthenticated", "permission_denied"):
            return "unauthorized"
        if exc.code == "resource_exhausted" or exc.http_status == 429:
            return "throttled"
        if exc.code == "deadline_exceeded":
            return "timeout"
        return "error"
    return "timeout" if isinstance(exc, RpcTimeout) else "error"


@attrs.define
class ConnectionLoop:
    settings: ConnectionSettings
    runner: RunnerSettings
    client: RunnerClient
    pool: SlotPool
    store: KeyStore
    executor: Executor
    metrics: Metrics
    rng: random.Random
    phase: Phase = Phase.STARTING
    up: bool | None = None
    declared: bool = False
    tasks_version: int = 0
    pending: PendingFetch | None = None
    attempts: int = 0  # sends of the current pending key
    doubt: str | None = None  # the last error logged for the current key, while unresolved
    in_doubt: bool = False  # the current key's outcome is unknown (exported as a timestamp)
    last_error: str = ""
    redeclare: bool = False  # labels changed by a reload: Declare again before the next fetch
    stopping: trio.Event = attrs.field(factory=trio.Event)
    resolve_deadline: float = float("inf")

    @property
    def name(self) -> str:
        return self.settings.name

    # --- the loop -------------------------------------------------------------------

    async def run(self, tasks: trio.Nursery) -> None:
        """Fetch until told to stop; tasks start in ``tasks`` and outlive this loop."""
        self.pending = self.store.state.pending
        if self.pending is not None:
            self.attempts = 1  # it was sent (or about to be) by the previous process
            self.tasks_version = self.pending.tasks_version
            self._in_doubt(True)
            log.info(
                "connection %s: retrying the request key left by the last run "
                "(task capacity %d) before anything else",
                self.name, self.pending.task_capacity,
            )
        await self._declare_until_up()
        while True:
            if self.pending is None:
                if self.stopping.is_set():
                    break
                if self.redeclare:
                    self.redeclare = False
                    await self._declare_until_up()
                    # New labels may match jobs the server's tasks_version shortcut would
                    # hide from us ("nothing new since version N"): ask for a real query.
                    self.tasks_version = 0
                    continue
                self.phase = Phase.HUNGRY
                try:
                    k = await self.pool.acquire(self.name)
                except PoolClosed:
                    break
                self.pending = PendingFetch.new(k, self.tasks_version)
                self.attempts = 0
                self.store.set_pending(self.pending)
            elif self.stopping.is_set() and trio.current_time() >= self.resolve_deadline:
                log.error(
                    "connection %s: shutting down with an unresolved request key; "
                    "it stays in %s and the next start retries it",
                    self.name, self.store.path,
                )
                break
            wait = await self._fetch_once(tasks)
            if wait > 0:
                await self._sleep(wait)
        self.phase = Phase.STOPPED

    async def _fetch_once(self, tasks: trio.Nursery) -> float:
        """Send the pending FetchTask once; returns how long to wait before the next step."""
        assert self.pending is not None
        pending = self.pending
        self.phase = Phase.FETCHING
        if self.attempts:
            self.metrics.fetch_retries_total.labels(self.name).inc()
            self.metrics.request_keys_reused_total.labels(self.name).inc()
        self.attempts += 1
        started = trio.current_time()
        try:
            resp = await self.client.fetch_task(
                tasks_version=pending.tasks_version,
                task_capacity=pending.task_capacity,
                request_key=pending.key,
            )
        except RpcError as exc:
            self.metrics.fetch_duration_seconds.labels(self.name).observe(
                trio.current_time() - started
            )
            self.metrics.fetch_requests_total.labels(self.name, classify(exc)).inc()
            if exc.outcome_unknown:
                return self._unresolved(exc)
            return await self._refused(exc)
        self.metrics.fetch_duration_seconds.labels(self.name).observe(trio.current_time() - started)
        return self._answered(resp, tasks)

    def _answered(self, resp: FetchTaskResponse, tasks: trio.Nursery) -> float:
        assert self.pending is not None
        pending, reused = self.pending, self.attempts > 1
        n = len(resp.tasks)
        outcome = "tasks" if n else "empty"
        self.metrics.fetch_requests_total.labels(self.name, outcome).inc()
        self.metrics.last_successful_fetch_timestamp_seconds.labels(self.name).set_to_current_time()
        self.metrics.request_key_rotations_total.labels(self.name).inc()
        if reused:
            log.info(
                "connection %s: request key resolved after %d attempts: %d task(s)",
                self.name, self.attempts, n,
            )
        self._mark_up(True, "")
        self.doubt = None
        self._in_doubt(False)
        ids = tuple(t.id for t in resp.tasks)
        # Record the tasks and forget the key in one atomic write, before anything runs.
        self.store.resolve(ids)
        self.pending = None
        res = self.pool.resolve(self.name, n)
        if n:
            self.tasks_version = 0  # as forgejo-runner: force a real query next time
            self.metrics.tasks_received_total.labels(self.name).inc(n)
            if reused:
                self.metrics.tasks_recovered_total.labels(self.name).inc(n)
        else:
            self.tasks_version = max(self.tasks_version, resp.tasks_version)
        for i, task in enumerate(resp.tasks):
            if i < res.accepted:
                tasks.start_soon(self._run_task, task, name=f"task-{task.id}")
            else:
                reason = (
                    f"the server sent {n} task(s) on a request for {pending.task_capacity}; "
                    f"{res.accepted} found a runner slot (capacity {self.pool.ledger.capacity}) "
                    f"and no runner slot is free for this one"
                )
                log.error("connection %s: task %d rejected: %s", self.name, task.id, reason)
                self.metrics.tasks_rejected_total.labels(self.name).inc()
                tasks.start_soon(self._reject_task, task, reason, name=f"reject-{task.id}")
        if n and n >= pending.task_capacity:
            return 0.0  # the server may have more: ask again at once
        self.phase = Phase.IDLE
        return jittered(self.settings.fetch_interval, self.rng)

    def _in_doubt(self, unresolved: bool) -> None:
        """Export since when the current key has been unresolved (alerting on its age)."""
        if unresolved == self.in_doubt:
            return  # only the first doubt about a key starts the clock
        self.in_doubt = unresolved
        gauge = self.metrics.request_key_unresolved_since_timestamp_seconds.labels(self.name)
        if unresolved:
            gauge.set_to_current_time()
        else:
            gauge.set(0)

    def _unresolved(self, exc: RpcError) -> float:
        assert self.pending is not None
        # Once per state change: the first failure of this key, or a different error.
        self._in_doubt(True)
        if self.doubt != str(exc):
            self.doubt = str(exc)
            log.warning(
                "connection %s: FetchTask outcome unknown (%s); keeping request key and "
                "%d reserved slot(s), retrying",
                self.name, exc, self.pending.task_capacity,
            )
        self.last_error = str(exc)
        self.phase = Phase.UNRESOLVED
        self.pool.forfeit(self.name)
        return backoff(self.attempts - 1, self.rng, base=BACKOFF_BASE, cap=BACKOFF_CAP)

    async def _refused(self, exc: RpcError) -> float:
        # The server proved it did nothing: the reservation and the key can go.
        self.doubt = None
        self._in_doubt(False)
        self.pool.release(self.name)
        self.store.clear_pending()
        self.pending = None
        self._mark_up(False, str(exc))
        self.phase = Phase.DOWN
        await self._declare_until_up(first_wait=True)
        return 0.0

    # --- declare / down -------------------------------------------------------------

    async def _declare_until_up(self, *, first_wait: bool = False) -> None:
        """Declare labels and version; until that works, stay out of the pool.

        Probing uses Declare, not FetchTask, so a connection that is down holds no
        slot. A refusal (bad token, deleted runner) waits long between probes; an
        unreachable server is probed with the short backoff.
        """
        attempt, refused = 0, first_wait
        while not self.stopping.is_set():
            if attempt or first_wait:
                base, cap = (DOWN_BACKOFF_BASE, DOWN_BACKOFF_CAP) if refused else (
                    BACKOFF_BASE, BACKOFF_CAP)
                await self._sleep(max(1.0, backoff(attempt, self.rng, base=base, cap=cap)))
                if self.stopping.is_set():
                    return
            attempt += 1
            try:
                runner = await self.client.declare(__version__, self.label_names)
            except ConnectError as exc:
                if exc.code == "unimplemented":
                    log.info("connection %s: server has no Declare (old Forgejo); skipping",
                             self.name)
                    self._declared_ok()
                    return
                refused = not exc.outcome_unknown
                self._mark_up(False, f"Declare: {exc}")
                continue
            except RpcError as exc:
                refused = False
                self._mark_up(False, f"Declare: {exc}")
                continue
            if runner.ephemeral:
                refused = True
                self._mark_up(False, "the server says this runner is ephemeral; a daemon "
                              "cannot serve an ephemeral registration")
                continue
            self._declared_ok()
            return

    def _declared_ok(self) -> None:
        self.declared = True
        self.pool.set_active(self.name, True)
        self._mark_up(True, "")

    @property
    def label_names(self) -> tuple[str, ...]:
        """Forgejo wants label names only: ``debian:docker://node`` → ``debian``."""
        return tuple(label.split(":", 1)[0] for label in self.settings.labels)

    def _mark_up(self, up: bool, reason: str) -> None:
        if up != self.up:
            if up:
                log.info("connection %s: up (%s)", self.name, self.settings.url)
            else:
                log.warning("connection %s: down: %s", self.name, reason)
            self.up = up
            self.metrics.connection_up.labels(self.name).set(1 if up else 0)
            if not up and self.pending is None:
                # Out of the entitlement computation while down, so others may borrow more.
                self.pool.set_active(self.name, False)
        self.last_error = reason

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when the service starts shutting down."""
        with trio.move_on_after(seconds):
            if self.pending is not None:
                # An unresolved key is retried through shutdown; only its backoff is cut short.
                await trio.sleep(seconds)
            else:
                await self.stopping.wait()

    # --- tasks ----------------------------------------------------------------------

    async def _run_task(self, task: Task) -> None:
        running = self.metrics.tasks_running.labels(self.name)
        running.inc()
        try:
            outcome = await run_task(
                self.client, task, self.executor,
                report_interval=self.runner.report_interval, connection=self.name,
            )
            result = outcome.result.name.lower() if outcome.result.is_final else "unknown"
            self.metrics.tasks_finished_total.labels(self.name, result).inc()
            self.metrics.task_duration_seconds.labels(self.name).observe(outcome.duration)
        finally:
            running.dec()
            self.store.task_done(task.id)
            self.pool.finish(self.name)

    async def report_orphan(self, task_id: int, holds_slot: bool) -> None:
        """A task left running by a dead process: settle it (see scheduler.orphans)."""
        log.warning("connection %s: task %d: %s; reporting it failed", self.name, task_id, REASON)
        try:
            result = await settle_orphan(self.client, task_id, rng=self.rng)
            if result is Result.FAILURE:
                self.metrics.tasks_finished_total.labels(self.name, "failure").inc()
            elif result is not None:
                log.info("connection %s: task %d had already ended (%s)",
                         self.name, task_id, result.name.lower())
        finally:
            self.store.task_done(task_id)
            if holds_slot:
                self.pool.finish(self.name)

    async def _reject_task(self, task: Task, reason: str) -> None:
        try:
            await reject_task(self.client, task, reason, connection=self.name)
            self.metrics.tasks_finished_total.labels(self.name, "failure").inc()
        finally:
            self.store.task_done(task.id)
