"""The three ways a task ends: run, rejected, or orphaned by a dead process.

The scheduler only knows these functions. :func:`run_task` and :func:`reject_task`
always return (bounded by the client's per-call timeout and the retry budget),
because the caller releases the runner slot when they do, and a slot must come back
even when Forgejo is unreachable. An :class:`~scheduler.executor.Executor` only runs
the job and writes rows and step states to the :class:`~scheduler.task.log.TaskLog`;
everything about the wire (heartbeats, cancellation by the server, the final report)
is the :class:`~scheduler.task.reporter.TaskReporter`'s, so a fuller executor can
replace the host one without touching either.

:func:`settle_orphan` is for tasks that were running when the last process died.
They cannot be resumed (their processes are gone with the runner's bookkeeping), and
left alone they would sit "running" on the server until Forgejo's zombie timeout (10
minutes by default). So the next start settles each one:

1. a heartbeat UpdateTask asks the server's view: if the task is already final (it
   ended and was reported just before the crash, or the server stopped it), there is
   nothing to add;
2. otherwise an empty UpdateLog learns how many log rows the server holds, one row
   saying why goes after them with ``noMore``, and a final UpdateTask reports FAILURE.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import socket
import traceback

import attrs
import trio

from scheduler import __version__, logcontext
from scheduler.config.values import DEFAULT_JOB_TIMEOUT
from scheduler.errors import ConnectError, RpcError
from scheduler.executor import Executor
from scheduler.protocol import LogRow, Result, Task, TaskState
from scheduler.task.final import FinalReports
from scheduler.task.log import TaskLog
from scheduler.task.reporter import DEFAULT_RETRY, ReportClient, RetryPolicy, TaskReporter

log = logging.getLogger(__name__)

#: forgejo-runner's ``runner.timeout`` default: a job running longer is cancelled. The
#: service passes each connection's ``job_timeout`` (config, default this value).
DEFAULT_MAX_RUN_TIME = DEFAULT_JOB_TIMEOUT
#: How long a task cancelled by the service's shutdown may take to send its last report.
SHUTDOWN_REPORT_TIMEOUT = 30.0

#: How long the final report waits for a heartbeat round that is still in flight.
HEARTBEAT_GRACE = 5.0

SHUTDOWN_LINE = "cancelled: the runner is shutting down"
MAX_RUN_TIME_LINE = "The runner cancelled the job because it exceeds the maximum run time"
ORPHAN_REASON = "the runner restarted while this task was running; it cannot be resumed"

_LAST_LINES = {
    Result.SUCCESS: "🏁 Job succeeded",
    Result.FAILURE: "🏁 Job failed",
    Result.CANCELLED: "🏁 Job cancelled",
    Result.SKIPPED: "🏁 Job skipped",
}


@attrs.frozen
class TaskOutcome:
    """How a task ended, for metrics and the slot ledger."""

    result: Result  # final result we reported (or tried to)
    reported: bool  # True iff the server acknowledged the final UpdateTask
    duration: float  # seconds (trio clock) from start to final report


def _header(task: Task, connection: str, runner_name: str) -> str:
    job = task.context.get("job")
    event = task.context.get("event_name")
    text = f"forgejo-scheduler {__version__} ({runner_name}) received task {task.id}"
    if isinstance(job, str) and job:
        text += f" of job {job}"
    if isinstance(event, str) and event:
        text += f", triggered by event: {event}"
    return text + f", on connection {connection}"


async def run_task(
    client: ReportClient,
    task: Task,
    executor: Executor,
    *,
    report_interval: float,
    connection: str,
    runner_name: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    max_run_time: float = DEFAULT_MAX_RUN_TIME,
    shutdown_report_timeout: float = SHUTDOWN_REPORT_TIMEOUT,
    reports: FinalReports | None = None,
) -> TaskOutcome:
    """Run ``task`` with ``executor`` while reporting it, then send the final report.

    Never raises except ``trio.Cancelled`` (and other BaseExceptions) from outside,
    and then only after the job was killed and a bounded, shielded final report
    (CANCELLED, "cancelled: the runner is shutting down") went out. ``reports`` (the
    connection's :class:`FinalReports`) learns where the task is and how its final
    report ended, and bounds that report once the service shuts down.
    """
    logcontext.bind_task(task.id, task.context, connection=connection)  # for every line below
    if reports is None:
        reports = FinalReports(timeout=shutdown_report_timeout)
    start = trio.current_time()
    task_log = TaskLog(task, connection=connection)
    reporter = TaskReporter(client, task_log, retry=retry)
    task_log.log(_header(task, connection, runner_name or socket.gethostname()))
    log.info("task %d on %s: started", task.id, connection)
    reports.started(task.id)
    reported = False  # if a deadline ends the report first
    try:
        result, last_line = await _execute(task, executor, reporter, report_interval, max_run_time)
        result = task_log.close(result, last_line)
        with reports.send(task.id):
            reported = await reporter.send_final()
    except Exception as exc:  # a bug in reporting itself: still report, never escape
        log.error(
            "task %d on %s: internal error while reporting: %s",
            task.id, connection, task_log.masker.mask(_describe(exc)),
        )
        with reports.send(task.id) as scope:
            _bound(scope, shutdown_report_timeout)
            result = task_log.close(Result.FAILURE, f"internal error of the runner: {exc!r}")
            reported = await reporter.send_final()
    except BaseException:
        # Cancelled from outside (shutdown after its shutdown_timeout) or interrupted.
        # The executor has killed the job by now (cancellation went through it).
        # The shutdown can also arrive during the final report of a finished job, and
        # the deadline can end this report too (a Forgejo that does not answer).
        with reports.send(task.id, shield=True) as scope:
            _bound(scope, shutdown_report_timeout)
            result = task_log.close(Result.CANCELLED, SHUTDOWN_LINE)
            reported = await reporter.send_final()
        reports.ended(task.id, reported)
        _log_end(task, connection, result, reported, trio.current_time() - start)
        raise
    reports.ended(task.id, reported)
    duration = trio.current_time() - start
    _log_end(task, connection, result, reported, duration)
    return TaskOutcome(result=result, reported=reported, duration=duration)


def _bound(scope: trio.CancelScope, timeout: float) -> None:
    """A report of a failed or cancelled task: at most ``timeout`` from now."""
    scope.deadline = min(scope.deadline, trio.current_time() + timeout)


async def _execute(
    task: Task,
    executor: Executor,
    reporter: TaskReporter,
    report_interval: float,
    max_run_time: float,
) -> tuple[Result, str]:
    """The job beside the heartbeat; the result and the last log line."""
    task_log = reporter.task_log
    result = Result.FAILURE
    last_line: str | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reporter.heartbeat, report_interval)
        with reporter.cancel_scope, trio.move_on_after(max_run_time) as run_time:
            try:
                result = await executor.execute(task, task_log)
            except Exception as exc:
                log.error(
                    "task %d on %s: the executor failed: %s",
                    task.id, task_log.connection, task_log.masker.mask(_describe(exc)),
                )
                result = Result.FAILURE
                last_line = f"internal error: the executor failed: {type(exc).__name__}: {exc}"
        # Let a heartbeat round in flight finish (bounded) so it cannot land after the
        # final report.
        reporter.stop_heartbeat()
        nursery.cancel_scope.deadline = trio.current_time() + HEARTBEAT_GRACE
    if reporter.server_result.is_final:
        name = reporter.server_result.name.lower()
        line = f"The server stopped the task ({name}); the job was cancelled"
        return reporter.server_result, line
    if run_time.cancelled_caught:
        return Result.CANCELLED, MAX_RUN_TIME_LINE
    if not result.is_final:
        return Result.FAILURE, "internal error: the executor returned no result"
    if last_line is not None:
        task_log.log(last_line)
    return result, _LAST_LINES[result]


async def reject_task(
    client: ReportClient,
    task: Task,
    reason: str,
    *,
    connection: str,
    retry: RetryPolicy = DEFAULT_RETRY,
    reports: FinalReports | None = None,
) -> TaskOutcome:
    """Report a task this runner cannot run as failed at once: one row, then the result."""
    logcontext.bind_task(task.id, task.context, connection=connection)
    reports = reports or FinalReports()
    start = trio.current_time()
    task_log = TaskLog(task, connection=connection)
    reporter = TaskReporter(client, task_log, retry=retry)
    task_log.log(reason)
    task_log.close(Result.FAILURE, None)
    log.warning("task %d on %s: rejected: %s", task.id, connection, task_log.masker.mask(reason))
    reported = False
    with reports.send(task.id):  # a shutdown bounds it
        reported = await reporter.send_final()
    reports.ended(task.id, reported)
    duration = trio.current_time() - start
    _log_end(task, connection, Result.FAILURE, reported, duration)
    return TaskOutcome(result=Result.FAILURE, reported=reported, duration=duration)


async def settle_orphan(
    client: ReportClient, task_id: int, *, rng: random.Random, attempts: int = 10
) -> Result | None:
    """The task's final result on the server afterwards, or None if it could not be told."""
    logcontext.bind(task_id=task_id)
    for attempt in range(attempts):
        try:
            view = await client.update_task(TaskState(id=task_id))
            if view.result.is_final:
                return view.result
            ack = await client.update_log(task_id, 0, (), False)
            row = LogRow(dt.datetime.now(dt.UTC), f"forgejo-scheduler: {ORPHAN_REASON}")
            try:
                await client.update_log(task_id, ack, (row,), True)
            except ConnectError as exc:
                if exc.code != "already_exists":  # archived: the state below still counts
                    raise
            now = dt.datetime.now(dt.UTC)
            await client.update_task(TaskState(id=task_id, result=Result.FAILURE, stopped_at=now))
            return Result.FAILURE
        except RpcError as exc:
            if not exc.outcome_unknown:
                log.error("task %d: cannot report it failed: %s", task_id, exc)
                return None
            await trio.sleep(rng.uniform(0, min(30.0, 0.5 * 2**attempt)))
    log.error("task %d: gave up reporting it failed after %d attempts", task_id, attempts)
    return None


def _log_end(task: Task, connection: str, result: Result, reported: bool, duration: float) -> None:
    if reported:
        log.info(
            "task %d on %s: finished, %s, after %.1fs",
            task.id, connection, result.name.lower(), duration,
        )
    else:
        log.error(
            "task %d on %s: the final result (%s) was not acknowledged by the server; "
            "giving up (its retries, or the shutdown's shutdown_report_timeout, ran out)",
            task.id, connection, result.name.lower(),
        )


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()
