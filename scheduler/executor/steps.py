"""One step, one stage (pre, main or post): forgejo-runner's ``runStepExecutor``.

For every stage of every step, in this order (``act/runner/step.go``):

1. the step's env is built: the scope's env (workflow, job and runner env, earlier
   ``GITHUB_ENV``), ``CI`` and the ``GITHUB_*``/``FORGEJO_*`` twins, then the step's
   ``env:`` (interpolated against the scope's env) and ``with:`` as ``INPUT_*``
   (interpolated against the step's env);
2. ``if:`` is evaluated (implicit ``success()``; ``post-if`` defaults to ``always()``);
   an error fails the step;
3. the command files are (re)created, the body runs under the step's
   ``timeout-minutes``; a failure is forgiven by ``continue-on-error`` (outcome
   failure, conclusion success);
4. the command files are read back, also after a failure.

Errors are rows in the step's own log (``Error: …``). ``${{ }}`` that cannot be
evaluated fails the step: forgejo-runner logs it where the UI does not show it and
goes on with an empty string.

This module is the bottom of the step layer: :func:`run_stage` runs whatever body it
is given, and the bodies here (``run:`` scripts, :func:`run_process`) need nothing
above. Choosing the body of a ``uses:`` step, and the recursion into composite
actions, is ``uses.py``'s, which imports this module and never the other way round.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from scheduler.executor.actions import Action, RemoteRef
from scheduler.executor.command_files import apply_files, prepare_files
from scheduler.executor.contexts import ExprFailure, github_env
from scheduler.executor.process import run_command
from scheduler.executor.state import Scope, StepResult
from scheduler.executor.workflow import Step

PRE, MAIN, POST = "Pre", "Main", "Post"

#: forgejo-runner's shell templates (``step_run.go``): command, script suffix, wrapper.
SHELLS: dict[str, tuple[str, str, str, str]] = {
    "bash": ("bash --noprofile --norc -e -o pipefail {0}", ".sh", "", ""),
    "sh": ("sh -e {0}", ".sh", "", ""),
    "python": ("python {0}", ".py", "", ""),
    "node": ("node {0}", ".js", "", ""),
    "pwsh": (
        "pwsh -command . '{0}'", ".ps1", "$ErrorActionPreference = 'stop'",
        "if ((Test-Path -LiteralPath variable:/LASTEXITCODE)) { exit $LASTEXITCODE }",
    ),
    "powershell": (
        "powershell -command . '{0}'", ".ps1", "$ErrorActionPreference = 'stop'",
        "if ((Test-Path -LiteralPath variable:/LASTEXITCODE)) { exit $LASTEXITCODE }",
    ),
}
_INPUT_KEY = re.compile(r"[^A-Z0-9-]")
CONTAINER_NEEDED = "needs a container executor; this runner has the host executor only"


class StepFailed(Exception):
    """The step failed; the message (if any) is logged as ``Error: <message>``."""


def input_key(name: str) -> str:
    return "INPUT_" + _INPUT_KEY.sub("_", name.upper())


def step_kind(uses: str | None) -> str:
    if uses is None:
        return "run"
    if uses.startswith("docker://"):
        return "docker"
    if uses.startswith("./"):
        return "workflow" if ".github/workflows/" in uses else "local"
    if ".github/workflows/" in uses:
        return "workflow"
    return "remote"


@attrs.define(eq=False)
class StepRun:
    """A step of a scope, with what it keeps between its stages."""

    step: Step
    scope: Scope
    env: dict[str, str] = attrs.field(factory=dict)
    action: Action | None = None
    action_dir: Path | None = None
    remote: RemoteRef | None = None
    #: The composite action's own scope and steps, once built (``uses.py`` builds it).
    composite: Composite | None = None

    @property
    def kind(self) -> str:
        return step_kind(self.step.uses)

    def github(self) -> dict[str, object]:
        if self.remote is not None:
            github = self.scope.github(self.remote.repository, self.remote.ref)
        else:
            github = self.scope.github()
        if self.action_dir is not None and self.action is not None:
            github["action_path"] = str(self.action_dir)
        return github


@attrs.define(eq=False)
class Composite:
    """A composite action's own scope and steps, kept by the step that uses it."""

    scope: Scope
    children: list[StepRun]


def setup_env(sr: StepRun) -> dict[str, str]:
    """The step's env for one stage (``setupEnv``/``mergeEnv``); ExprFailure on a bad value."""
    scope, step = sr.scope, sr.step
    env = scope.get_env()
    env.update(github_env(sr.github(), scope.run.runs_on))
    if step.uses is not None:
        env = {k: v for k, v in env.items() if not k.startswith("INPUT_")}
    outer = scope.evaluator()
    for key, value in step.env.items():
        if not key or "=" in key or "\0" in key:
            raise StepFailed(f"env: invalid variable name {key!r}")
        env[key] = outer.interpolate(value)
    # ``with:`` sees the step's env; ``inputs`` are still the scope's (a composite's own).
    inner = scope.evaluator(env, github=sr.github(), inputs_env=scope.get_env())
    for key, value in step.with_.items():
        env[input_key(key)] = inner.interpolate(value)
    for key, value in env.items():
        if "\0" in value:
            raise StepFailed(f"env {key} contains a NUL character")
    return env


def timeout_seconds(value: str | float | None, evaluate: Callable[[str], str]) -> float:
    """``timeout-minutes`` in seconds (inf when absent). Fractions are accepted."""
    if value is None:
        return math.inf
    if isinstance(value, str):
        text = evaluate(value).strip()
        if not text:
            return math.inf
        try:
            value = float(text)
        except ValueError:
            raise StepFailed(f"timeout-minutes is not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise StepFailed(f"timeout-minutes must be a positive number, not {value:g}")
    return value * 60.0


def shown_minutes(value: str | float | None) -> str:
    """``timeout-minutes`` as the workflow wrote it (``5``, not ``5.0``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


Body = Callable[[StepRun], Awaitable[None]]


async def run_stage(
    sr: StepRun,
    stage: str,
    body: Body,
    *,
    condition: str | None = None,
    on_start: Callable[[], None] | None = None,
) -> StepResult:
    """Run one stage of ``sr``; its result (a skipped stage: ``skipped``).

    ``on_start`` is called once the stage is known to run (or to fail before running),
    before its first row. ``trio.Cancelled`` from outside propagates.
    """
    scope, step = sr.scope, sr.step
    log = scope.run.log.log
    scope.current_step = step.id
    result = StepResult()
    if stage == MAIN:
        scope.step_results[step.id] = result
        condition = step.condition
    started = False

    def start() -> None:
        nonlocal started
        if not started:
            started = True
            if on_start is not None:
                on_start()

    def fail(message: str) -> StepResult:
        start()
        if message:
            log(f"Error: {message}")
        result.outcome = result.conclusion = "failure"
        return result

    try:
        sr.env = setup_env(sr)
        inputs_env = scope.get_env() if stage == MAIN else sr.env
        evaluator = scope.evaluator(sr.env, github=sr.github(), inputs_env=inputs_env)
        enabled = evaluator.condition(condition, "always" if stage == POST else "success")
    except (ExprFailure, StepFailed) as exc:
        return fail(str(exc))
    if not enabled:
        result.outcome = result.conclusion = "skipped"
        return result
    start()
    sr.env.update(prepare_files(scope.run.paths.commands))
    error: str | None = None
    try:
        deadline = timeout_seconds(step.timeout_minutes, scope.evaluator().interpolate)
    except (ExprFailure, StepFailed) as exc:
        return fail(str(exc))
    with trio.move_on_after(deadline) as timer:
        try:
            await body(sr)
        except (StepFailed, ExprFailure) as exc:
            error = str(exc)
    if timer.cancelled_caught:
        error = (
            f"the step exceeded its timeout-minutes ({shown_minutes(step.timeout_minutes)}) "
            "and was stopped"
        )
    for problem in apply_files(scope.run.paths.commands, scope):
        log(f"Error: {problem}")
        error = error if error is not None else ""
    if error is not None:
        if error:
            log(f"Error: {error}")
        result.outcome = "failure"
        result.conclusion = "failure"
        if continue_on_error(sr, log):
            log("Failed to execute step (but continue-on-error is true), the job goes on")
            result.conclusion = "success"
    return result


def continue_on_error(sr: StepRun, log: Callable[[str], None]) -> bool:
    value = sr.step.continue_on_error
    if isinstance(value, bool):
        return value
    if not value.strip():
        return False
    try:
        evaluator = sr.scope.evaluator(sr.env, github=sr.github())
        return evaluator.condition(value, None, "continue-on-error")
    except ExprFailure as exc:
        log(f"Error: {exc}")
        return False


# --- bodies -------------------------------------------------------------------------------


async def run_process(sr: StepRun, argv: list[str], *, cwd: Path | None = None) -> None:
    """Run ``argv`` for the step, commands in its output applied; StepFailed unless exit 0."""
    scope, run = sr.scope, sr.scope.run
    env = dict(sr.env)
    scope.apply_path(env)
    commands = run.log.commands(scope)
    try:
        done = await run_command(
            argv, cwd=cwd or run.paths.workspace, env=env, on_line=commands.line,
            kill_grace=run.kill_grace, drain_timeout=run.drain_timeout,
        )
    except FileNotFoundError:
        raise StepFailed(f"{argv[0]}: command not found") from None
    except OSError as exc:
        raise StepFailed(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    code = done.returncode
    if code is not None and code < 0:
        raise StepFailed(f"the process was killed by signal {-code}")
    if code != 0:
        raise StepFailed(f"Process completed with exit code {code}.")


def _shell(sr: StepRun) -> str:
    scope = sr.scope
    top = scope.parent is None
    job, workflow = scope.run.workflow.job, scope.run.workflow
    shell = sr.step.shell or (job.defaults.shell if top else None) or ""
    shell = scope.evaluator().interpolate(shell)
    if not shell and top:
        shell = workflow.defaults.shell or ""
    if not shell:
        env = dict(sr.env)
        scope.apply_path(env)
        shell = "bash" if shutil.which("bash", path=env.get("PATH")) else "sh"
    return shell


def _working_directory(sr: StepRun) -> Path:
    scope = sr.scope
    top = scope.parent is None
    job, workflow = scope.run.workflow.job, scope.run.workflow
    directory = sr.step.working_directory or (job.defaults.working_directory if top else None)
    directory = scope.evaluator().interpolate(directory or "")
    if not directory and top:
        directory = workflow.defaults.working_directory or ""
    workspace = scope.run.paths.workspace
    cwd = workspace / directory if directory else workspace
    if not cwd.is_dir():
        raise StepFailed(f"working-directory {directory!r} does not exist")
    return cwd


async def run_script(sr: StepRun) -> None:
    """A ``run:`` step: the script in a file, run by its shell's template."""
    scope = sr.scope
    shell = _shell(sr)
    template, suffix, prepend, append = SHELLS.get(shell, (shell, "", "", ""))
    if "{0}" not in template:
        raise StepFailed(f"shell {shell!r} is neither a known shell nor a template with {{0}}")
    script = scope.evaluator(sr.env, github=sr.github()).interpolate(sr.step.run or "")
    cwd = _working_directory(sr)
    path = scope.run.paths.commands / f"{scope.script_name(sr.step.id)}{suffix}"
    path.write_text(f"{prepend}\n{script}\n{append}", encoding="utf-8")
    path.chmod(0o755)
    try:
        argv = shlex.split(template.replace("{0}", str(path), 1))
    except ValueError as exc:
        raise StepFailed(f"shell {shell!r}: {exc}") from None
    await run_process(sr, argv, cwd=cwd)


def stage_header(sr: StepRun, stage: str) -> Callable[[], None]:
    """Logs ``⭐ Run Pre <step>`` (or Post): pre rows land in "Set up job", post rows in
    "Complete job", where forgejo-runner shows the same header."""

    def header() -> None:
        title = sr.step.title
        try:
            title = sr.scope.evaluator().interpolate(title)
        except ExprFailure:
            pass
        if "::add-mask::" in title:
            title = "add-mask command"
        first = (title.strip().splitlines() or [sr.step.id])[0]
        sr.scope.run.log.log(f"⭐ Run {stage} {first}")

    return header
