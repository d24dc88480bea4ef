"""An executor that runs no process: for the scheduler's tests and the benchmarks.

The scheduler's behaviour (who gets slots, when, what happens to keys) depends on
how long tasks take, not on what they do. Running them as bash processes ties a
test to wall-clock time, which rules out trio's MockClock; running them here, as
trio sleeps on the run's clock, makes a minute of simulated load take
milliseconds and makes every interleaving reproducible. The host executor itself
is tested with real processes elsewhere (tests/test_executor_host.py); the demo
runs real processes.

Each ``run:`` step of the payload becomes one step; a step whose script is
``sleep N`` sleeps N seconds, ``exit N`` with N ≠ 0 fails, anything else echoes.
"""

from __future__ import annotations

import re

import trio
import yaml

from scheduler.protocol import Result, Task
from scheduler.task.log import TaskLog

_SLEEP = re.compile(r"^\s*sleep\s+([0-9.]+)\s*$")
_EXIT = re.compile(r"^\s*exit\s+([0-9]+)\s*$")


def _steps(payload: bytes) -> list[str]:
    doc = yaml.safe_load(payload) or {}
    jobs = doc.get("jobs") or {}
    if len(jobs) != 1:
        raise ValueError(f"expected exactly one job, got {len(jobs)}")
    (job,) = jobs.values()
    return [str(step.get("run", "")) for step in job.get("steps") or []]


class SimulatedExecutor:
    """Implements :class:`scheduler.executor.Executor` without processes."""

    def __init__(self) -> None:
        self.executed: list[int] = []  # task ids, in the order they started

    async def execute(self, task: Task, log: TaskLog) -> Result:
        self.executed.append(task.id)
        scripts = _steps(task.workflow_payload)
        log.set_steps(len(scripts))
        result = Result.SUCCESS
        for i, script in enumerate(scripts):
            if result is not Result.SUCCESS:
                log.skip_step(i)
                continue
            log.start_step(i)
            step_result = Result.SUCCESS
            for line in script.splitlines():
                if m := _SLEEP.match(line):
                    await trio.sleep(float(m.group(1)))
                elif (m := _EXIT.match(line)) and m.group(1) != "0":
                    step_result = Result.FAILURE
                    break
                else:
                    log.output(line.removeprefix("echo ").strip('"'))
            log.finish_step(i, step_result)
            result = step_result
        return result
