"""One job from ``if:`` to outputs: forgejo-runner's ``newJobExecutor``.

Order (``act/runner/job_executor.go``, executor.md §1.8):

1. the job's env (workflow ``env:`` then job ``env:``, interpolated) and ``if:``
   (implicit ``success()``: every need succeeded). False: every step SKIPPED, the job
   SKIPPED;
2. under the job's ``timeout-minutes``: the pre stage (remote actions are fetched,
   ``runs.pre`` of actions run), its rows land in "Set up job"; a failure there fails
   the job before any main step;
3. the main stage, step by step. A failed step does not stop the loop: later steps
   are skipped by their implicit ``success()``. A job timeout stops the running step
   (FAILURE) and no later step runs (CANCELLED), not even ``if: always()`` ones;
4. the post stage, in reverse order, for steps whose main stage ran; its rows land in
   "Complete job". After a cancellation from outside (server, shutdown) the post
   stage still runs, shielded and bounded by ``post_timeout``;
5. the job's ``outputs:``, interpolated and sent only when the job succeeded.
"""

from __future__ import annotations

import math

import attrs
import trio

from scheduler.executor.contexts import ExprFailure, needs_status
from scheduler.executor.state import JobRun, Scope
from scheduler.executor.steps import (
    MAIN,
    PRE,
    StepFailed,
    StepRun,
    run_stage,
    shown_minutes,
    timeout_seconds,
)
from scheduler.executor.uses import (
    has_stage,
    prepare,
    run_action_stage,
    run_main,
    run_post_stages,
)
from scheduler.protocol import Result

OUTCOMES = {"success": Result.SUCCESS, "failure": Result.FAILURE, "skipped": Result.SKIPPED}


def setup_env(scope: Scope, runner_env: dict[str, str]) -> None:
    """Workflow ``env:``, then job ``env:``, each interpolated; runner-level values win
    (forgejo-runner ``GetEnv``: ``mergeMaps(workflow, job, runner)``)."""
    workflow = scope.run.workflow
    scope.env.update(workflow.env)
    scope.env.update(workflow.job.env)
    scope.env.update(runner_env)
    for layer in (workflow.env, workflow.job.env):
        evaluator = scope.evaluator()
        for key, value in layer.items():
            if key in runner_env or (layer is workflow.env and key in workflow.job.env):
                continue
            scope.env[key] = evaluator.interpolate(value)


@attrs.define(eq=False)
class JobRunner:
    run: JobRun
    scope: Scope
    post_timeout: float = 300.0
    steps: list[StepRun] = attrs.field(init=False)
    open_index: int | None = attrs.field(default=None, init=False)
    failed: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self.steps = [StepRun(step, self.scope) for step in self.run.workflow.job.steps]

    def skip_all(self) -> None:
        for index in range(len(self.steps)):
            if not self.run.log.steps[index].result.is_final:
                self.run.log.skip_step(index)

    def enabled(self) -> bool | None:
        """The job's ``if:``; None (after a row saying why) if it cannot be evaluated."""
        job = self.run.workflow.job
        try:
            status = needs_status(self.run.needs)
            return self.scope.evaluator(job_status=status).condition(job.condition)
        except ExprFailure as exc:
            self.run.log.log(f"Error: {exc}")
            return None

    async def execute(self) -> Result:
        task_log = self.run.log
        job = self.run.workflow.job
        enabled = self.enabled()
        if not enabled:
            if enabled is False:
                task_log.log(f"Skipping job '{job.name}' due to '{job.condition or 'success()'}'")
            self.skip_all()
            return Result.SKIPPED if enabled is False else Result.FAILURE
        try:
            limit = timeout_seconds(job.timeout_minutes, self.scope.evaluator().interpolate)
        except (ExprFailure, StepFailed) as exc:
            task_log.log(f"Error: the job's {exc}")
            self.skip_all()
            return Result.FAILURE
        try:
            with trio.move_on_after(limit) as timer:
                await self._pre_and_main()
        except BaseException:
            # trio.Cancelled, possibly inside an exception group from a nursery.
            if trio.current_effective_deadline() != -math.inf:
                raise  # not a cancellation: a bug; run_task reports it
            self.run.cancelled = True
            self._stop(Result.CANCELLED, None)
            with trio.CancelScope(shield=True) as shield:
                shield.deadline = trio.current_time() + self.post_timeout
                await self._post()
            raise
        if timer.cancelled_caught:
            self.failed = True
            minutes = shown_minutes(job.timeout_minutes)
            self._stop(
                Result.FAILURE,
                f"Error: the job exceeded its timeout-minutes ({minutes}) and was stopped",
            )
        with trio.move_on_after(self.post_timeout):
            await self._post()
        if self.failed:
            return Result.FAILURE
        self._outputs()
        return Result.SUCCESS

    async def _pre_and_main(self) -> None:
        task_log = self.run.log
        for sr in self.steps:
            try:
                await prepare(sr)
            except StepFailed as exc:
                task_log.log(f"Error: {exc}")
                self.failed = True
                break
            if has_stage(sr, PRE):
                result = await run_action_stage(sr, PRE)
                if result.conclusion == "failure":
                    self.failed = True
                    break
        if self.failed:
            self.skip_all()
            return
        for index, sr in enumerate(self.steps):

            def on_start(index: int = index) -> None:
                task_log.start_step(index)
                self.open_index = index

            result = await run_stage(sr, MAIN, run_main, on_start=on_start)
            if self.open_index == index:
                self.open_index = None
                task_log.finish_step(index, OUTCOMES[result.outcome])
            else:
                task_log.skip_step(index)
            if result.conclusion == "failure":
                self.failed = True

    def _stop(self, result: Result, line: str | None) -> None:
        """The running step ends with ``result``; steps that did not run are CANCELLED."""
        task_log = self.run.log
        if self.open_index is not None:
            if line is not None:
                task_log.log(line)
            task_log.finish_step(self.open_index, result)
            self.open_index = None
        elif line is not None:
            task_log.log(line)
        for index, state in enumerate(task_log.steps):
            if not state.result.is_final:
                task_log.finish_step(index, Result.CANCELLED)

    async def _post(self) -> None:
        if await run_post_stages(self.steps, self.scope):
            self.failed = True

    def _outputs(self) -> None:
        task_log = self.run.log
        outputs = self.run.workflow.job.outputs
        if not outputs:
            return
        evaluator = self.scope.evaluator()
        for key, value in outputs.items():
            try:
                text = evaluator.interpolate(value)
            except ExprFailure as exc:
                task_log.log(f"Error: job output {key}: {exc}")
                continue
            task_log.set_output(key, text)
