"""The simulator's ledger: what happened to every task, across all instances.

This is the ground truth the tests and benchmarks hold the runner against. It is kept
by the server side, so it sees what a real Forgejo would: a task assigned in an answer
that never reached the client is still assigned, and only comes back through a replay
(Forgejo 15) or the zombie reaper.

Definitions (per task, counted once):

- ``assigned``: a task row was created (a job was handed to the runner).
- ``delivered``: the task was in a response the server finished writing.
- ``finished``: the server holds a final result (from the runner's UpdateTask, a
  server-side cancel, or the zombie reaper).
- ``zombie``: finished by the zombie reaper (the runner went silent).
- ``lost``: not finished at report time, or finished only by the zombie reaper.
- ``redelivered``: delivered complete more than once (a Forgejo 15 replay of a key whose
  first answer did arrive). Not by itself a second execution: a runner that dies
  between reading an answer and recording it retries the key and gets the task again
  without ever having started it.
- ``duplicate_executions``: the runner ran the task twice: UpdateTask states with two
  different ``startedAt`` (each execution has its own start), or new log rows after
  the runner itself had reported it final.
- ``late_updates``: non-final UpdateTasks that arrived after the runner's final one
  (a heartbeat overtaken by the final report; Forgejo ignores them).
- ``outstanding``: assigned and not finished, now; ``peak_outstanding`` its maximum over
  time. Counted over all instances: one runner process serves them all, so its capacity
  bounds this number (apart from tasks lost in dropped answers on Forgejo 14).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from scheduler.sim.wire import Result

FinishedBy = Literal["runner", "cancel", "zombie"]


@attrs.define
class TaskRecord:
    task_id: int
    instance: str
    job_id: int
    assigned_at: float
    deliveries: int = 0
    result: Result = Result.UNSPECIFIED
    finished_by: FinishedBy | None = None
    finished_at: float | None = None
    #: The runner sent a final UpdateTask (even if the server had stopped the task before).
    runner_final: bool = False
    duplicate_reasons: list[str] = attrs.field(factory=list)

    @property
    def finished(self) -> bool:
        return self.finished_by is not None

    @property
    def lost(self) -> bool:
        return self.finished_by is None or self.finished_by == "zombie"

    @property
    def duplicate(self) -> bool:
        return bool(self.duplicate_reasons)


@attrs.define
class _Counts:
    assigned: int = 0
    delivered: int = 0
    redelivered: int = 0
    finished: int = 0
    zombie: int = 0
    cancelled: int = 0
    duplicate_executions: int = 0
    late_updates: int = 0
    outstanding: int = 0
    peak_outstanding: int = 0


@attrs.frozen(kw_only=True)
class TaskCounts:
    """The counters above, for all instances or one, at one moment."""

    assigned: int
    delivered: int
    redelivered: int
    finished: int
    zombie: int
    cancelled: int
    duplicate_executions: int
    late_updates: int
    outstanding: int
    peak_outstanding: int
    lost: int
    results: Mapping[str, int]  # finished tasks by wire result name, sorted

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = attrs.asdict(self)
        out["results"] = dict(self.results)
        return out


@attrs.frozen(kw_only=True)
class SimStatistics(TaskCounts):
    """The ledger at one moment: the totals, and the same per instance."""

    instances: Mapping[str, TaskCounts]

    def to_json(self) -> dict[str, Any]:
        """JSON-able, keys as the simulator's ``/_sim/state`` has always served them."""
        out = {k: v for k, v in super().to_json().items() if k != "instances"}
        out["instances"] = {name: c.to_json() for name, c in self.instances.items()}
        return out


class Ledger:
    """Shared by all instances of one Simulator; also hands out simulator-wide task ids."""

    def __init__(self) -> None:
        self.tasks: dict[int, TaskRecord] = {}
        self._ids = itertools.count(1)
        self._total = _Counts()
        self._per_instance: dict[str, _Counts] = {}

    def add_instance(self, name: str) -> None:
        self._per_instance.setdefault(name, _Counts())

    def next_task_id(self) -> int:
        return next(self._ids)

    def _both(self, instance: str) -> tuple[_Counts, _Counts]:
        return self._total, self._per_instance.setdefault(instance, _Counts())

    # ------------------------------------------------------------ events

    def assigned(self, instance: str, task_id: int, job_id: int, now: float) -> None:
        self.tasks[task_id] = TaskRecord(task_id, instance, job_id, now)
        for c in self._both(instance):
            c.assigned += 1
            c.outstanding += 1
            c.peak_outstanding = max(c.peak_outstanding, c.outstanding)

    def delivered(self, task_ids: Iterable[int]) -> None:
        for task_id in task_ids:
            rec = self.tasks[task_id]
            rec.deliveries += 1
            if rec.deliveries == 1:
                for c in self._both(rec.instance):
                    c.delivered += 1
            elif rec.deliveries == 2:
                for c in self._both(rec.instance):
                    c.redelivered += 1

    def finished(self, task_id: int, result: Result, by: FinishedBy, now: float) -> None:
        rec = self.tasks[task_id]
        if rec.finished:
            return
        rec.result, rec.finished_by, rec.finished_at = result, by, now
        for c in self._both(rec.instance):
            c.finished += 1
            c.outstanding -= 1
            if by == "zombie":
                c.zombie += 1
            elif by == "cancel":
                c.cancelled += 1

    def runner_final(self, task_id: int) -> None:
        self.tasks[task_id].runner_final = True

    def late_update(self, task_id: int) -> None:
        for c in self._both(self.tasks[task_id].instance):
            c.late_updates += 1

    def duplicate(self, task_id: int, reason: str) -> None:
        rec = self.tasks[task_id]
        if not rec.duplicate_reasons:
            for c in self._both(rec.instance):
                c.duplicate_executions += 1
        rec.duplicate_reasons.append(reason)

    # ------------------------------------------------------------ reading

    @property
    def assigned_count(self) -> int:
        return self._total.assigned

    @property
    def delivered_count(self) -> int:
        return self._total.delivered

    @property
    def finished_count(self) -> int:
        return self._total.finished

    @property
    def outstanding(self) -> int:
        return self._total.outstanding

    @property
    def peak_outstanding(self) -> int:
        return self._total.peak_outstanding

    @property
    def duplicate_executions(self) -> int:
        return self._total.duplicate_executions

    @property
    def lost(self) -> int:
        return sum(1 for rec in self.tasks.values() if rec.lost)

    @property
    def zombie(self) -> int:
        return self._total.zombie

    @staticmethod
    def _counts(counts: _Counts, records: list[TaskRecord]) -> dict[str, Any]:
        return {
            **attrs.asdict(counts),
            "lost": sum(1 for rec in records if rec.lost),
            "results": dict(
                sorted(Counter(rec.result.wire for rec in records if rec.finished).items())
            ),
        }

    def statistics(self) -> SimStatistics:
        """Totals, then the same per instance (``.to_json()`` for a JSON document)."""
        records = list(self.tasks.values())
        return SimStatistics(
            **self._counts(self._total, records),
            instances={
                name: TaskCounts(**self._counts(counts, [r for r in records if r.instance == name]))
                for name, counts in sorted(self._per_instance.items())
            },
        )

    def summary(self) -> str:
        """One line for humans (the ``sim`` command prints it periodically, mid-run).

        Mid-run, a task not finished yet is running (or on its way to the runner), not
        lost: ``running`` counts those (``undelivered`` of them never reached the runner
        yet, e.g. in a dropped answer), and ``lost`` only the tasks lost for good, the
        ones the zombie reaper failed. ``statistics().lost`` is the verdict at the end of
        a run, when a task still unfinished is lost too.
        """
        t = self._total
        undelivered = sum(1 for rec in self.tasks.values()
                          if not rec.finished and rec.deliveries == 0)
        return (
            f"assigned={t.assigned} delivered={t.delivered} finished={t.finished} "
            f"running={t.outstanding} undelivered={undelivered} peak={t.peak_outstanding} "
            f"lost={t.zombie} duplicates={t.duplicate_executions}"
        )
