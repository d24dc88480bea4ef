"""Tasks that were running when the last process died.

They cannot be resumed (their processes are gone with the runner's bookkeeping),
and left alone they would sit "running" on the server until Forgejo's zombie
timeout (10 minutes by default). So the next start settles each one:

1. a heartbeat UpdateTask asks the server's view: if the task is already final
   (it ended and was reported just before the crash, or the server stopped it),
   there is nothing to add;
2. otherwise an empty UpdateLog learns how many log rows the server holds, one
   row saying why goes after them with ``noMore``, and a final UpdateTask
   reports FAILURE.
"""

from __future__ import annotations

import datetime as dt
import logging
import random

import trio

from scheduler.errors import ConnectError, RpcError
from scheduler.protocol import LogRow, Result, RunnerClient, TaskState

log = logging.getLogger(__name__)

REASON = "the runner restarted while this task was running; it cannot be resumed"


async def settle_orphan(
    client: RunnerClient, task_id: int, *, rng: random.Random, attempts: int = 10
) -> Result | None:
    """The task's final result on the server afterwards, or None if it could not be told."""
    for attempt in range(attempts):
        try:
            view = await client.update_task(TaskState(id=task_id))
            if view.result.is_final:
                return view.result
            ack = await client.update_log(task_id, 0, (), False)
            row = LogRow(dt.datetime.now(dt.UTC), f"forgejo-scheduler: {REASON}")
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
