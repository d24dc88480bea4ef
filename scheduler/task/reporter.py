"""Reporting one task to Forgejo: UpdateLog and UpdateTask, from its :class:`TaskLog`.

The only part of a task's life that talks to the server (protocol.md §8,
forgejo-runner's ``internal/pkg/report/reporter.go``):

* every ``report_interval`` the unsent rows go out first (UpdateLog from the last
  acknowledged index), then the full state (UpdateTask). That heartbeat is also what
  keeps Forgejo from declaring the task a zombie;
* an UpdateTask answer whose result is CANCELLED or FAILURE means the server stopped
  the task (user cancel, zombie cleanup): :attr:`TaskReporter.cancel_scope` is
  cancelled, and the job with it;
* at the end: the final UpdateLog with ``noMore`` (resent from ``ackIndex`` until
  everything is acknowledged), *then* the final UpdateTask (an ephemeral runner is
  deleted by it), both under one bounded :class:`RetryPolicy`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Protocol

import attrs
import trio

from scheduler.errors import ConnectError, LogsLost, RpcError
from scheduler.protocol import LogRow, Result, TaskState, UpdateTaskResponse
from scheduler.task.log import TaskLog

log = logging.getLogger(__name__)

#: Results with which the server tells a running task to stop.
STOP_RESULTS = frozenset({Result.CANCELLED, Result.FAILURE})


class ReportClient(Protocol):
    """The two RPCs reporting needs (``RunnerClient`` has them)."""

    async def update_task(
        self, state: TaskState, outputs: Mapping[str, str] | None = None
    ) -> UpdateTaskResponse: ...

    async def update_log(
        self, task_id: int, index: int, rows: tuple[LogRow, ...], no_more: bool
    ) -> int: ...


@attrs.frozen
class RetryPolicy:
    """Bounded retries for the final report (forgejo-runner ``report_retry``).

    forgejo-runner: 10 attempts, 100 ms initial delay, doubling. Each phase (final
    log, final state) also has a time ``budget`` and the delay is capped, so both
    phases together stay under two minutes even when every call runs into the
    client's timeout: the runner slot is released only when the report ends.
    """

    attempts: int = 10
    initial_delay: float = 0.1
    max_delay: float = 5.0
    budget: float = 55.0

    def delays(self) -> Iterator[float]:
        """The sleep after each failed attempt but the last."""
        delay = self.initial_delay
        for _ in range(max(self.attempts - 1, 0)):
            yield min(delay, self.max_delay)
            delay *= 2


DEFAULT_RETRY = RetryPolicy()


class TaskReporter:
    """Sends one :class:`TaskLog` to the server: heartbeat, server stop, final report."""

    def __init__(
        self, client: ReportClient, task_log: TaskLog, *, retry: RetryPolicy = DEFAULT_RETRY
    ) -> None:
        self.client = client
        self.task_log = task_log
        self.retry = retry
        #: Cancelled when the server says the task is stopped; ``run_task`` runs the job in it.
        self.cancel_scope = trio.CancelScope()
        #: CANCELLED/FAILURE once an UpdateTask answer said the server stopped the task.
        self.server_result = Result.UNSPECIFIED
        self._outputs_sent: set[str] = set()
        self._heartbeat_failing = False
        self._stop = trio.Event()

    @property
    def _who(self) -> tuple[int, str]:
        return self.task_log.task.id, self.task_log.connection

    async def send_log(self, *, no_more: bool = False) -> None:
        """One UpdateLog with every unsent row, from the last acknowledged index."""
        index, rows = self.task_log.unsent()
        if not rows:
            # Nothing to say; an empty batch would not even archive the log on the server.
            return
        ack = await self.client.update_log(self.task_log.task.id, index, rows, no_more)
        if ack < index:
            raise LogsLost(f"the server acknowledged {ack} rows after acknowledging {index}")
        self.task_log.acknowledge(ack)

    async def send_state(self) -> UpdateTaskResponse:
        """One UpdateTask with the full state and the outputs not yet acknowledged."""
        outputs = {k: v for k, v in self.task_log.outputs.items() if k not in self._outputs_sent}
        response = await self.client.update_task(self.task_log.state(), outputs)
        self._outputs_sent.update(k for k in response.sent_outputs if k in self.task_log.outputs)
        if (
            response.result in STOP_RESULTS
            and not self.task_log.closed
            and not self.server_result.is_final
        ):
            self.server_result = response.result
            log.info(
                "task %d on %s: the server stopped the task (%s); cancelling the job",
                *self._who, response.result.name.lower(),
            )
            self.cancel_scope.cancel()
        return response

    @property
    def outputs_unsent(self) -> int:
        return sum(1 for k in self.task_log.outputs if k not in self._outputs_sent)

    async def heartbeat(self, interval: float) -> None:
        """Every ``interval``: unsent rows, then the state. Runs until cancelled.

        Failures are logged (once per streak) and retried at the next tick: a
        heartbeat is best effort, only the final report must get through.
        """
        while not (self.task_log.closed or self.server_result.is_final or self._stop.is_set()):
            ok = True
            # Anything, not only RpcError: a heartbeat must never take the job down
            # (an odd answer can raise something the client does not translate).
            try:
                await self.send_log()
            except Exception as exc:
                ok = False
                self._heartbeat_failed("UpdateLog", exc)
            try:
                await self.send_state()
            except Exception as exc:
                ok = False
                self._heartbeat_failed("UpdateTask", exc)
            if ok and self._heartbeat_failing:
                self._heartbeat_failing = False
                log.info("task %d on %s: reporting works again", *self._who)
            if self.server_result.is_final:
                return
            with trio.move_on_after(interval):
                await self._stop.wait()

    def stop_heartbeat(self) -> None:
        """End the heartbeat after the round in flight, if any.

        Cancelling a round mid-RPC would not take it back from the server: the
        request may still be processed after the final report overtook it on
        another connection (harmless on Forgejo, but untidy). Letting it finish
        keeps every UpdateTask of a task in order.
        """
        self._stop.set()

    def _heartbeat_failed(self, rpc: str, exc: Exception) -> None:
        level = logging.DEBUG if self._heartbeat_failing else logging.WARNING
        self._heartbeat_failing = True
        log.log(level, "task %d on %s: %s failed, will retry at the next report: %s",
                *self._who, rpc, exc)

    async def send_final(self, retry: RetryPolicy | None = None) -> bool:
        """The final UpdateLog (``noMore``) then the final UpdateTask, each retried.

        Returns True iff the server acknowledged the final UpdateTask. The log going
        first matters: the final UpdateTask deletes an ephemeral runner, after which
        UpdateLog is refused. If the log cannot be completed the state is sent anyway:
        the task's result matters more than its last rows.
        """
        if not self.task_log.closed:
            raise RuntimeError("send_final before close")
        policy = retry or self.retry
        if not await self._final_log(policy):
            log.warning("task %d on %s: the final log was not fully acknowledged (%d rows unsent)",
                        *self._who, len(self.task_log.queued))
        return await self._final_state(policy)

    async def _final_log(self, policy: RetryPolicy) -> bool:
        async def attempt() -> bool | None:
            try:
                await self.send_log(no_more=True)
            except ConnectError as exc:
                if exc.code != "already_exists":
                    raise
                # "log file has been archived": an earlier noMore got through although
                # its answer was lost. Nothing more can be added.
                log.info("task %d on %s: the log was already archived", *self._who)
                self.task_log.acknowledge(self.task_log.next_index)
                return True
            except LogsLost as exc:
                log.warning("task %d on %s: %s", *self._who, exc)
                return False
            return True if not self.task_log.queued else None

        return await self._retrying("UpdateLog", policy, attempt)

    async def _final_state(self, policy: RetryPolicy) -> bool:
        acknowledged = False

        async def attempt() -> bool | None:
            nonlocal acknowledged
            response = await self.send_state()
            if not response.result.is_final:
                # Forgejo answers a final report with the task's final result (its own
                # if it already had one). Anything else did not record ours (a proxy's
                # answer, a broken server): send it again.
                log.debug("task %d: final UpdateTask answered with result %s; resending",
                          self.task_log.task.id, response.result.name.lower())
                return None
            acknowledged = True
            if response.result is not self.task_log.result:
                log.info("task %d on %s: reported %s, the server keeps %s", *self._who,
                         self.task_log.result.name.lower(), response.result.name.lower())
            return True if not self.outputs_unsent else None  # outputs: send again

        await self._retrying("UpdateTask", policy, attempt)
        return acknowledged

    async def _retrying(
        self, rpc: str, policy: RetryPolicy, attempt: Callable[[], Awaitable[bool | None]]
    ) -> bool:
        """Run ``attempt`` until it returns True (done) or False (give up), or the
        policy's attempts or time budget run out (False). An RPC failure, or any other
        exception, means "try again"."""
        delays = policy.delays()
        with trio.move_on_after(policy.budget):
            while True:
                try:
                    outcome = await attempt()
                    if outcome is not None:
                        return outcome
                except RpcError as exc:
                    log.debug("task %d: final %s failed: %s", self.task_log.task.id, rpc, exc)
                except Exception as exc:  # not a known RPC failure: retry all the same
                    log.warning("task %d on %s: final %s failed unexpectedly: %r",
                                *self._who, rpc, exc)
                delay = next(delays, None)
                if delay is None:
                    return False
                await trio.sleep(delay)
        return False
