"""What a log line is about: the connection and the task, carried by a context variable.

Why a context variable: a message like ``final UpdateTask failed`` is logged deep in
the reporter, which knows the task id but not the repository, job or connection. The
places where those become known (a connection loop starting, a task starting) bind
them once with :func:`bind`, and every record logged from there on carries them.

trio gives every task its own copy of the context of the task that started it, so a
value bound in a connection loop reaches the tasks that loop starts (and their heartbeat
and executor children), and never leaks to a sibling: two tasks running at once each
see their own ``task_id``. A binding lasts until the trio task that made it ends.

:class:`ContextFilter` (installed on the log handler by :func:`scheduler.logs.setup_logging`)
copies the fields onto each record as attributes, where the formatters read them. A
field passed explicitly with ``extra=`` wins over the bound one.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping

import attrs

#: The record attributes this module fills, in the order the formatters show them.
FIELDS = ("connection", "task_id", "repository", "job")


@attrs.frozen
class LogContext:
    """The fields known at one point of the code; None where not known."""

    connection: str | None = None
    task_id: int | None = None
    repository: str | None = None
    job: str | None = None

    def items(self) -> dict[str, str | int]:
        """The known fields, in :data:`FIELDS` order."""
        values = (self.connection, self.task_id, self.repository, self.job)
        return {k: v for k, v in zip(FIELDS, values, strict=True) if v is not None}


_NOTHING = LogContext()  # frozen: safe as the shared default
_current: contextvars.ContextVar[LogContext] = contextvars.ContextVar(
    "scheduler_log_context", default=_NOTHING
)


def current() -> LogContext:
    return _current.get()


def bind(
    *,
    connection: str | None = None,
    task_id: int | None = None,
    repository: str | None = None,
    job: str | None = None,
) -> None:
    """Add the given fields to the current trio task's log context (and so to the
    context of every task it starts from now on); fields not given are kept."""
    now = _current.get()
    _current.set(LogContext(
        connection=now.connection if connection is None else connection,
        task_id=now.task_id if task_id is None else task_id,
        repository=now.repository if repository is None else repository,
        job=now.job if job is None else job,
    ))


def bind_task(task_id: int, context: Mapping[str, object], *, connection: str | None) -> None:
    """Bind a task: its id, and its repository and job from the task's ``context``
    (the ``github`` context Forgejo sends), where they are non-empty strings."""
    repository = context.get("repository")
    job = context.get("job")
    _current.set(LogContext(  # nothing of another task survives
        connection=_current.get().connection if connection is None else connection,
        task_id=task_id,
        repository=repository if isinstance(repository, str) and repository else None,
        job=job if isinstance(job, str) and job else None,
    ))


class ContextFilter(logging.Filter):
    """Copies the bound fields onto every record (unless ``extra=`` set them already)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _current.get().items().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def record_fields(record: logging.LogRecord) -> dict[str, str | int]:
    """The context fields a record carries, in :data:`FIELDS` order."""
    out: dict[str, str | int] = {}
    for key in FIELDS:
        value = getattr(record, key, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            out[key] = value
    return out
