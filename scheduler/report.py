"""Reporting one task's progress to Forgejo: UpdateLog and UpdateTask.

This mirrors forgejo-runner's reporter (``internal/pkg/report/reporter.go``,
shared/reference/executor.md §2, protocol.md §8), because Forgejo's UI and its
zombie detection depend on its exact shape:

* one row per line, one task-level log; a step's rows are contiguous and its
  ``logIndex``/``logLength`` say where they are. The UI computes "Set up job" as the
  rows before the first started step and "Complete job" as the rows after the sum of
  the step lengths, so nothing may be interleaved between or inside steps. A row
  written while no step is open but after steps began is held back and joins the
  next step to start, or the trailing rows once every step has a result;
* every ``report_interval`` the pending rows go out first (UpdateLog from the last
  acknowledged index), then the full state (UpdateTask). That heartbeat is also what
  keeps Forgejo from declaring the task a zombie;
* an UpdateTask answer whose result is CANCELLED or FAILURE means the server stopped
  the task (user cancel, zombie cleanup): the job is cancelled locally;
* at the end: the final UpdateLog with ``noMore`` (resent from ``ackIndex`` until
  everything is acknowledged), *then* the final UpdateTask (an ephemeral runner is
  deleted by it), both with bounded retries.

Rows are masked (``scheduler.masking``) before they are queued; a mask registered
later re-masks the rows still pending at send time, like forgejo-runner, which masks
at send time only.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Protocol

import attrs
import trio

from scheduler.errors import ConnectError, RpcError
from scheduler.masking import Masker
from scheduler.protocol import LogRow, Result, StepState, Task, TaskState, UpdateTaskResponse

log = logging.getLogger(__name__)

#: Forgejo truncates stored log lines at 64 KiB (``modules/actions/log.go``); longer
#: lines are split into several rows instead, so nothing is lost.
MAX_ROW_BYTES = 64 * 1024
MAX_OUTPUT_KEY_BYTES = 255
MAX_OUTPUT_VALUE_BYTES = 1024 * 1024

# The workflow-command shape the reporter looks at (forgejo-runner ``handleCommand``).
_COMMAND = re.compile(r"^::([^ :]+)( .*)?::(.*)$")

#: Results with which the server tells a running task to stop.
STOP_RESULTS = frozenset({Result.CANCELLED, Result.FAILURE})


def now() -> dt.datetime:
    """Wall-clock time for timestamps the server shows (rows, started/stopped)."""
    return dt.datetime.now(dt.UTC)


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


class LogsLost(Exception):
    """The server acknowledged fewer rows than it had already acknowledged."""


def split_row(text: str, limit: int = MAX_ROW_BYTES) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` UTF-8 bytes, on character boundaries."""
    if len(text) * 4 <= limit:
        return [text]
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        # Back off over UTF-8 continuation bytes so no character is cut in two.
        while end < len(data) and end > start and (data[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(data[start:end].decode("utf-8", "replace"))
        start = end
    return pieces


def _clean(text: str) -> str:
    """Lone surrogates cannot be encoded for the wire; replace them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


@attrs.define
class _Step:
    index: int
    result: Result = Result.UNSPECIFIED
    started_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None
    log_index: int = 0
    log_length: int = 0

    def state(self) -> StepState:
        return StepState(
            id=self.index,
            result=self.result,
            started_at=self.started_at,
            stopped_at=self.stopped_at,
            log_index=self.log_index,
            log_length=self.log_length,
        )


class TaskReporter:
    """The log and state of one task, and the RPCs that report them.

    The executor writes through :meth:`log` (its own messages), :meth:`output`
    (lines of a step's process; workflow commands such as ``::add-mask::`` are
    handled here) and the step methods. ``run_task`` drives the RPCs.
    """

    def __init__(
        self,
        client: ReportClient,
        task: Task,
        *,
        connection: str,
        masker: Masker | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.client = client
        self.task = task
        self.connection = connection
        self.masker = masker if masker is not None else Masker.for_task(task)
        self.retry = retry
        #: Cancelled when the server says the task is stopped; ``run_task`` runs the job in it.
        self.cancel_scope = trio.CancelScope()
        #: CANCELLED/FAILURE once an UpdateTask answer said the server stopped the task.
        self.server_result = Result.UNSPECIFIED
        self.started_at = now()
        self.stopped_at: dt.datetime | None = None
        self.result = Result.UNSPECIFIED
        self._steps: list[_Step] = []
        self._open: _Step | None = None
        self._pending: list[LogRow] = []
        self._held: list[LogRow] = []  # rows written between two steps
        self._ack = 0  # rows the server holds (= task-level index of _pending[0])
        self._masks_seen = len(self.masker)
        self._outputs: dict[str, str] = {}
        self._outputs_sent: set[str] = set()
        self._stop_token: str | None = None
        self._debug = task.secrets.get("ACTIONS_STEP_DEBUG") == "true"
        self._heartbeat_failing = False
        self._stop = trio.Event()

    # --- what the executor calls ------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.result.is_final

    @property
    def next_index(self) -> int:
        """Task-level line number the next queued row will get."""
        return self._ack + len(self._pending)

    @property
    def queued(self) -> tuple[LogRow, ...]:
        """Rows queued and not yet acknowledged, oldest first (the next UpdateLog)."""
        return tuple(self._pending)

    @property
    def held(self) -> tuple[LogRow, ...]:
        """Rows written between two steps, waiting for the next step or the end."""
        return tuple(self._held)

    def set_steps(self, count: int) -> None:
        """Declare the job's steps (ids 0..count-1), as the server numbered them."""
        if self._steps:
            raise RuntimeError("set_steps called twice")
        self._steps = [_Step(i) for i in range(count)]

    @property
    def steps(self) -> tuple[StepState, ...]:
        return tuple(s.state() for s in self._steps)

    def start_step(self, index: int) -> None:
        """Rows written from now until :meth:`finish_step` belong to step ``index``."""
        step = self._step(index)
        if self._open is not None:
            raise RuntimeError(f"step {index} started while step {self._open.index} is open")
        if step.started_at is not None or step.result.is_final:
            raise RuntimeError(f"step {index} started twice")
        step.started_at = now()
        step.log_index = self.next_index
        self._open = step
        held, self._held = self._held, []
        for row in held:
            self._queue(row)

    def finish_step(self, index: int, result: Result) -> None:
        """Step ``index`` ended with its outcome (failure even with continue-on-error)."""
        step = self._step(index)
        if not result.is_final:
            raise ValueError("a step needs a final result")
        if step.result.is_final:
            raise RuntimeError(f"step {index} finished twice")
        if step is self._open:
            self._open = None
        elif step.started_at is None:
            step.log_index = self.next_index  # a step that never ran: empty, at the current end
        step.result = result
        step.stopped_at = now()
        self._maybe_release_held()

    def skip_step(self, index: int) -> None:
        """Step ``index`` does not run."""
        self.finish_step(index, Result.SKIPPED)

    def log(self, text: str) -> None:
        """A message of the runner itself; one row per line, no command processing."""
        for line in _lines(text):
            self._emit(line)

    def output(self, text: str) -> None:
        """Lines printed by a step's process: workflow commands apply (executor.md §2.8)."""
        for line in _lines(text):
            self._output_line(line)

    def add_mask(self, value: str) -> None:
        self.masker.add(value)

    def set_output(self, key: str, value: str) -> bool:
        """Record a job output for UpdateTask; the first value of a key wins."""
        if not key or len(key.encode()) > MAX_OUTPUT_KEY_BYTES:
            self.log(f"ignoring job output {key[:64]!r}: the key must be 1..255 bytes")
            return False
        if len(value.encode()) > MAX_OUTPUT_VALUE_BYTES:
            self.log(f"ignoring job output {key!r}: the value is larger than 1 MiB")
            return False
        if key in self._outputs:
            return False
        self._outputs[key] = value
        return True

    def state(self) -> TaskState:
        return TaskState(
            id=self.task.id,
            result=self.result,
            started_at=self.started_at,
            stopped_at=self.stopped_at,
            steps=self.steps,
        )

    def close(self, result: Result, last_line: str | None) -> Result:
        """Set the final result (once; later calls keep the first) and the last row.

        Steps without a result become CANCELLED (SKIPPED if the job was skipped), as in
        forgejo-runner's ``Close``.
        """
        if self.closed:
            return self.result
        if not result.is_final:
            result = Result.FAILURE
        stamp = now()
        self._open = None
        for step in self._steps:
            if step.result.is_final:
                continue
            if step.started_at is None:
                step.log_index = self.next_index
            step.result = Result.SKIPPED if result is Result.SKIPPED else Result.CANCELLED
            step.stopped_at = stamp
        self._maybe_release_held()
        if last_line is not None:
            self.log(last_line)
        self.result = result
        self.stopped_at = stamp
        return result

    # --- rows -------------------------------------------------------------------------

    def _step(self, index: int) -> _Step:
        if not 0 <= index < len(self._steps):
            raise IndexError(f"no step {index} (the job has {len(self._steps)})")
        return self._steps[index]

    def _output_line(self, line: str) -> None:
        if self._stop_token is not None:
            if line == f"::{self._stop_token}::":
                self._stop_token = None
            else:
                self._emit(line)
            return
        match = _COMMAND.match(line)
        if match is None:
            self._emit(line)
            return
        command, argument = match.group(1), match.group(3)
        if command == "add-mask":
            self.add_mask(argument)
        elif command == "debug":
            if self._debug:
                self._emit(argument)
        elif command == "group":
            self._emit(f"##[group]{argument}")
        elif command == "endgroup":
            self._emit("##[endgroup]")
        elif command == "stop-commands":
            self._stop_token = argument or None
        else:
            self._emit(line)

    def _emit(self, line: str) -> None:
        stamp = now()
        masked = self.masker.mask(_clean(line))
        for piece in split_row(masked):
            self._place(LogRow(time=stamp, content=piece))

    def _place(self, row: LogRow) -> None:
        if self._open is None and self._between_steps():
            self._held.append(row)
        else:
            self._queue(row)

    def _queue(self, row: LogRow) -> None:
        self._pending.append(row)
        if self._open is not None:
            self._open.log_length += 1

    def _between_steps(self) -> bool:
        started = any(s.started_at is not None for s in self._steps)
        return started and not all(s.result.is_final for s in self._steps)

    def _maybe_release_held(self) -> None:
        if self._held and not self._between_steps():
            held, self._held = self._held, []
            for row in held:
                self._queue(row)

    def _remask(self) -> None:
        """Apply masks registered since the rows were queued (``::add-mask::`` comes late)."""
        if len(self.masker) == self._masks_seen:
            return
        self._masks_seen = len(self.masker)
        self._pending = [
            attrs.evolve(r, content=self.masker.mask(r.content)) for r in self._pending
        ]
        self._held = [attrs.evolve(r, content=self.masker.mask(r.content)) for r in self._held]

    # --- RPCs -------------------------------------------------------------------------

    async def send_log(self, *, no_more: bool = False) -> None:
        """One UpdateLog with every pending row, from the last acknowledged index."""
        self._remask()
        rows = tuple(self._pending)
        index = self._ack
        if not rows:
            # Nothing to say; an empty batch would not even archive the log on the server.
            return
        ack = await self.client.update_log(self.task.id, index, rows, no_more)
        if ack < index:
            raise LogsLost(f"the server acknowledged {ack} rows after acknowledging {index}")
        dropped = min(ack - index, len(rows))
        del self._pending[:dropped]
        self._ack = index + dropped

    async def send_state(self) -> UpdateTaskResponse:
        """One UpdateTask with the full state and the outputs not yet acknowledged."""
        outputs = {k: v for k, v in self._outputs.items() if k not in self._outputs_sent}
        response = await self.client.update_task(self.state(), outputs)
        self._outputs_sent.update(k for k in response.sent_outputs if k in self._outputs)
        if (
            response.result in STOP_RESULTS
            and not self.closed
            and not self.server_result.is_final
        ):
            self.server_result = response.result
            log.info(
                "task %d on %s: the server stopped the task (%s); cancelling the job",
                self.task.id, self.connection, response.result.name.lower(),
            )
            self.cancel_scope.cancel()
        return response

    @property
    def outputs_unsent(self) -> int:
        return sum(1 for k in self._outputs if k not in self._outputs_sent)

    async def heartbeat(self, interval: float) -> None:
        """Every ``interval``: pending rows, then the state. Runs until cancelled.

        Failures are logged (once per streak) and retried at the next tick: a
        heartbeat is best effort, only the final report must get through.
        """
        while not (self.closed or self.server_result.is_final or self._stop.is_set()):
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
                log.info("task %d on %s: reporting works again", self.task.id, self.connection)
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
        log.log(
            level, "task %d on %s: %s failed, will retry at the next report: %s",
            self.task.id, self.connection, rpc, exc,
        )

    async def send_final(self, retry: RetryPolicy | None = None) -> bool:
        """The final UpdateLog (``noMore``) then the final UpdateTask, each retried.

        Returns True iff the server acknowledged the final UpdateTask. The log going
        first matters: the final UpdateTask deletes an ephemeral runner, after which
        UpdateLog is refused. If the log cannot be completed the state is sent anyway:
        the task's result matters more than its last rows.
        """
        if not self.closed:
            raise RuntimeError("send_final before close")
        policy = retry or self.retry
        if not await self._final_log(policy):
            log.warning(
                "task %d on %s: the final log was not fully acknowledged (%d rows unsent)",
                self.task.id, self.connection, len(self._pending),
            )
        return await self._final_state(policy)

    async def _final_log(self, policy: RetryPolicy) -> bool:
        self._maybe_release_held()

        async def attempt() -> bool | None:
            try:
                await self.send_log(no_more=True)
            except ConnectError as exc:
                if exc.code != "already_exists":
                    raise
                # "log file has been archived": an earlier noMore got through although
                # its answer was lost. Nothing more can be added.
                log.info("task %d on %s: the log was already archived",
                         self.task.id, self.connection)
                self._ack += len(self._pending)
                self._pending.clear()
                return True
            except LogsLost as exc:
                log.warning("task %d on %s: %s", self.task.id, self.connection, exc)
                return False
            return True if not self._pending else None

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
                          self.task.id, response.result.name.lower())
                return None
            acknowledged = True
            if response.result is not self.result:
                log.info("task %d on %s: reported %s, the server keeps %s",
                         self.task.id, self.connection,
                         self.result.name.lower(), response.result.name.lower())
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
                    log.debug("task %d: final %s failed: %s", self.task.id, rpc, exc)
                except Exception as exc:  # not a known RPC failure: retry all the same
                    log.warning("task %d on %s: final %s failed unexpectedly: %r",
                                self.task.id, self.connection, rpc, exc)
                delay = next(delays, None)
                if delay is None:
                    return False
                await trio.sleep(delay)
        return False


def _lines(text: str) -> list[str]:
    """One entry per line; a trailing newline does not make an empty last row."""
    text = text.replace("\r\n", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    return [line.rstrip("\r") for line in text.split("\n")]
