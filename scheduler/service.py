"""The service: one trio nursery that wires config → connections ⇄ pool → executor.

Lifecycle::

    start:  load every connection's state file; re-reserve the capacity of unresolved
            request keys and count tasks left running by a dead process, all before
            the first grant; serve /metrics; start one loop per connection.
    stop:   (request_stop, e.g. SIGTERM) no more grants; loops without an unresolved
            key end at once; unresolved keys keep being retried for at most
            ``shutdown_resolve_timeout`` (their tasks may already be assigned; a key
            left then stays on disk for the next start); running tasks finish, for at
            most ``shutdown_timeout``, then are cancelled and reported cancelled; every
            final report during the stop takes at most ``shutdown_report_timeout``.
            Every 10 s a line per connection says what the stop still waits for; the
            last line (:class:`~scheduler.drain.StopReport`) says what was and was not
            acknowledged.
    abort:  (a second SIGTERM) cancel running tasks now; they are still reported.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import trio

from scheduler import __version__
from scheduler.config import Config, ConnectionSettings, config_warnings, load_config
from scheduler.connection import ConnectionLoop, ConnectionStatistics
from scheduler.drain import PROGRESS_EVERY, StopReport, waiting_lines
from scheduler.errors import ConfigError
from scheduler.executor import Executor
from scheduler.executor.host import HostExecutor
from scheduler.http import make_app, serve_http
from scheduler.keys import DiskWrite, KeyStore, in_worker_thread
from scheduler.metrics import Metrics
from scheduler.pool import PoolStatistics, SlotPool
from scheduler.protocol import RunnerClient, ssl_context
from scheduler.reload import plan_reload
from scheduler.slots import SlotLedger
from scheduler.startup import connection_summary, service_summary

log = logging.getLogger(__name__)

ClientFactory = Callable[[ConnectionSettings, float], RunnerClient]


def default_client(settings: ConnectionSettings, timeout: float) -> RunnerClient:
    ca = str(settings.ca_file) if settings.ca_file else None
    return RunnerClient(
        settings.url,
        uuid=settings.uuid,
        token=settings.token,
        timeout=timeout,
        verify=ssl_context(ca, settings.insecure),
    )


@attrs.frozen
class Started:
    """What ``run`` reports once it serves: the bound metrics address, if any."""

    metrics_address: tuple[str, int] | None


@attrs.define
class ConnectionEntry:
    """Everything the service keeps about one connection (its settings are in the config)."""

    store: KeyStore
    loop: ConnectionLoop | None = None  # once its client is open
    tasks: trio.CancelScope | None = None  # the nursery its tasks run in (abort cancels it)
    orphans: list[tuple[int, bool]] = attrs.field(factory=list)  # (task id, holds a slot)
    removing: bool = False  # a reload removed it: forgotten once its loop and tasks end


@attrs.frozen
class ServiceStatistics:
    """The service at one moment: its phase, the pool, and every running loop."""

    phase: str
    pool: PoolStatistics
    connections: Mapping[str, ConnectionStatistics]


class Service:
    """The whole runner: one pool of slots shared by one loop per connection.

    Builds the ledger, pool, metrics and executor from a :class:`Config`, restores
    what a previous process left on disk, then runs every connection's loop in one
    nursery until :meth:`request_stop` (graceful) or :meth:`abort`. A reload
    (:meth:`reload`) adds, retunes and drains connections without touching running
    tasks. Health and the /healthz detail come from :meth:`statistics`.
    """

    def __init__(
        self,
        config: Config,
        *,
        executor: Executor | None = None,
        client_factory: ClientFactory = default_client,
        seed: int | None = None,
        disk_write: DiskWrite = in_worker_thread,
    ) -> None:
        self.config = config
        self.disk_write = disk_write  # how key stores write (a seam for virtual time)
        runner = config.runner
        self.executor = executor or HostExecutor(
            Path(runner.state_dir) / "work", labels=self._labels_by_connection(config),
            job_env={c.name: c.job_env for c in config.connections},
        )
        self.client_factory = client_factory
        self.rng = random.Random(seed)
        names = [c.name for c in config.connections]
        self.metrics = Metrics(capacity=runner.capacity, connections=names, version=__version__)
        self.ledger = SlotLedger(runner.capacity)
        self.pool = SlotPool(self.ledger, self.metrics)
        self.entries: dict[str, ConnectionEntry] = {}
        for c in config.connections:
            self._register(c)
        self.phase = "starting"
        #: Where /metrics and the health endpoints listen, once :meth:`run` serves them.
        self.metrics_address: tuple[str, int] | None = None
        self._stop = trio.Event()
        self._drain_started: float | None = None
        self._resolve_deadline = float("inf")
        self._conns: trio.Nursery | None = None
        #: What the shutdown came to, once stopped (the exit status of ``run``).
        self.stop_report: StopReport | None = None

    def __repr__(self) -> str:
        return (
            f"<Service {self.phase} capacity {self.ledger.capacity} "
            f"connections: {', '.join(self.entries) or '-'}>"
        )

    def _register(self, c: ConnectionSettings) -> None:
        """A connection joins the ledger, the metrics and the service's entries."""
        self.ledger.add(c.name, c.share)
        self.metrics.add_connection(c.name, c.share)
        self.entries[c.name] = ConnectionEntry(
            KeyStore(Path(self.config.runner.state_dir), c.name, disk_write=self.disk_write))

    @property
    def loops(self) -> dict[str, ConnectionLoop]:
        """The connection loops that have started (a view of :attr:`entries`)."""
        return {name: e.loop for name, e in self.entries.items() if e.loop is not None}

    # --- control --------------------------------------------------------------------

    def request_stop(self) -> None:
        """Graceful: drain (see module docstring). Safe to call more than once."""
        if not self._stop.is_set():
            r = self.config.runner
            log.info("shutting down: no new tasks; running tasks may finish for %gs, "
                     "unresolved request keys are retried for %gs, final reports may take "
                     "%gs", r.shutdown_timeout, r.shutdown_resolve_timeout,
                     r.shutdown_report_timeout)
        self._stop.set()
        self._enter_drain()

    def abort(self) -> None:
        """Cancel running tasks now (they are still reported to their servers)."""
        log.warning("cancelling every running task now")
        self._stop.set()
        self._enter_drain()  # their reports are bounded before they are cancelled
        self._cancel_tasks()

    def _cancel_tasks(self) -> None:
        for entry in self.entries.values():
            if entry.tasks is not None:
                entry.tasks.cancel()

    @staticmethod
    def _labels_by_connection(config: Config) -> dict[str, tuple[str, ...]]:
        """Which labels each connection runs: ``docker://``/``lxc://`` ones are refused."""
        return {c.name: c.labels for c in config.connections}

    def reload_file(self, path: Path) -> bool:
        """Reload from ``path``; an invalid file is refused and the running config stays."""
        try:
            new = load_config(path)
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays in force: %s", exc)
            return False
        self.reload(new)
        return True

    def reload(self, new: Config) -> None:
        """Apply a changed config without disturbing running tasks (see scheduler.reload)."""
        plan = plan_reload(self.config, new)
        old_labels = self._labels_by_connection(self.config)
        for warning in plan.kept:
            log.warning("reload: %s", warning)
        runner = plan.config.runner
        if plan.capacity_changed:
            log.info("reload: capacity %d -> %d", self.ledger.capacity, runner.capacity)
            self.ledger.set_capacity(runner.capacity)
            self.metrics.capacity_slots.set(runner.capacity)
        self.config = plan.config
        retuned = {c.name: c for c in plan.retuned}
        for c in plan.retuned:
            log.info("reload: connection %s: weight %g, slots %d..%d, fetch every %gs",
                     c.name, c.weight, c.min_slots, c.max_slots, c.fetch_interval)
            self.ledger.configure(c.name, c.share)
            self.metrics.add_connection(c.name, c.share)
        for name, loop in self.loops.items():
            loop.retune(retuned.get(name, loop.settings), runner,
                        relabel=name in plan.relabelled)
        if isinstance(self.executor, HostExecutor):
            # Connections being removed keep theirs while their tasks finish.
            self.executor.labels = {**old_labels, **self._labels_by_connection(plan.config)}
            self.executor.job_env = {
                **self.executor.job_env, **{c.name: c.job_env for c in plan.config.connections}
            }
        for warning in config_warnings(plan.config):  # undeclared labels, token files...
            log.warning("reload: %s", warning)
        for name in plan.removed:
            self._remove_connection(name)
        for c in plan.added:
            self._add_connection(c)
        self.pool.dispatch()

    def _add_connection(self, c: ConnectionSettings) -> None:
        log.info("reload: connection %s added (%s)", c.name, c.url)
        self._register(c)
        self.pool.reopen_connection(c.name)
        self._restore_one(c.name)
        if self._conns is not None and not self._stop.is_set():
            self._conns.start_soon(self._connection_main, c, name=f"connection-{c.name}")

    def _remove_connection(self, name: str) -> None:
        """Drain: no new grants, an unresolved key is still retried, running tasks finish."""
        log.info("reload: connection %s removed; draining it", name)
        entry = self.entries[name]
        entry.removing = True
        self.pool.close_connection(name)
        if entry.loop is not None:
            # Not a shutdown: its unresolved key may take as long as its tasks.
            entry.loop.stop(trio.current_time() + self.config.runner.shutdown_timeout)

    def _forget_connection(self, name: str) -> None:
        """The last step of a removal, once its loop and tasks are done."""
        self.pool.release(name)  # an unresolved key past its deadline: it stays on disk
        self.ledger.remove(name)
        self.metrics.remove_connection(name)
        del self.entries[name]
        log.info("reload: connection %s removed", name)

    # --- health (scheduler.http.HealthSource) ----------------------------------------

    def live(self) -> bool:
        return self.phase in ("starting", "running", "draining")

    def ready(self) -> bool:
        return self.phase == "running" and any(loop.declared for loop in self.loops.values())

    def statistics(self) -> ServiceStatistics:
        return ServiceStatistics(
            phase=self.phase,
            pool=self.pool.statistics(),
            connections={name: loop.statistics() for name, loop in self.loops.items()},
        )

    def status(self) -> Mapping[str, object]:
        """The /healthz detail: :meth:`statistics` rendered to its JSON keys."""
        stats = self.statistics()
        slots = stats.pool.slots
        return {
            "phase": stats.phase,
            "capacity": slots.capacity,
            "free": slots.free,
            "connections": {
                name: {
                    "phase": c.phase.value,
                    "up": c.up,
                    "running": slots.connections[name].running,
                    "reserved": slots.connections[name].reserved,
                    "last_error": c.last_error or None,
                }
                for name, c in stats.connections.items()
            },
        }

    # --- the run --------------------------------------------------------------------

    def _restore(self) -> None:
        """Before any grant: unresolved keys get their slots back, orphans are counted."""
        for name in self.entries:
            self._restore_one(name)

    def _restore_one(self, name: str) -> None:
        entry = self.entries[name]
        state = entry.store.load()
        if state.pending is not None:
            got = self.pool.restore(name, state.pending.task_capacity)
            log.info(
                "connection %s: found an unresolved request key (task capacity %d); "
                "%d slot(s) reserved for its retry",
                name, state.pending.task_capacity, got,
            )
        if state.running:
            held = self.pool.adopt(name, len(state.running))
            entry.orphans = [(t, i < held) for i, t in enumerate(state.running)]

    async def run(
        self, *, task_status: trio.TaskStatus[Started] = trio.TASK_STATUS_IGNORED
    ) -> None:
        log.info("%s", service_summary(self.config))
        for warning in config_warnings(self.config):
            log.warning("%s", warning)
        self._restore()
        async with trio.open_nursery() as root:
            address = None
            listen = self.config.metrics
            if listen.enabled:
                app = make_app(self.metrics.registry, self)
                address = await root.start(serve_http, app, listen.host, listen.port)
                log.info("metrics and health on http://%s:%d/metrics", *address)
                self.metrics_address = address
            async with trio.open_nursery() as conns:
                self._conns = conns
                for c in self.config.connections:
                    conns.start_soon(self._connection_main, c, name=f"connection-{c.name}")
                if self._drain_started is None:
                    self.phase = "running"
                task_status.started(Started(address))
                await self._stop.wait()
                self._enter_drain()
                assert self._drain_started is not None
                root.start_soon(self._shutdown_watchdog,
                                self._drain_started + self.config.runner.shutdown_timeout)
                root.start_soon(self._drain_progress)
            self.phase = "stopped"
            self.stop_report = StopReport.of(self.loops)
            if self.stop_report.clean:
                log.info("%s", self.stop_report.line())
            else:
                log.error("%s", self.stop_report.line())
            root.cancel_scope.cancel()

    def _enter_drain(self) -> None:
        """The stop's bookkeeping, at once and once: no grants, loops told their bound,
        final reports bounded. The watchdog and the progress lines start in ``run``."""
        if self._drain_started is not None:
            return
        self.phase = "draining"
        self.pool.close()
        runner = self.config.runner
        self._drain_started = trio.current_time()
        self._resolve_deadline = self._drain_started + runner.shutdown_resolve_timeout
        for loop in self.loops.values():
            self._stop_loop(loop)

    def _stop_loop(self, loop: ConnectionLoop) -> None:
        loop.stop(self._resolve_deadline)
        loop.reports.drain(self.config.runner.shutdown_report_timeout)

    async def _drain_progress(self) -> None:
        """Every PROGRESS_EVERY seconds: what the stop still waits for, per connection."""
        assert self._drain_started is not None
        while True:
            await trio.sleep(PROGRESS_EVERY)
            waited = trio.current_time() - self._drain_started
            for line in waiting_lines(self.loops):
                log.info("shutting down for %.0fs: %s", waited, line)

    async def _shutdown_watchdog(self, deadline: float) -> None:
        await trio.sleep_until(deadline)
        timeout = self.config.runner.shutdown_timeout
        slots = self.ledger.statistics().connections
        running = sum(slots[n].running for n in self.loops)
        if running:
            log.warning("shutdown_timeout (%gs) reached: cancelling %d running task(s)",
                        timeout, running)
        self._cancel_tasks()

    async def _connection_main(self, settings: ConnectionSettings) -> None:
        name = settings.name
        entry = self.entries[name]
        async with self.client_factory(settings, self.config.runner.fetch_timeout) as client:
            loop = ConnectionLoop(
                settings=settings,
                runner=self.config.runner,
                client=client,
                pool=self.pool,
                store=entry.store,
                executor=self.executor,
                metrics=self.metrics,
                rng=random.Random(self.rng.random()),
            )
            entry.loop = loop
            log.info("%s", connection_summary(loop, self.executor, self.ledger.capacity),
                     extra={"connection": name})
            if self._stop.is_set():  # stopped before this loop got going
                self._stop_loop(loop)
            async with trio.open_nursery() as tasks:
                entry.tasks = tasks.cancel_scope
                orphans, entry.orphans = entry.orphans, []
                for task_id, holds_slot in orphans:
                    tasks.start_soon(loop.tasks.settle_orphan, task_id, holds_slot)
                await loop.run(tasks)
        if entry.removing:
            self._forget_connection(name)
