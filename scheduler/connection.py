"""One Forgejo connection's fetch loop, as a small state machine.

::

    DECLARE --> HUNGRY --grant k--> FETCHING(key, k)
                  ^                   | n tasks: n run, k-n released, key rotates
                  |                   |          --> HUNGRY at once if n = k, else IDLE
                  |                   | empty:   k released, key kept (unused) --> IDLE
                  |                   | refused: k released, key kept (unused) --> DOWN
                  |                   | unknown: keep key, keep k --> UNRESOLVED
                  |                   |          --backoff--> FETCHING(same key, same k)
                  +-- IDLE (PollPace) / DOWN (Declare works again) ----------+

Every arrow is taken in one place, :meth:`ConnectionLoop.run`: ``_fetch_once`` sends
the FetchTask and says what came back (:class:`Answered`, :class:`Unresolved` or
:class:`Refused`); ``run`` decides what that means. In particular the retry of a
FetchTask is decided there: an :class:`Unresolved` outcome keeps the request key
(in the :class:`~scheduler.keys.KeyStore`, its one owner) and the reservation, and
the next turn of the loop sends the same key again after the backoff.

The rules that matter (shared/reference/core-design.md): slots are granted before
the FetchTask, which asks ``taskCapacity = k``; a connection with no slot sends no
FetchTask, except the retry of an unresolved key, which holds its own reservation;
a retried key goes out with the same capacity and ``tasks_version``; the key is
on disk before its first use and forgotten only after an answer with tasks (a key
the server answered empty or refused recorded nothing there and is used again:
see scheduler.keys). The idle wait adapts (scheduler.fetch.PollPace).
"""

from __future__ import annotations

import enum
import logging
import math
import random

import attrs
import trio

from scheduler import __version__, logcontext
from scheduler.config import ConnectionSettings, RunnerSettings
from scheduler.errors import ConnectError, PoolClosed, RpcError, RpcTimeout
from scheduler.executor import Executor
from scheduler.executor.labels import plan_labels
from scheduler.fetch import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    DOWN_BACKOFF_BASE,
    DOWN_BACKOFF_CAP,
    Answered,
    FetchOutcome,
    KeyDoubt,
    PollPace,
    Refused,
    Unresolved,
    backoff,
    classify,
    jittered,
)
from scheduler.health import Health, ObservedClient
from scheduler.keys import KeyStore, PendingFetch
from scheduler.metrics import ConnectionMetrics, Metrics
from scheduler.pool import SlotPool
from scheduler.protocol import FetchTaskResponse, RunnerClient
from scheduler.task.final import FinalReports
from scheduler.tasks import ConnectionTasks, TaskLimits

log = logging.getLogger(__name__)

class Phase(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    HUNGRY = "hungry"
    FETCHING = "fetching"
    UNRESOLVED = "unresolved"
    DOWN = "down"
    STOPPED = "stopped"


@attrs.frozen
class ConnectionStatistics:
    """A connection loop at one moment (see :meth:`ConnectionLoop.statistics`)."""

    name: str
    phase: Phase
    up: bool | None  # None until the first exchange
    declared: bool
    last_error: str  # "" when the last exchange worked
    pending: PendingFetch | None  # the request key in flight or in doubt
    attempts: int  # sends of that key
    unresolved: bool  # its outcome is unknown
    unresolved_for: float | None  # seconds since its outcome became unknown
    tasks_version: int
    stopping: bool


@attrs.define
class ConnectionLoop:
    """One connection's fetch loop: Declare, wait for slots, FetchTask, start tasks.

    It owns the connection's phase, health (:class:`~scheduler.health.Health`: ``up``,
    ``last_error``), its tasks' final reports (:class:`~scheduler.task.final.FinalReports`)
    and ``tasks_version``; the pending request key belongs to ``store``, the slots to
    ``pool``. The service steers it only through :meth:`stop` and :meth:`retune`
    and reads it through :meth:`statistics`.
    """

    settings: ConnectionSettings
    runner: RunnerSettings
    client: RunnerClient
    pool: SlotPool
    store: KeyStore
    executor: Executor
    metrics: Metrics
    rng: random.Random
    phase: Phase = Phase.STARTING
    declared: bool = False
    tasks_version: int = 0
    doubt: KeyDoubt = attrs.field(factory=KeyDoubt)
    poll: PollPace = attrs.field(factory=PollPace)  # the idle wait, adapted per answer
    redeclare: bool = False  # labels changed by a reload: Declare again before the next fetch
    #: Since when (trio time) the pending key's outcome has been unknown.
    unresolved_since: float | None = None
    _stopping: trio.Event = attrs.field(init=False, factory=trio.Event)
    _resolve_deadline: float = attrs.field(init=False, default=float("inf"))
    #: The exchange in flight (a FetchTask or a Declare), cut short by the stop.
    _exchange: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    m: ConnectionMetrics = attrs.field(init=False)
    health: Health = attrs.field(init=False)
    reports: FinalReports = attrs.field(init=False)
    #: The client tasks report through: UpdateTask/UpdateLog count in ``health``.
    reporting: ObservedClient = attrs.field(init=False)
    #: Starts and ends this connection's tasks (``scheduler.tasks``).
    tasks: ConnectionTasks = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.m = self.metrics.connection(self.name)
        self.health = Health(self.name, self.settings.url, self.m.up)
        self.reports = FinalReports(timeout=self.runner.shutdown_report_timeout)
        self.reporting = ObservedClient(self.client, self.health)
        self.tasks = ConnectionTasks(
            self.name, self.reporting, self.executor, self.store, self.pool, self.m,
            self.reports, self.rng,
        )

    @property
    def up(self) -> bool | None:
        return self.health.up

    @property
    def last_error(self) -> str:
        return self.health.last_error

    def __repr__(self) -> str:
        pending = self.pending
        key = (
            f" key {pending.key[:8]}… for {pending.task_capacity}"
            f" ({self.doubt.attempts} sent{', in doubt' if self.doubt.unresolved else ''})"
            if pending is not None else ""
        )
        up = {None: "?", True: "up", False: "down"}[self.up]
        return f"<ConnectionLoop {self.name} {self.phase.value} {up}{key}>"

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def pending(self) -> PendingFetch | None:
        """The request key in flight or in doubt: the store's, read through."""
        return self.store.state.pending

    # --- control (from the service) ---------------------------------------------------

    def stop(self, deadline: float) -> None:
        """No new fetches; an unresolved key is still retried until ``deadline`` (trio
        time), and a FetchTask still in flight then is cut short (its key stays on disk)."""
        self._resolve_deadline = deadline
        self._stopping.set()
        if self.pending is None:
            self._exchange.cancel()  # a Declare probe: nothing to resolve
        else:
            self._exchange.deadline = min(self._exchange.deadline, deadline)

    def retune(
        self, settings: ConnectionSettings, runner: RunnerSettings, *, relabel: bool = False
    ) -> None:
        """A reload: new settings from the next step on; ``relabel`` Declares again first."""
        self.settings = settings
        self.runner = runner
        self.redeclare = self.redeclare or relabel

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            name=self.name,
            phase=self.phase,
            up=self.up,
            declared=self.declared,
            last_error=self.last_error,
            pending=self.pending,
            attempts=self.doubt.attempts,
            unresolved=self.doubt.unresolved,
            unresolved_for=(None if self.unresolved_since is None
                            else trio.current_time() - self.unresolved_since),
            tasks_version=self.tasks_version,
            stopping=self._stopping.is_set(),
        )

    # --- the loop: every transition is made here --------------------------------------

    async def run(self, tasks: trio.Nursery) -> None:
        """Fetch until told to stop; tasks start in ``tasks`` and outlive this loop."""
        logcontext.bind(connection=self.name)  # inherited by the tasks it starts
        self._resume()
        await self._declare_until_up()
        while True:
            pending = self.pending
            if pending is None:
                if self._stopping.is_set():
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
                pending = await self.store.begin(k, self.tasks_version)  # on disk first
                self.doubt = KeyDoubt()
            elif self._stopping.is_set() and trio.current_time() >= self._resolve_deadline:
                log.error(
                    "connection %s: shutting down with an unresolved request key; "
                    "it stays in %s and the next start retries it",
                    self.name, self.store.path,
                )
                break
            self.phase = Phase.FETCHING
            outcome = await self._fetch_once(pending)
            if isinstance(outcome, Answered):
                filled = await self._answered(pending, outcome.response, tasks)
                self.poll = self.poll.after(len(outcome.response.tasks),
                                            self.settings.fetch_interval,
                                            self.settings.poll_ceiling)
                if filled:
                    continue  # the server may have more: ask again at once
                self.phase = Phase.IDLE
                wait = jittered(self.poll.interval, self.rng)
            elif isinstance(outcome, Unresolved):
                # The FetchTask retry: the key stays in the store and the slots stay
                # reserved; the next turn sends the same key again, after a backoff.
                self._unresolved(pending, outcome.error)
                self.phase = Phase.UNRESOLVED
                wait = backoff(self.doubt.attempts - 1, self.rng, base=BACKOFF_BASE,
                               cap=BACKOFF_CAP)
            else:
                self._refused(outcome.error)
                self.phase = Phase.DOWN
                await self._declare_until_up(first_wait=True)
                continue
            if wait > 0:
                await self._sleep(wait)
        await self.store.discard_next()  # a clean stop leaves no key on disk
        self.phase = Phase.STOPPED

    def _resume(self) -> None:
        """A key left by the last run goes out again before anything else."""
        pending = self.pending
        if pending is None:
            return
        self.doubt = KeyDoubt(attempts=1)  # it was sent (or about to be) by the previous process
        self.tasks_version = pending.tasks_version
        self._set_unresolved(True)
        log.info(
            "connection %s: retrying the request key left by the last run "
            "(task capacity %d) before anything else",
            self.name, pending.task_capacity,
        )

    async def _fetch_once(self, pending: PendingFetch) -> FetchOutcome:
        """Send the pending FetchTask once and say what came back; changes no state."""
        if self.doubt.attempts:
            self.m.fetch_retries.inc()
            self.m.request_keys_reused.inc()
        self.doubt.attempts += 1
        started = trio.current_time()
        resp: FetchTaskResponse | None = None
        try:
            with self._open_exchange():
                resp = await self.client.fetch_task(
                    tasks_version=pending.tasks_version,
                    task_capacity=pending.task_capacity,
                    request_key=pending.key,
                )
            if resp is None:  # cut short by the shutdown's bound: the outcome is unknown
                raise RpcTimeout("FetchTask: cut short by the shutdown (shutdown_resolve_timeout)")
        except RpcError as exc:
            self.m.fetch_duration.observe(trio.current_time() - started)
            self.m.fetch_requests[classify(exc)].inc()
            return Unresolved(exc) if exc.outcome_unknown else Refused(exc)
        self.m.fetch_duration.observe(trio.current_time() - started)
        return Answered(resp)

    def _open_exchange(self) -> trio.CancelScope:
        """The scope of the next FetchTask or Declare; a stop cuts it short (see stop)."""
        deadline = self._resolve_deadline if self._stopping.is_set() else math.inf
        self._exchange = trio.CancelScope(deadline=deadline)
        return self._exchange

    async def _answered(
        self, pending: PendingFetch, resp: FetchTaskResponse, tasks: trio.Nursery
    ) -> bool:
        """Settle the key and its slots, start the tasks; True if the server may have more."""
        reused = self.doubt.attempts > 1
        n = len(resp.tasks)
        self.m.fetch_requests["tasks" if n else "empty"].inc()
        self.m.last_successful_fetch.set_to_current_time()
        if reused:
            log.info(
                "connection %s: request key resolved after %d attempts: %d task(s)",
                self.name, self.doubt.attempts, n,
            )
        self.health.succeeded()
        self.doubt.logged = None
        self._set_unresolved(False)
        # Record the tasks and forget the key in one atomic write, before anything runs;
        # the next key goes on disk in the same write (an empty answer writes nothing).
        await self.store.resolve(tuple(t.id for t in resp.tasks), write_ahead=True)
        if n:
            self.m.request_key_rotations.inc()
        res = self.pool.resolve(self.name, n)
        if n:
            self.tasks_version = 0  # as forgejo-runner: force a real query next time
            self.m.tasks_received.inc(n)
            if reused:
                self.m.tasks_recovered.inc(n)
        else:
            self.tasks_version = max(self.tasks_version, resp.tasks_version)
        limits = TaskLimits(self.runner.report_interval, self.settings.job_timeout,
                            self.runner.shutdown_report_timeout)
        for i, task in enumerate(resp.tasks):
            if i < res.accepted:
                tasks.start_soon(self.tasks.run, task, limits, name=f"task-{task.id}")
            else:
                reason = (
                    f"the server sent {n} task(s) on a request for {pending.task_capacity}; "
                    f"{res.accepted} found a runner slot (capacity {self.pool.ledger.capacity}) "
                    f"and no runner slot is free for this one"
                )
                log.error("connection %s: task %d rejected: %s", self.name, task.id, reason)
                self.m.tasks_rejected.inc()
                tasks.start_soon(self.tasks.reject, task, reason, name=f"reject-{task.id}")
        return bool(n) and n >= pending.task_capacity

    def _unresolved(self, pending: PendingFetch, exc: RpcError) -> None:
        """Keep the key and the reservation; give back only slots owed to us."""
        # Once per state change: the first failure of this key, or a different error.
        self._set_unresolved(True)
        if self.doubt.logged != str(exc):
            self.doubt.logged = str(exc)
            log.warning(
                "connection %s: FetchTask outcome unknown (%s); keeping request key and "
                "%d reserved slot(s), retrying",
                self.name, exc, pending.task_capacity,
            )
        self.health.failed(str(exc))
        self.pool.forfeit(self.name)

    def _refused(self, exc: RpcError) -> None:
        """The reservation and the key go; the connection is down until Declare works."""
        self.doubt.logged = None
        self._set_unresolved(False)
        self.pool.release(self.name)
        self.store.release()
        self.health.failed(str(exc), at_once=True)
        # Out of the entitlement computation until Declare works, so others may borrow more.
        self.pool.set_active(self.name, False)

    def _set_unresolved(self, unresolved: bool) -> None:
        """Export since when the current key has been unresolved (alerting on its age)."""
        if unresolved == self.doubt.unresolved:
            return  # only the first doubt about a key starts the clock
        self.doubt.unresolved = unresolved
        if unresolved:
            self.unresolved_since = trio.current_time()
            self.m.request_key_unresolved_since.set_to_current_time()
        else:
            self.unresolved_since = None
            self.m.request_key_unresolved_since.set(0)

    # --- declare / down -------------------------------------------------------------

    async def _declare_until_up(self, *, first_wait: bool = False) -> None:
        """Declare labels and version; until that works, stay out of the pool.

        Probing uses Declare, not FetchTask, so a connection that is down holds no
        slot. A refusal (bad token, deleted runner) waits long between probes; an
        unreachable server is probed with the short backoff. Returns when declared,
        or when the loop is stopping.
        """
        attempt, refused = 0, first_wait
        while not self._stopping.is_set():
            if attempt or first_wait:
                base, cap = (DOWN_BACKOFF_BASE, DOWN_BACKOFF_CAP) if refused else (
                    BACKOFF_BASE, BACKOFF_CAP)
                await self._sleep(max(1.0, backoff(attempt, self.rng, base=base, cap=cap)))
                if self._stopping.is_set():
                    return
            attempt += 1
            runner = None
            try:
                with self._open_exchange():
                    runner = await self.client.declare(__version__, self.label_names)
            except ConnectError as exc:
                if exc.code == "unimplemented":
                    log.info("connection %s: server has no Declare (old Forgejo); skipping",
                             self.name)
                    self._declared_ok()
                    return
                refused = not exc.outcome_unknown
                self._declare_failed(f"Declare: {exc}", refused=refused)
                continue
            except RpcError as exc:
                refused = False
                self._declare_failed(f"Declare: {exc}", refused=False)
                continue
            if runner is None:  # cut short by the stop
                return
            if runner.ephemeral:
                refused = True
                self._declare_failed("the server says this runner is ephemeral; a daemon "
                                     "cannot serve an ephemeral registration", refused=True)
                continue
            self._declared_ok()
            return

    def _declare_failed(self, reason: str, *, refused: bool) -> None:
        self.health.failed(reason, at_once=refused)
        if self.pending is None:
            # Out of the entitlement computation while not declared, so others may borrow
            # more. Not with a pending key: its reservation and retry go on regardless.
            self.pool.set_active(self.name, False)

    def _declared_ok(self) -> None:
        self.declared = True
        self.pool.set_active(self.name, True)
        self.health.succeeded()

    @property
    def label_names(self) -> tuple[str, ...]:
        """Forgejo wants label names only (``debian:host`` → ``debian``), and only of the
        labels an executor here runs (scheduler.executor.labels; the others were named
        in a warning at start and reload)."""
        return plan_labels(self.settings.labels).names

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when the service starts shutting down."""
        with trio.move_on_after(seconds):
            await self._stopping.wait()
            if self.pending is not None:
                # An unresolved key is retried through the shutdown, until its bound.
                await trio.sleep_until(self._resolve_deadline)
