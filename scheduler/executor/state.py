"""The state of a running job: per task (:class:`JobRun`) and per step list (:class:`Scope`).

A :class:`Scope` is forgejo-runner's ``RunContext``: the job has one, and every
composite action runs its steps in a child scope of its own, with its own ``steps``
context, ``job.status`` (only the composite's steps count), ``inputs`` and no
``secrets``. Variables set with ``GITHUB_ENV`` inside a composite propagate to the
job when it ends, and so does ``GITHUB_PATH`` (``action_composite.go``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from scheduler.executor.actions import ActionCache
from scheduler.executor.contexts import DEFAULT_PATH, Evaluator
from scheduler.executor.hashfiles import hash_files
from scheduler.executor.workflow import Workflow
from scheduler.protocol import Task
from scheduler.task.log import TaskLog

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@attrs.define
class StepResult:
    """``steps.<id>``: exists from the moment the step's main stage starts."""

    outcome: str = "success"
    conclusion: str = "success"
    outputs: dict[str, str] = attrs.field(factory=dict)

    def context(self) -> dict[str, Any]:
        return {
            "outputs": dict(self.outputs),
            "outcome": self.outcome,
            "conclusion": self.conclusion,
        }


@attrs.frozen
class Paths:
    """A task's directory. ``act/`` is forgejo-runner's "act path" (scripts, files)."""

    root: Path

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def act(self) -> Path:
        return self.root / "act"

    @property
    def commands(self) -> Path:
        """Scripts, ``event.json`` and the command files (``<act path>/workflow``)."""
        return self.act / "workflow"

    @property
    def event(self) -> Path:
        return self.commands / "event.json"

    @property
    def temp(self) -> Path:
        return self.root / "tmp"

    @property
    def actions(self) -> Path:
        return self.root / "actions"


@attrs.define(eq=False)
class JobRun:
    """Everything about one task that does not change from step to step."""

    task: Task
    workflow: Workflow
    log: TaskLog
    paths: Paths
    cache: ActionCache
    tool_cache: Path
    github: dict[str, Any]
    runner: dict[str, Any]
    needs: dict[str, Any]
    matrix: dict[str, Any]
    strategy: dict[str, Any]
    dispatch_inputs: dict[str, Any]
    default_actions_url: str
    kill_grace: float
    drain_timeout: float
    runs_on: list[str] = attrs.field(factory=list)
    #: Set once the job is being stopped (server cancel, shutdown): ``cancelled()``.
    cancelled: bool = False
    #: (clone URL, ref) -> (directory, commit) of the actions this task checked out.
    checkouts: dict[tuple[str, str], tuple[Path, str]] = attrs.field(factory=dict)

    def hash_files(self, args: Sequence[str]) -> str:
        """``hashFiles()`` over this task's workspace (errors: ValueError, OSError)."""
        return hash_files(self.paths.workspace, args)

    def checkout_dir(self, name: str) -> Path:
        """A new directory under ``actions/`` for one checked-out action."""
        base = _UNSAFE.sub("-", name)[:80] or "action"
        n = len(self.checkouts)
        return self.paths.actions / f"{n}-{base}"


@attrs.define(eq=False)
class Scope:
    """One list of steps being run: the job's, or a composite action's."""

    run: JobRun
    env: dict[str, str]
    secrets: Mapping[str, str]
    global_env: dict[str, str] = attrs.field(factory=dict)
    extra_path: list[str] = attrs.field(factory=list)
    step_results: dict[str, StepResult] = attrs.field(factory=dict)
    states: dict[str, dict[str, str]] = attrs.field(factory=dict)
    action_path: str = ""
    parent: Scope | None = None
    current_step: str = ""

    def job_status(self) -> str:
        """``job.status``: failure once a step of this scope concluded with failure."""
        if any(r.conclusion == "failure" for r in self.step_results.values()):
            return "failure"
        return "success"

    def get_env(self) -> dict[str, str]:
        """The scope's env (forgejo-runner ``GetEnv``: ``ACT=true`` always)."""
        env = dict(self.env)
        env["ACT"] = "true"
        return env

    # --- commands (``commands.CommandSink``) -------------------------------------------

    def set_env(self, name: str, value: str) -> None:
        if name:
            self.env[name] = value
            self.global_env[name] = value

    def set_output(self, name: str, value: str) -> None:
        result = self.step_results.get(self.current_step)
        if result is not None and name:
            result.outputs[name] = value

    def add_path(self, path: str) -> None:
        self.extra_path = [path] + [p for p in self.extra_path if p != path]

    def save_state(self, name: str, value: str) -> None:
        if self.current_step:
            self.states.setdefault(self.current_step, {})[name] = value

    # --- what a process or an expression sees ------------------------------------------

    def apply_path(self, env: dict[str, str]) -> None:
        """Prepend the ``GITHUB_PATH`` entries to ``PATH``."""
        if self.extra_path:
            env["PATH"] = ":".join([*self.extra_path, env.get("PATH") or DEFAULT_PATH])

    def script_name(self, step_id: str) -> str:
        """``<step id>``, or ``<outer>-composite-<id>`` inside composite actions."""
        name = step_id
        scope = self
        while scope.parent is not None:
            name = f"{scope.parent.current_step}-composite-{name}"
            scope = scope.parent
        return _UNSAFE.sub("_", name)

    def github(self, repository: str | None = None, ref: str | None = None) -> dict[str, Any]:
        github = dict(self.run.github)
        github.update(
            action=self.current_step,
            action_path=self.action_path,
            action_repository=(
                repository if repository is not None
                else self.env.get("GITHUB_ACTION_REPOSITORY", "")
            ),
            action_ref=ref if ref is not None else self.env.get("GITHUB_ACTION_REF", ""),
        )
        return github

    def evaluator(
        self,
        env: Mapping[str, str] | None = None,
        *,
        github: Mapping[str, Any] | None = None,
        inputs_env: Mapping[str, str] | None = None,
        job_status: str | None = None,
    ) -> Evaluator:
        """Expressions as a step of this scope sees them; ``env`` defaults to the scope's."""
        run = self.run
        env = self.get_env() if env is None else env
        inputs_env = env if inputs_env is None else inputs_env
        inputs: dict[str, Any] = {
            key[len("INPUT_"):].lower(): value
            for key, value in inputs_env.items() if key.startswith("INPUT_")
        }
        if self.parent is None:
            inputs.update(run.dispatch_inputs)
        gh = dict(github) if github is not None else self.github()
        contexts = {
            "github": gh, "gitea": gh, "forge": gh, "forgejo": gh,
            "env": dict(env),
            "vars": dict(run.task.vars),
            "secrets": dict(self.secrets),
            "needs": run.needs,
            "matrix": run.matrix,
            "strategy": run.strategy,
            "job": {
                "status": self.job_status(),
                "container": {"id": "", "network": ""},
                "services": {},
            },
            "steps": {k: r.context() for k, r in self.step_results.items()},
            "runner": run.runner,
            "inputs": inputs,
        }
        return Evaluator(
            contexts,
            job_status=job_status if job_status is not None else self.job_status(),
            cancelled=run.cancelled,
            hash_files=run.hash_files,
        )
