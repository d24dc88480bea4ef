"""The log and state of one task, as Forgejo will show them: pure bookkeeping.

What an executor writes to. No client, no trio: :class:`TaskLog` only records, and
:class:`~scheduler.task.reporter.TaskReporter` sends what it recorded. The shape
mirrors forgejo-runner's reporter (``internal/pkg/report/reporter.go``,
shared/reference/executor.md §2, protocol.md §8), because Forgejo's UI depends on it:

* one row per line, one task-level log; a step's rows are contiguous and its
  ``logIndex``/``logLength`` say where they are. The UI computes "Set up job" as the
  rows before the first started step and "Complete job" as the rows after the sum of
  the step lengths, so nothing may be interleaved between or inside steps. A row
  written while no step is open but after steps began is held back and joins the
  next step to start, or the trailing rows once every step has a result;
* rows are masked (``scheduler.task.masking``) before they are queued; a mask
  registered later re-masks the rows still unsent when they are taken for sending
  (forgejo-runner masks at send time only);
* the rows the server has acknowledged are dropped: only the unsent tail is kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import attrs

from scheduler.protocol import LogRow, Result, StepState, Task, TaskState
from scheduler.task.commands import CommandSink, CommandStream
from scheduler.task.masking import Masker

#: Forgejo truncates stored log lines at 64 KiB (``modules/actions/log.go``); longer
#: lines are split into several rows instead, so nothing is lost.
MAX_ROW_BYTES = 64 * 1024
MAX_OUTPUT_KEY_BYTES = 255
MAX_OUTPUT_VALUE_BYTES = 1024 * 1024


def now() -> dt.datetime:
    """Wall-clock time for timestamps the server shows (rows, started/stopped)."""
    return dt.datetime.now(dt.UTC)


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


class TaskLog:
    """The rows, steps, job outputs and result of one task.

    ``connection`` names where the task came from (an executor may pick settings by
    it, such as the host executor's per-connection labels).

    The executor writes through :meth:`log` (its own messages), :meth:`output` or a
    :meth:`commands` stream (lines of a step's process, workflow commands applied) and
    the step methods. The reporter reads :meth:`state`, :attr:`outputs` and
    :meth:`unsent`, and calls :meth:`acknowledge` with the server's answer.
    """

    def __init__(self, task: Task, *, connection: str, masker: Masker | None = None) -> None:
        self.task = task
        self.connection = connection
        self.masker = masker if masker is not None else Masker.for_task(task)
        self.started_at = now()
        self.stopped_at: dt.datetime | None = None
        self.result = Result.UNSPECIFIED
        self._steps: list[StepState] = []
        self._open: int | None = None  # the step rows go to
        self._unsent: list[LogRow] = []
        self._held: list[LogRow] = []  # rows written between two steps
        self._ack = 0  # rows the server holds (= task-level index of _unsent[0])
        self._masks_seen = len(self.masker)
        self._outputs: dict[str, str] = {}
        self._debug = task.secrets.get("ACTIONS_STEP_DEBUG") == "true"
        self._output = self.commands()

    # --- what the executor writes -----------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.result.is_final

    @property
    def next_index(self) -> int:
        """Task-level line number the next queued row will get."""
        return self._ack + len(self._unsent)

    @property
    def queued(self) -> tuple[LogRow, ...]:
        """Rows queued and not yet acknowledged, oldest first (the next UpdateLog)."""
        return tuple(self._unsent)

    @property
    def held(self) -> tuple[LogRow, ...]:
        """Rows written between two steps, waiting for the next step or the end."""
        return tuple(self._held)

    @property
    def outputs(self) -> Mapping[str, str]:
        """The job outputs recorded so far."""
        return self._outputs

    def set_steps(self, count: int) -> None:
        """Declare the job's steps (ids 0..count-1), as the server numbered them."""
        if self._steps:
            raise RuntimeError("set_steps called twice")
        self._steps = [StepState(id=i) for i in range(count)]

    @property
    def steps(self) -> tuple[StepState, ...]:
        steps = tuple(self._steps)
        if self._open is not None:
            i = self._open
            steps = (*steps[:i], self._with_length(steps[i]), *steps[i + 1 :])
        return steps

    def start_step(self, index: int) -> None:
        """Rows written from now until :meth:`finish_step` belong to step ``index``."""
        step = self._step(index)
        if self._open is not None:
            raise RuntimeError(f"step {index} started while step {self._open} is open")
        if step.started_at is not None or step.result.is_final:
            raise RuntimeError(f"step {index} started twice")
        self._steps[index] = attrs.evolve(step, started_at=now(), log_index=self.next_index)
        self._open = index
        held, self._held = self._held, []
        self._unsent.extend(held)

    def finish_step(self, index: int, result: Result) -> None:
        """Step ``index`` ended with its outcome (failure even with continue-on-error)."""
        step = self._step(index)
        if not result.is_final:
            raise ValueError("a step needs a final result")
        if step.result.is_final:
            raise RuntimeError(f"step {index} finished twice")
        self._end_step(index, result, now())
        self._release_held()

    def skip_step(self, index: int) -> None:
        """Step ``index`` does not run."""
        self.finish_step(index, Result.SKIPPED)

    def log(self, text: str) -> None:
        """A message of the runner itself; one row per line, no command processing."""
        for line in _lines(text):
            self._emit(line)

    def output(self, text: str) -> None:
        """Lines printed by a step (workflow commands apply, the step's ones ignored)."""
        for line in _lines(text):
            self._output.line(line)

    def commands(self, sink: CommandSink | None = None) -> CommandStream:
        """A stream for the output of one process, whose commands act on ``sink``."""
        return CommandStream(self, sink, debug=self._debug)

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
        for index, step in enumerate(self._steps):
            if not step.result.is_final:
                ending = Result.SKIPPED if result is Result.SKIPPED else Result.CANCELLED
                self._end_step(index, ending, stamp)
        self._release_held()
        if last_line is not None:
            self.log(last_line)
        self.result = result
        self.stopped_at = stamp
        return result

    # --- what the reporter reads ----------------------------------------------------

    def state(self) -> TaskState:
        return TaskState(
            id=self.task.id,
            result=self.result,
            started_at=self.started_at,
            stopped_at=self.stopped_at,
            steps=self.steps,
        )

    def unsent(self) -> tuple[int, tuple[LogRow, ...]]:
        """The task-level index of the first unacknowledged row, and the rows from it.

        Masks registered since the rows were queued are applied first
        (``::add-mask::`` often comes after the line that printed the value).
        """
        self._remask()
        return self._ack, tuple(self._unsent)

    def acknowledge(self, ack: int) -> None:
        """The server holds the first ``ack`` rows of the task: drop the ones queued."""
        dropped = max(0, min(ack - self._ack, len(self._unsent)))
        del self._unsent[:dropped]
        self._ack += dropped

    # --- rows -------------------------------------------------------------------------

    def _step(self, index: int) -> StepState:
        if not 0 <= index < len(self._steps):
            raise IndexError(f"no step {index} (the job has {len(self._steps)})")
        return self._steps[index]

    def _with_length(self, step: StepState) -> StepState:
        """An open step holds every row queued since it started."""
        return attrs.evolve(step, log_length=self.next_index - step.log_index)

    def _end_step(self, index: int, result: Result, stamp: dt.datetime) -> None:
        step = self._steps[index]
        if index == self._open:
            step = self._with_length(step)
            self._open = None
        elif step.started_at is None:
            step = attrs.evolve(step, log_index=self.next_index)  # never ran: empty, at the end
        self._steps[index] = attrs.evolve(step, result=result, stopped_at=stamp)

    def _emit(self, line: str) -> None:
        stamp = now()
        masked = self.masker.mask(_clean(line))
        for piece in split_row(masked):
            row = LogRow(time=stamp, content=piece)
            if self._open is None and self._between_steps():
                self._held.append(row)
            else:
                self._unsent.append(row)

    def _between_steps(self) -> bool:
        started = any(s.started_at is not None for s in self._steps)
        return started and not all(s.result.is_final for s in self._steps)

    def _release_held(self) -> None:
        if self._held and not self._between_steps():
            held, self._held = self._held, []
            self._unsent.extend(held)

    def _remask(self) -> None:
        if len(self.masker) == self._masks_seen:
            return
        self._masks_seen = len(self.masker)
        self._unsent = [attrs.evolve(r, content=self.masker.mask(r.content)) for r in self._unsent]
        self._held = [attrs.evolve(r, content=self.masker.mask(r.content)) for r in self._held]


def _clean(text: str) -> str:
    """Lone surrogates cannot be encoded for the wire; replace them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _lines(text: str) -> list[str]:
    """One entry per line; a trailing newline does not make an empty last row."""
    text = text.replace("\r\n", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    return [line.rstrip("\r") for line in text.split("\n")]
