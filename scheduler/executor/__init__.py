"""Executors run the job of a task; ``run_task``/``reject_task`` report it.

The scheduler codes against :class:`Executor`, :func:`run_task`, :func:`reject_task`
and :class:`TaskOutcome` only. :class:`HostExecutor` runs jobs on this host with
forgejo-runner's semantics (contexts, expressions, shells, workflow commands,
``uses:`` actions); a container executor can stand beside it behind the same protocol.
"""

from scheduler.executor.base import Executor, TaskOutcome, reject_task, run_task
from scheduler.executor.host import HostExecutor

__all__ = ["Executor", "HostExecutor", "TaskOutcome", "reject_task", "run_task"]
