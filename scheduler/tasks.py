"""A connection's tasks: the bookkeeping around each of the three ways a task ends.

``scheduler.task.lifecycle`` runs, rejects or settles one task against its server;
this module does what the connection owes around it, whatever happens: count it in
the metrics, forget it in the key store (so a restart does not settle it again) and
give its runner slot back to the pool. The connection loop starts these in its task
nursery and goes on fetching; the service starts :meth:`ConnectionTasks.settle_orphan`
for tasks a dead process left behind.
"""

from __future__ import annotations

import logging
import random

import attrs

from scheduler import logcontext
from scheduler.executor import Executor
from scheduler.health import ObservedClient
from scheduler.keys import KeyStore
from scheduler.metrics import ConnectionMetrics
from scheduler.pool import SlotPool
from scheduler.protocol import Result, Task
from scheduler.task.final import FinalReports
from scheduler.task.lifecycle import ORPHAN_REASON, reject_task, run_task, settle_orphan

log = logging.getLogger(__name__)


@attrs.frozen
class TaskLimits:
    """The settings a task starts with (a reload changes them for later tasks only)."""

    report_interval: float
    job_timeout: float
    shutdown_report_timeout: float


@attrs.define
class ConnectionTasks:
    """Runs, rejects and settles the tasks of connection ``name``; never raises for one."""

    name: str
    client: ObservedClient  # UpdateTask/UpdateLog count in the connection's health
    executor: Executor
    store: KeyStore
    pool: SlotPool
    m: ConnectionMetrics
    reports: FinalReports
    rng: random.Random

    async def run(self, task: Task, limits: TaskLimits) -> None:
        """Run ``task``; then count it, forget it and give its slot back."""
        self.m.tasks_running.inc()
        try:
            outcome = await run_task(
                self.client, task, self.executor,
                report_interval=limits.report_interval, connection=self.name,
                max_run_time=limits.job_timeout,
                shutdown_report_timeout=limits.shutdown_report_timeout,
                reports=self.reports,
            )
            result = outcome.result.name.lower() if outcome.result.is_final else "unknown"
            self.m.tasks_finished[result].inc()
            self.m.task_duration.observe(outcome.duration)
        finally:
            self.m.tasks_running.dec()
            await self.store.task_done(task.id)
            self.pool.finish(self.name)

    async def reject(self, task: Task, reason: str) -> None:
        """Report ``task`` failed at once (no slot was free for it); then forget it."""
        try:
            await reject_task(self.client, task, reason, connection=self.name,
                              reports=self.reports)
            self.m.tasks_finished["failure"].inc()
        finally:
            await self.store.task_done(task.id)

    async def settle_orphan(self, task_id: int, holds_slot: bool) -> None:
        """A task left running by a dead process: settle it (see scheduler.task.lifecycle)."""
        logcontext.bind(connection=self.name, task_id=task_id)
        log.warning(
            "connection %s: task %d: %s; reporting it failed", self.name, task_id, ORPHAN_REASON
        )
        settled = False
        result = None
        try:
            with self.reports.send(task_id):  # a shutdown bounds it
                result = await settle_orphan(self.client, task_id, rng=self.rng)
                settled = True
            if result is Result.FAILURE:
                self.m.tasks_finished["failure"].inc()
            elif result is not None:
                log.info("connection %s: task %d had already ended (%s)",
                         self.name, task_id, result.name.lower())
        finally:
            self.reports.ended(task_id, result is not None)
            if settled:  # else cut short by a shutdown: the next start settles it
                await self.store.task_done(task_id)
            if holds_slot:
                self.pool.finish(self.name)
