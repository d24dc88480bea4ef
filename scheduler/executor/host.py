"""The host executor: a job of a task runs on this machine, as forgejo-runner's ``host`` label.

``HostExecutor.execute`` is the :class:`~scheduler.executor.Executor` the service
uses. It parses the payload (``workflow.py``), refuses what needs a container
(``container:``, ``services:``, a ``runs-on`` that picks a ``docker``/``lxc`` label,
docker actions) with a row saying so, and runs the job (``job.py``) in a fresh
directory per task, removed afterwards even on cancellation:

``<work_root>/<task id>/``: ``workspace/`` (``GITHUB_WORKSPACE``, the default working
directory), ``act/workflow/`` (scripts, ``event.json``, command files: forgejo-runner's
"act path"), ``tmp/`` (``RUNNER_TEMP``, ``TMPDIR``), ``actions/`` (this task's copies of
remote actions). Shared by all tasks: ``<work_root>/_actions/`` (bare repositories of
actions) and ``<work_root>/_tool_cache/`` (``RUNNER_TOOL_CACHE``).

Host mode gives jobs this service's user, its network and its files: for trusted
workflows only, as the Forgejo documentation says of forgejo-runner's host labels.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import trio

from scheduler.executor.actions import ActionCache
from scheduler.executor.contexts import (
    ExprFailure,
    backward_compatible,
    dispatch_inputs,
    github_context,
    host_env,
    needs_context,
    runner_context,
    runner_env,
)
from scheduler.executor.job import JobRunner, setup_env
from scheduler.executor.labels import Label, parse_label, why_not_runnable
from scheduler.executor.process import CommandResult, kill_group, run_command
from scheduler.executor.state import JobRun, Paths, Scope
from scheduler.executor.steps import CONTAINER_NEEDED
from scheduler.executor.workflow import Workflow, WorkflowError, parse_workflow
from scheduler.protocol import Result, Task
from scheduler.task.log import TaskLog

__all__ = ["CommandResult", "HostExecutor", "kill_group", "pick_label", "run_command"]

Labels = Sequence[str] | Mapping[str, Sequence[str]]


def pick_label(runs_on: Sequence[str], labels: Sequence[str]) -> tuple[str, str] | None:
    """The first label named in ``runs_on`` (forgejo-runner ``PickPlatform``): its text
    and scheme (``docker`` when omitted, as there). None when no label matches."""
    by_name: dict[str, Label] = {}
    for text in labels:
        label = parse_label(text)
        by_name.setdefault(label.name, label)
    for name in runs_on:
        if name in by_name:
            return by_name[name].text, by_name[name].scheme
    return None


@attrs.define
class HostExecutor:
    """Runs jobs on this host, one directory per task under ``work_root``.

    ``labels``: the runner's labels (or, per connection name, each connection's), to
    refuse tasks whose ``runs-on`` picks a ``docker``/``lxc`` label; None runs every
    task here. ``job_env``: per connection name, the variables of the config's
    ``envs``/``env_file`` that every job of that connection gets.
    """

    work_root: Path
    kill_grace: float = 10.0
    drain_timeout: float = 5.0
    cleanup_timeout: float = 120.0
    post_timeout: float = 300.0
    action_cache: Path | None = None
    tool_cache: Path | None = None
    labels: Labels | None = None
    job_env: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    _cache: ActionCache | None = attrs.field(default=None, init=False)

    @property
    def cache(self) -> ActionCache:
        if self._cache is None:
            root = self.action_cache or self.work_root / "_actions"
            self._cache = ActionCache(root, kill_grace=self.kill_grace)
        return self._cache

    async def execute(self, task: Task, log: TaskLog) -> Result:
        try:
            workflow = parse_workflow(task.workflow_payload)
        except WorkflowError as exc:
            log.log(f"Error: {exc}")
            _show_payload(task.workflow_payload, log)
            return Result.FAILURE
        job = workflow.job
        log.set_steps(len(job.steps))
        problem = _job_problem(task, workflow)
        if problem is not None:
            log.log(f"Error: {problem}")
            for step in job.steps:
                log.skip_step(step.index)
            return Result.FAILURE
        paths = Paths(self.work_root / str(task.id))
        await _remove_tree(paths.root, self.cleanup_timeout)  # left over by a crashed run
        try:
            return await self._run(task, workflow, paths, log)
        finally:
            with trio.CancelScope(shield=True):
                await _remove_tree(paths.root, self.cleanup_timeout)

    async def _run(
        self, task: Task, workflow: Workflow, paths: Paths, log: TaskLog
    ) -> Result:
        job = workflow.job
        tool_cache = self.tool_cache or self.work_root / "_tool_cache"
        _prepare(paths, task, tool_cache)
        github = github_context(
            task, workflow_name=workflow.name, job_id=job.id,
            workspace=paths.workspace, event_path=paths.event,
        )
        runner = runner_context(paths.temp, tool_cache)
        run = JobRun(
            task=task,
            workflow=workflow,
            log=log,
            paths=paths,
            cache=self.cache,
            tool_cache=tool_cache,
            github=github,
            runner=runner,
            needs=needs_context(task),
            matrix=dict(job.strategy.matrix),
            strategy={
                "fail-fast": job.strategy.fail_fast,
                "max-parallel": job.strategy.max_parallel,
            },
            dispatch_inputs=_inputs(task, workflow, github),
            default_actions_url=backward_compatible(task, "default_actions_url"),
            kill_grace=self.kill_grace,
            drain_timeout=self.drain_timeout,
        )
        scope = Scope(run, env=host_env(), secrets=dict(task.secrets))
        runner_ = JobRunner(run, scope, post_timeout=self.post_timeout)
        try:
            # forgejo-runner's order (run/runner.go NewRunner): the configured envs,
            # then its own variables over them; the whole map wins over workflow and
            # job ``env:`` (setup_env), and step ``env:`` wins over it.
            setup_env(scope, {**self.env_for(log.connection), **runner_env(task, runner)})
            run.runs_on = [scope.evaluator().interpolate(name) for name in job.runs_on]
        except ExprFailure as exc:
            log.log(f"Error: {exc}")
            runner_.skip_all()
            return Result.FAILURE
        problem = self._label_problem(run.runs_on, log.connection)
        if problem is not None:
            log.log(f"Error: {problem}")
            runner_.skip_all()
            return Result.FAILURE
        log.log(
            f"⚙ host executor: job {job.id} ({job.name}), {len(job.steps)} steps, "
            f"workspace {paths.workspace}"
        )
        if run.matrix:
            shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in run.matrix.items())
            log.log(f"🧪 Matrix: {shown}")
        return await runner_.execute()

    def env_for(self, connection: str) -> Mapping[str, str]:
        """The configured job environment of ``connection`` (``{}`` when none)."""
        return self.job_env.get(connection, {})

    def _label_problem(self, runs_on: Sequence[str], connection: str) -> str | None:
        labels = self.labels
        if isinstance(labels, Mapping):
            labels = labels.get(connection)
        if labels is None:
            return None
        picked = pick_label(runs_on, labels)
        if picked is None:
            return (
                f"runs-on {list(runs_on)} matches none of this runner's labels; forgejo-runner "
                f"would use a docker image, which {CONTAINER_NEEDED}"
            )
        label, _ = picked
        if why_not_runnable(parse_label(label)) is not None:
            return f"runs-on picks the label {label!r}, which {CONTAINER_NEEDED}"
        return None


def _job_problem(task: Task, workflow: Workflow) -> str | None:
    job = workflow.job
    if job.uses is not None:
        return (
            f"job {job.id} calls the reusable workflow {job.uses!r}; the server expands "
            "reusable workflows into jobs, this runner does not run job-level `uses:`"
        )
    if job.container:
        return f"`container:` {CONTAINER_NEEDED}"
    if job.services:
        return f"`services:` {CONTAINER_NEEDED}"
    return None


def _inputs(task: Task, workflow: Workflow, github: Mapping[str, object]) -> dict[str, object]:
    event = github.get("event")
    event = event if isinstance(event, Mapping) else {}
    name = github.get("event_name")
    if name == "workflow_dispatch":
        return dispatch_inputs(event, workflow.dispatch_inputs)
    if name == "workflow_call":
        return dispatch_inputs(event, workflow.call_inputs)
    return {}


def _prepare(paths: Paths, task: Task, tool_cache: Path) -> None:
    """Create the task's directories and ``event.json`` (small, local: done inline)."""
    for directory in (paths.workspace, paths.commands, paths.temp, paths.actions, tool_cache):
        directory.mkdir(parents=True, exist_ok=True)
    event = task.context.get("event")
    paths.event.write_text(json.dumps(event if isinstance(event, dict) else {}))


async def _remove_tree(path: Path, time_limit: float) -> None:
    """``rm -rf`` in a subprocess: a big workspace must not block the event loop.

    ``chmod -R u+w`` first, because jobs leave read-only directories behind (Go's
    module cache does), and those cannot be emptied otherwise.
    """
    if not _exists(path):
        return
    with trio.move_on_after(time_limit):
        await trio.run_process(
            ["chmod", "-R", "u+w", "--", str(path)],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        await trio.run_process(
            ["rm", "-rf", "--", str(path)],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _show_payload(payload: bytes, log: TaskLog) -> None:
    """Print the payload with line numbers, as forgejo-runner does when it cannot parse it."""
    text = payload.decode("utf-8", errors="replace")
    if not text.strip():
        return
    log.log("The workflow payload:")
    for number, line in enumerate(text.splitlines(), start=1):
        log.log(f"{number:4d}: {line}")
