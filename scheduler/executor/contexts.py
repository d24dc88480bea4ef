"""What expressions and processes of a job see: contexts, fixed variables, the engine seam.

forgejo-runner builds the ``github`` context from a handful of ``task.context`` keys
plus values of its own (``act/runner/run_context.go`` ``getGithubContext``), and
exports most of it twice, as ``GITHUB_X`` and ``FORGEJO_X`` (``withGithubEnv``).
This module computes those pieces once per task; ``state.py`` adds what changes per
step (``steps``, ``job.status``, ``env``, the current action).

The expression language itself is ``scheduler.executor.expressions``; :class:`Evaluator`
binds it to one step's contexts and turns its errors into log lines.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from scheduler import __version__
from scheduler.executor.expr.evaluator import DefaultCheck
from scheduler.executor.expressions import (
    ExpressionError,
    StatusContext,
    evaluate_if,
    interpolate,
)
from scheduler.protocol import Task

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Variables of the runner's own environment a step sees (everything else is left out:
#: forgejo-runner passes its whole environment, which leaks the service's settings).
PASSED_THROUGH = (
    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME",
    # how this host reaches the network: jobs (actions/checkout…) need the same
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR",
)

#: ``task.context`` keys forgejo-runner copies into the ``github`` context (``runner.go``).
PRESET_KEYS = (
    "run_id", "run_number", "run_attempt", "actor", "repository", "event_name", "sha",
    "ref", "ref_name", "ref_type", "head_ref", "base_ref", "repository_owner",
    "retention_days", "workflow_ref",
)
#: Keys forgejo-runner leaves out but GitHub has; harmless and useful, so passed on.
EXTRA_KEYS = ("repository_id", "actor_id", "repository_owner_id", "triggering_actor")

#: ``github`` keys exported as ``GITHUB_<KEY>``/``FORGEJO_<KEY>`` (``withGithubEnv``).
TWIN_KEYS = (
    "workflow", "run_attempt", "run_id", "run_number", "action", "action_path",
    "action_repository", "action_ref", "actor", "repository", "event_name", "event_path",
    "workspace", "sha", "ref", "ref_name", "ref_type", "token", "job", "repository_owner",
    "retention_days", "base_ref", "head_ref", "server_url", "api_url", "workflow_ref",
)


class ExprFailure(Exception):
    """An expression could not be evaluated; the message is the log line."""


@attrs.frozen
class Evaluator:
    """Expressions against one fixed set of contexts and job status."""

    contexts: Mapping[str, Any]
    job_status: str = "success"
    cancelled: bool = False
    hash_files: Callable[[Sequence[str]], str] | None = None

    @property
    def _status(self) -> StatusContext:
        return StatusContext(job_status=self.job_status, cancelled=self.cancelled)

    def interpolate(self, text: str) -> str:
        """``text`` with every ``${{ }}`` replaced by its value as a string."""
        if "${{" not in text or "}}" not in text:
            return text
        try:
            return interpolate(
                text, self.contexts, status=self._status, hash_files=self.hash_files
            )
        except ExpressionError as exc:
            raise ExprFailure(f"cannot evaluate {text.strip()!r}: {exc}") from None

    def condition(
        self, condition: str | None, default: DefaultCheck = "success", what: str = "if"
    ) -> bool:
        """An ``if:`` with forgejo-runner's implicit status check: ``success()`` for job,
        step and ``pre-if`` conditions, ``always()`` for ``post-if``, none (``None``) for
        ``continue-on-error``; it applies unless the condition calls a status function."""
        try:
            return evaluate_if(
                condition, self.contexts, status=self._status, hash_files=self.hash_files,
                default=default,
            )
        except ExpressionError as exc:
            raise ExprFailure(
                f'Error in {what}-expression: "{what}: {condition}" ({exc})'
            ) from None


def context_str(value: Any) -> str:
    """A ``task.context`` value as forgejo-runner reads it (``GetStringValue``), but
    numbers kept readable: the simulator and old servers send some ids as numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    return ""


def task_token(task: Task) -> str:
    """``secrets.FORGEJO_TOKEN`` > ``GITEA_TOKEN`` > ``GITHUB_TOKEN`` > ``context.token``."""
    for name in ("FORGEJO_TOKEN", "GITEA_TOKEN", "GITHUB_TOKEN"):
        if task.secrets.get(name):
            return task.secrets[name]
    return context_str(task.context.get("token"))


def backward_compatible(task: Task, suffix: str) -> str:
    """``forgejo_<suffix>`` or else ``gitea_<suffix>`` (forgejo-runner ``backward.go``)."""
    for prefix in ("forgejo_", "gitea_"):
        value = context_str(task.context.get(prefix + suffix))
        if value:
            return value
    return ""


def server_url(task: Task) -> str:
    """The Forgejo address. forgejo-runner uses the one it talks to; the executor does not
    know the connection, so it takes the server's own ``server_url`` from the task."""
    return context_str(task.context.get("server_url")).rstrip("/")


def github_context(
    task: Task, *, workflow_name: str, job_id: str, workspace: Path, event_path: Path
) -> dict[str, Any]:
    """The job's ``github`` context before any step (``action*`` are set per step)."""
    ctx = task.context
    event = ctx.get("event")
    github: dict[str, Any] = {key: context_str(ctx.get(key)) for key in PRESET_KEYS}
    github.update({key: context_str(ctx.get(key)) for key in EXTRA_KEYS if key in ctx})
    for key, default in (("run_attempt", "1"), ("run_id", "1"), ("run_number", "1"),
                         ("retention_days", "0")):
        github[key] = github[key] or default
    url = server_url(task)
    github.update(
        event=dict(event) if isinstance(event, Mapping) else {},
        event_path=str(event_path),
        workflow=workflow_name or context_str(ctx.get("workflow")),
        job=job_id,
        workspace=str(workspace),
        token=task_token(task),
        server_url=url,
        api_url=f"{url}/api/v1",
        graphql_url="",
        action="",
        action_path="",
        action_repository="",
        action_ref="",
        runner_perflog="/dev/null",
        runner_tracking_id="",
    )
    return github


def github_env(github: Mapping[str, Any], runs_on: Sequence[str]) -> dict[str, str]:
    """``CI``, the ``GITHUB_*``/``FORGEJO_*`` twins and ``ImageOS`` (``withGithubEnv``)."""
    env = {"CI": "true"}
    for key in TWIN_KEYS:
        value = context_str(github.get(key))
        env[f"GITHUB_{key.upper()}"] = env[f"FORGEJO_{key.upper()}"] = value
    env["GITHUB_ACTIONS"] = env["FORGEJO_ACTIONS"] = "true"
    env["RUNNER_PERFLOG"] = context_str(github.get("runner_perflog"))
    env["RUNNER_TRACKING_ID"] = context_str(github.get("runner_tracking_id"))
    for name in runs_on:
        if name == "ubuntu-latest":
            env["ImageOS"] = "ubuntu20"
        elif name:
            env["ImageOS"] = name.replace("-", "", 1).split(".", 1)[0]
    return env


def runner_context(temp: Path, tool_cache: Path) -> dict[str, Any]:
    system = platform.system()
    return {
        "os": {"Darwin": "macOS"}.get(system, system),
        "arch": runner_arch(),
        "temp": str(temp),
        "tool_cache": str(tool_cache),
    }


def runner_arch() -> str:
    machine = platform.machine().lower()
    return {
        "x86_64": "X64", "amd64": "X64", "aarch64": "ARM64", "arm64": "ARM64",
        "i386": "X86", "i686": "X86", "armv7l": "ARM",
    }.get(machine, machine.upper())


def runner_env(task: Task, runner: Mapping[str, Any]) -> dict[str, str]:
    """What forgejo-runner adds at runner level (``NewRunner``, ``run``, host env)."""
    url = server_url(task)
    runtime_token = backward_compatible(task, "runtime_token") or task_token(task)
    env = {
        "GITHUB_SERVER_URL": url,
        "ACTIONS_RUNTIME_URL": f"{url}/api/actions_pipeline/",
        "ACTIONS_RESULTS_URL": url,
        "ACTIONS_RUNTIME_TOKEN": runtime_token,
        "GITEA_ACTIONS": "true",
        "FORGEJO_ACTIONS": "true",
        "GITEA_ACTIONS_RUNNER_VERSION": __version__,
        "FORGEJO_ACTIONS_RUNNER_VERSION": __version__,
    }
    for key, value in runner.items():
        env[f"RUNNER_{key.upper()}"] = str(value)
    env["TMPDIR"] = str(runner["temp"])
    return env


def host_env() -> dict[str, str]:
    """The few variables of the service's own environment that jobs get (underneath)."""
    env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def needs_context(task: Task) -> dict[str, Any]:
    """``needs.<id>.outputs/result`` from the task's needs (forgejo-runner's placeholders)."""
    return {
        job_id: {
            "outputs": dict(need.outputs),
            "result": need.result.name.lower().removeprefix("result_"),
        }
        for job_id, need in sorted(task.needs.items())
    }


def needs_status(needs: Mapping[str, Any]) -> str:
    """``job.status`` for job-level status functions: failure if a need failed, success if
    all succeeded, else neither (a need skipped or cancelled)."""
    results = [n["result"] for n in needs.values()]
    if "failure" in results:
        return "failure"
    if all(r == "success" for r in results):
        return "success"
    return "skipped"


def dispatch_inputs(
    event: Mapping[str, Any], definitions: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """``inputs`` of a ``workflow_dispatch``/``workflow_call`` run, typed by the definitions."""
    given = event.get("inputs")
    given = given if isinstance(given, Mapping) else {}
    inputs: dict[str, Any] = {}
    for name, definition in definitions.items():
        value = given.get(name)
        if value is None:
            value = definition.get("default")
        if definition.get("type") == "boolean":
            inputs[name] = value is True or str(value).lower() == "true"
        else:
            inputs[name] = value
    return inputs
