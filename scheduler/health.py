"""Whether a connection's Forgejo answers: ``up`` follows its last exchanges.

A connection goes *down* after :data:`DOWN_AFTER` consecutive failed exchanges of any
kind (FetchTask, Declare, UpdateTask, UpdateLog: a timeout, a refused or reset
connection, a 5xx or 429, a garbled answer), or at once when the server refuses the
runner itself (a bad token, an ephemeral registration) or when no exchange has worked
yet (at start-up there is no "up" to protect from a blip); it is *up* again after the
first exchange that works. One WARNING line when it goes down, one INFO line when it
comes back, and ``forgejo_scheduler_connection_up`` and ``/healthz`` follow it.

Three, not one: a single lost answer (a proxy restart, one reset) is not an outage
worth an alert line, and three failures in a row take a few seconds when connections
are refused (the retries back off from 1 s) and at most about three times ``fetch_timeout``
when the server black-holes them.

This is health only. The fetch loop's rules do not depend on it: an unresolved
request key is retried with the same key and keeps its reservation whether the
connection is up or down (shared/reference/core-design.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import attrs
from prometheus_client import Gauge

from scheduler.errors import ConnectError, RpcError
from scheduler.protocol import LogRow, RunnerClient, TaskState, UpdateTaskResponse

# The lines are about the connection: logged under its name, as they always were.
log = logging.getLogger("scheduler.connection")

#: Consecutive failed exchanges after which a connection is down.
DOWN_AFTER = 3

#: Connect error codes with which the server answers about a task (an archived log, an
#: unknown task, a bad index): the connection itself works.
ABOUT_THE_TASK = frozenset(
    {"already_exists", "not_found", "failed_precondition", "invalid_argument", "out_of_range"}
)


@attrs.define
class Health:
    """One connection's up/down state, its consecutive failures and its last error."""

    name: str
    url: str
    gauge: Gauge
    up: bool | None = None  # None until the first exchange
    failures: int = 0  # consecutive failed exchanges
    last_error: str = ""  # "" when the last exchange worked

    def succeeded(self) -> None:
        """An exchange worked: up (one INFO line if it was not)."""
        self.failures = 0
        self.last_error = ""
        if self.up is not True:
            log.info("connection %s: up (%s)", self.name, self.url)
            self._set(True)

    def failed(self, reason: str, *, at_once: bool = False) -> None:
        """An exchange failed; down after :data:`DOWN_AFTER` in a row, or ``at_once``
        (the server refused the runner). One WARNING line when it goes down."""
        self.failures += 1
        self.last_error = reason
        at_once = at_once or self.up is None
        if self.up is not False and (at_once or self.failures >= DOWN_AFTER):
            streak = "" if at_once else f" ({self.failures} exchanges failed in a row)"
            log.warning("connection %s: down: %s%s", self.name, reason, streak)
            self._set(False)

    def _set(self, up: bool) -> None:
        self.up = up
        self.gauge.set(1 if up else 0)


class ObservedClient:
    """The calls a task makes (UpdateTask, UpdateLog), counted in a :class:`Health`.

    A Connect error in :data:`ABOUT_THE_TASK` (``already_exists`` for an archived log,
    ``not_found``...) is the server answering about the task: the connection works.
    """

    def __init__(self, client: RunnerClient, health: Health) -> None:
        self.client = client
        self.health = health

    def _failed(self, exc: RpcError) -> None:
        if isinstance(exc, ConnectError) and exc.code in ABOUT_THE_TASK:
            self.health.succeeded()
        else:
            self.health.failed(str(exc))

    async def update_task(
        self, state: TaskState, outputs: Mapping[str, str] | None = None
    ) -> UpdateTaskResponse:
        try:
            response = await self.client.update_task(state, outputs)
        except RpcError as exc:
            self._failed(exc)
            raise
        self.health.succeeded()
        return response

    async def update_log(
        self, task_id: int, index: int, rows: tuple[LogRow, ...], no_more: bool
    ) -> int:
        try:
            ack = await self.client.update_log(task_id, index, rows, no_more)
        except RpcError as exc:
            self._failed(exc)
            raise
        self.health.succeeded()
        return ack
