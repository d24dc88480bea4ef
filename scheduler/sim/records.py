"""What the simulated Forgejo stores: jobs, tasks, their steps, updates and log rows.

Plain records; the behaviour that fills them is in ``instance.py``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from scheduler.sim.wire import Result


@attrs.define
class SimJob:
    id: int
    runs_on: tuple[str, ...]
    duration: float
    workflow: str | None
    secrets: dict[str, str]
    vars: dict[str, str]
    handle: str
    created_at: float
    task_id: int | None = None
    cancelled: bool = False
    #: Keys of the task's ``context`` that replace the simulated ones (``event_name``...).
    context: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class StepState:
    """A StepState as received from the runner."""

    id: int
    result: Result = Result.UNSPECIFIED
    started_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None
    log_index: int = 0
    log_length: int = 0


@attrs.define
class StoredStep:
    """The server's ``action_task_step`` row."""

    index: int
    status: str = "waiting"  # waiting | running | RESULT_* name of a final result
    started_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None
    log_index: int = 0
    log_length: int = 0


@attrs.frozen
class UpdateRecord:
    """One UpdateTask as received (kept for tests, even when it changed nothing)."""

    time: float
    result: Result
    started_at: dt.datetime | None
    stopped_at: dt.datetime | None
    steps: tuple[StepState, ...]
    outputs: dict[str, str]
    raw: dict[str, Any]


@attrs.frozen
class LogRow:
    time: dt.datetime | None
    content: str


@attrs.define
class SimTask:
    id: int
    job: SimJob
    runner_uuid: str
    request_key: str | None
    token: str
    payload: bytes
    assigned_at: float
    last_activity: float
    steps: list[StoredStep]
    result: Result = Result.UNSPECIFIED  # the server's view; UNSPECIFIED while running
    stopped_at: dt.datetime | None = None
    outputs: dict[str, str] = attrs.field(factory=dict)
    updates: list[UpdateRecord] = attrs.field(factory=list)
    log_rows: list[LogRow] = attrs.field(factory=list)
    log_archived: bool = False
    tokens_issued: int = 1

    @property
    def done(self) -> bool:
        return self.result.final

    @property
    def log_lines(self) -> list[str]:
        return [row.content for row in self.log_rows]
