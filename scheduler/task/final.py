"""One connection's final reports: which are being sent, which the server acknowledged,
and the bound on them once the service shuts down.

Why a ledger of its own: the service's last line, and its exit status, must say
exactly which final results were and were not acknowledged (an operator otherwise
learns only from Forgejo, ten minutes later, that a job "ran" forever). And during a
shutdown every final report is bounded (``shutdown_report_timeout``): a report that
began before the stop gets that long from the stop, one that begins later that long
from its own start, so the whole stop takes at most ``shutdown_timeout`` (the running
tasks) plus ``shutdown_report_timeout`` (their last reports), whatever the server does.

A task is *running* from its start until its job ended, then *sending* while its
final report goes out, then *ended*, acknowledged or not. Only the ends during a
shutdown are kept (those are what the shutdown waited for); earlier ones were logged
when they happened.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import trio


@attrs.define
class FinalReports:
    """See the module docstring. ``timeout`` is ``shutdown_report_timeout``."""

    timeout: float = 30.0
    running: set[int] = attrs.field(factory=set)
    sending: dict[int, trio.CancelScope] = attrs.field(factory=dict)
    #: Task ids whose final report ended after the shutdown began.
    acknowledged: list[int] = attrs.field(factory=list)
    unacknowledged: list[int] = attrs.field(factory=list)
    draining_since: float | None = None

    def drain(self, timeout: float | None = None) -> None:
        """The service is shutting down: bound every report from now on (idempotent)."""
        if timeout is not None:
            self.timeout = timeout
        if self.draining_since is not None:
            return
        self.draining_since = trio.current_time()
        for scope in self.sending.values():
            scope.deadline = min(scope.deadline, self.draining_since + self.timeout)

    def started(self, task_id: int) -> None:
        self.running.add(task_id)

    @contextmanager
    def send(self, task_id: int, *, shield: bool = False) -> Iterator[trio.CancelScope]:
        """The scope a final report is sent in: unbounded (the retry policy bounds it)
        until the shutdown, then ``timeout``. ``shield``: the report of a task cancelled
        from outside, which must still go out."""
        self.running.discard(task_id)
        deadline = math.inf
        if self.draining_since is not None:
            deadline = trio.current_time() + self.timeout
        scope = trio.CancelScope(deadline=deadline, shield=shield)
        self.sending[task_id] = scope
        try:
            with scope:
                yield scope
        finally:
            if self.sending.get(task_id) is scope:
                del self.sending[task_id]

    def ended(self, task_id: int, acknowledged: bool) -> None:
        """The task's final report is over; ``acknowledged`` if the server said so."""
        self.running.discard(task_id)
        if self.draining_since is not None:
            (self.acknowledged if acknowledged else self.unacknowledged).append(task_id)
