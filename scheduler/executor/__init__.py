"""Executors run the job of a task, and nothing else.

The one interface is :class:`Executor`; :class:`HostExecutor` runs jobs on this host
with forgejo-runner's semantics (contexts, expressions, shells, workflow commands,
``uses:`` actions); a container executor can stand beside it behind the same
protocol. Reporting the task and its three endings are ``scheduler.task``'s.
"""

from typing import Protocol

from scheduler.executor.host import HostExecutor
from scheduler.protocol import Result, Task
from scheduler.task.log import TaskLog

__all__ = ["Executor", "HostExecutor"]


class Executor(Protocol):
    """Runs the job of one task, writing its rows and step states to the log. Replaceable.

    Contract: call ``log.set_steps(n)`` once the payload is parsed, then
    ``start_step``/``finish_step``/``skip_step`` in order; write rows with
    ``log.log`` (own messages) and ``log.output`` or a ``log.commands(sink)`` stream
    (process output). Return the job's result. Cancellation (server stop, shutdown,
    maximum run time) arrives as ``trio.Cancelled``: stop everything the job started,
    clean up (shielded, bounded) and let it propagate. An exception is a bug or a bad
    payload: the task is reported failed with a line naming it.
    """

    async def execute(self, task: Task, log: TaskLog) -> Result: ...
