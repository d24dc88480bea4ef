"""One task's life, from the first row to the final report.

* ``log.py``: :class:`~scheduler.task.log.TaskLog`, what an executor writes to (rows,
  steps, held rows, job outputs, masking); pure, no client, no trio;
* ``commands.py``: the workflow commands in a process's output, parsed once for what
  the line shows and what the step does;
* ``masking.py``: the values hidden in the log;
* ``reporter.py``: :class:`~scheduler.task.reporter.TaskReporter`, the only part that
  talks to the server (heartbeat, server stop, the final report and its retries);
* ``lifecycle.py``: the three ways a task ends: ``run_task``, ``reject_task``,
  ``settle_orphan``.
"""
