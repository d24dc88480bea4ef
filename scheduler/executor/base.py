"""Running one task to the end: the seam between the scheduler and an executor.

The scheduler only knows :func:`run_task` and :func:`reject_task`; both always
return (bounded by the client's per-call timeout and the retry budget), because the
caller releases the runner slot when they do, and a slot must come back even when
Forgejo is unreachable. An :class:`Executor` only runs the job and writes log rows
and step states through the :class:`~scheduler.report.TaskReporter`; everything
about the wire (heartbeats, cancellation by the server, the final report) lives
here and in ``scheduler.report``, so a fuller executor can replace the minimal one
without touching either.
"""

from __future__ import annotations

import logging
import socket
import traceback
from typing import Protocol

import attrs
import trio

from scheduler import __version__
from scheduler.protocol import Result, RunnerClient, Task
from scheduler.report import DEFAULT_RETRY, RetryPolicy, TaskReporter

log = logging.getLogger(__name__)

#: forgejo-runner's ``runner.timeout`` default: a job running longer is cancelled.
DEFAULT_MAX_RUN_TIME = 3 * 3600.0
#: How long a task cancelled by the service's shutdown may take to send its last report.
SHUTDOWN_REPORT_TIMEOUT = 30.0

#: How long the final report waits for a heartbeat round that is still in flight.
HEARTBEAT_GRACE = 5.0

SHUTDOWN_LINE = "cancelled: the runner is shutting down"
MAX_RUN_TIME_LINE = "The runner cancelled the job because it exceeds the maximum run time"

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


class Executor(Protocol):
    """Runs the job of one task, writing its log and step states through the reporter. Replaceable.

    Contract: call ``reporter.set_steps(n)`` once the payload is parsed, then
    ``start_step``/``finish_step``/``skip_step`` in order; write rows with
    ``reporter.log`` (own messages) and ``reporter.output`` (process output). Return
    the job's result. Cancellation (server stop, shutdown, maximum run time) arrives
    as ``trio.Cancelled``: stop everything the job started, clean up (shielded,
    bounded) and let it propagate. An exception is a bug or a bad payload: the task
    is reported failed with a line naming it.
    """

    async def execute(self, task: Task, reporter: TaskReporter) -> Result: ...


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
    client: RunnerClient,
    task: Task,
    executor: Executor,
    *,
    report_interval: float,
    connection: str,
    runner_name: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    max_run_time: float = DEFAULT_MAX_RUN_TIME,
    shutdown_report_timeout: float = SHUTDOWN_REPORT_TIMEOUT,
) -> TaskOutcome:
    """Run ``task`` with ``executor`` while reporting it, then send the final report.

    Never raises except ``trio.Cancelled`` (and other BaseExceptions) from outside,
    and then only after the job was killed and a bounded, shielded final report
    (CANCELLED, "cancelled: the runner is shutting down") went out.
    """
    start = trio.current_time()
    reporter = TaskReporter(client, task, connection=connection, retry=retry)
    reporter.log(_header(task, connection, runner_name or socket.gethostname()))
    log.info("task %d on %s: started", task.id, connection)
    try:
        result, last_line = await _execute(task, executor, reporter, report_interval, max_run_time)
        result = reporter.close(result, last_line)
        reported = await reporter.send_final()
    except Exception as exc:  # a bug in reporting itself: still report, never escape
        log.error(
            "task %d on %s: internal error while reporting: %s",
            task.id, connection, reporter.masker.mask(_describe(exc)),
        )
        reported = False  # if the deadline ends the report first
        with trio.CancelScope(deadline=trio.current_time() + shutdown_report_timeout):
            result = reporter.close(Result.FAILURE, f"internal error of the runner: {exc!r}")
            reported = await reporter.send_final()
    except BaseException:
        # Cancelled from outside (shutdown after its shutdown_timeout) or interrupted.
        # The executor has killed the job by now (cancellation went through it).
        # The shutdown can also arrive during the final report of a finished job, and
        # the deadline can end this report too (a Forgejo that does not answer).
        reported = False
        with trio.CancelScope(shield=True, deadline=trio.current_time() + shutdown_report_timeout):
            result = reporter.close(Result.CANCELLED, SHUTDOWN_LINE)
            reported = await reporter.send_final()
        _log_end(task, connection, result, reported, trio.current_time() - start)
        raise
    duration = trio.current_time() - start
    _log_end(task, connection, result, reported, duration)
    return TaskOutcome(result=result, reported=reported, duration=duration)


async def _execute(
    task: Task,
    executor: Executor,
    reporter: TaskReporter,
    report_interval: float,
    max_run_time: float,
) -> tuple[Result, str]:
    """The job beside the heartbeat; the result and the last log line."""
    result = Result.FAILURE
    last_line: str | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reporter.heartbeat, report_interval)
        with reporter.cancel_scope, trio.move_on_after(max_run_time) as run_time:
            try:
                result = await executor.execute(task, reporter)
            except Exception as exc:
                log.error(
                    "task %d on %s: the executor failed: %s",
                    task.id, reporter.connection, reporter.masker.mask(_describe(exc)),
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
        reporter.log(last_line)
    return result, _LAST_LINES[result]


async def reject_task(
    client: RunnerClient,
    task: Task,
    reason: str,
    *,
    connection: str,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> TaskOutcome:
    """Report a task this runner cannot run as failed at once: one row, then the result."""
    start = trio.current_time()
    reporter = TaskReporter(client, task, connection=connection, retry=retry)
    reporter.log(reason)
    reporter.close(Result.FAILURE, None)
    log.warning("task %d on %s: rejected: %s", task.id, connection, reporter.masker.mask(reason))
    reported = await reporter.send_final()
    duration = trio.current_time() - start
    _log_end(task, connection, Result.FAILURE, reported, duration)
    return TaskOutcome(result=Result.FAILURE, reported=reported, duration=duration)


def _log_end(task: Task, connection: str, result: Result, reported: bool, duration: float) -> None:
    if reported:
        log.info(
            "task %d on %s: finished, %s, after %.1fs",
            task.id, connection, result.name.lower(), duration,
        )
    else:
        log.error(
            "task %d on %s: the final result (%s) was not acknowledged by the server; "
            "giving up after the retries",
            task.id, connection, result.name.lower(),
        )


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()
