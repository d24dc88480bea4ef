"""The minimal executor: ``run:`` steps as shell scripts on this host.

Deliberately small (a later issue brings the full executor, executor.md §8.1): no
expressions, no actions, no containers. Whatever it cannot do makes the step fail
with a line saying so, instead of running something else than what was written.

Each task gets ``<work_root>/<task id>/`` (``workspace/``, ``tmp/``, ``scripts/``,
``event.json``), removed afterwards even on cancellation. Each step is a script run
by ``bash --noprofile --norc -e -o pipefail`` in its own process group, so the whole
group can be signalled: on cancel or timeout TERM, then KILL after a grace period;
after a normal exit KILL, so a ``cmd &`` left behind cannot keep the output pipe
open (python-stack.md §6). Output is read from one pipe (stdout and stderr merged),
line by line, and goes to the reporter as it arrives.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from scheduler.executor.workflow import Job, Step, Workflow, WorkflowError, parse_workflow
from scheduler.protocol import Result, Task
from scheduler.report import TaskReporter

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Shells a step may name (``shell:``), as forgejo-runner's templates (executor.md §7).
SHELLS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "bash": (("bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "{0}"), ".sh"),
    "sh": (("sh", "-e", "{0}"), ".sh"),
    "python": (("python", "{0}"), ".py"),
    "node": (("node", "{0}"), ".js"),
}

#: ``task.context`` keys exported as ``GITHUB_<KEY>`` and ``FORGEJO_<KEY>``.
CONTEXT_ENV = (
    "run_id", "run_number", "run_attempt", "actor", "repository", "repository_owner",
    "event_name", "sha", "ref", "ref_name", "ref_type", "head_ref", "base_ref",
    "retention_days", "workflow_ref", "server_url", "api_url",
)

#: Variables of the runner's own environment a step sees (everything else is left out).
PASSED_THROUGH = ("LANG", "LC_ALL", "TZ", "USER", "LOGNAME")

#: A line longer than this without a newline is passed on in pieces.
MAX_LINE_BYTES = 1024 * 1024

NEEDS_FULL = "needs the full executor, not available yet"


class Unsupported(Exception):
    """A feature this executor does not have; the message is the log line."""


@attrs.frozen
class CommandResult:
    returncode: int | None
    timed_out: bool


async def kill_group(proc: trio.Process, grace: float) -> None:
    """TERM the process group, KILL it if the leader is still there after ``grace``."""
    _killpg(proc.pid, signal.SIGTERM)
    with trio.move_on_after(grace):
        await proc.wait()
        return
    _killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def run_command(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    on_line: Callable[[str], None],
    time_limit: float | None = None,
    kill_grace: float = 10.0,
    drain_timeout: float = 5.0,
) -> CommandResult:
    """Run ``argv`` in a new process group, passing each output line to ``on_line``.

    Returns when the process has exited and its output is read. After ``time_limit`` the
    group is stopped (TERM, then KILL after ``kill_grace``) and ``timed_out`` is set.
    When cancelled from outside, the group is stopped the same way before
    ``trio.Cancelled`` propagates. The reader is not in the cancelled scope, so the
    tail of the output is kept; it gets ``drain_timeout`` after the group is gone,
    because a process that escaped the group (``setsid``) may still hold the pipe.
    """
    reader_done = trio.Event()
    start_error: OSError | None = None
    result = CommandResult(returncode=None, timed_out=False)
    async with trio.open_nursery() as nursery:
        try:
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    check=False,
                    cwd=cwd,
                    env=dict(env),
                    process_group=0,
                    deliver_cancel=partial(kill_group, grace=kill_grace),
                )
            )
        except OSError as exc:
            # Kept for after the nursery, so the caller gets a plain OSError, not a group.
            start_error = exc
        else:
            assert proc.stdout is not None
            nursery.start_soon(_read_lines, proc.stdout, on_line, reader_done)
            try:
                with trio.move_on_after(math.inf if time_limit is None else time_limit) as scope:
                    await proc.wait()
            finally:
                with trio.CancelScope(shield=True):
                    if proc.returncode is None:
                        await kill_group(proc, kill_grace)
                    # Whatever the step left running in its group goes too (GitHub does so).
                    _killpg(proc.pid, signal.SIGKILL)
                    with trio.move_on_after(drain_timeout):
                        await reader_done.wait()
                nursery.cancel_scope.cancel()
            result = CommandResult(returncode=proc.returncode, timed_out=scope.cancelled_caught)
    if start_error is not None:
        raise start_error
    return result


async def _read_lines(
    stream: trio.abc.ReceiveStream, on_line: Callable[[str], None], done: trio.Event
) -> None:
    buffer = bytearray()
    try:
        async with stream:
            async for chunk in stream:
                buffer += chunk
                start = 0
                while (end := buffer.find(b"\n", start)) >= 0:
                    on_line(_decode(buffer[start:end]))
                    start = end + 1
                del buffer[:start]
                while len(buffer) > MAX_LINE_BYTES:
                    cut = MAX_LINE_BYTES
                    while cut > 0 and (buffer[cut] & 0xC0) == 0x80:
                        cut -= 1
                    on_line(_decode(buffer[:cut]))
                    del buffer[:cut]
            if buffer:
                on_line(_decode(buffer))  # a last line without a newline
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass
    finally:
        done.set()


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace").rstrip("\r")


# --- the executor ---------------------------------------------------------------------


@attrs.define
class _Paths:
    root: Path
    workspace: Path
    temp: Path
    scripts: Path
    event: Path


@attrs.define
class HostExecutor:
    """Runs ``run:`` steps with bash on this host, one workspace per task under ``work_root``."""

    work_root: Path
    kill_grace: float = 10.0
    drain_timeout: float = 5.0
    cleanup_timeout: float = 120.0

    async def execute(self, task: Task, reporter: TaskReporter) -> Result:
        try:
            workflow = parse_workflow(task.workflow_payload)
        except WorkflowError as exc:
            reporter.log(f"Error: {exc}")
            _show_payload(task.workflow_payload, reporter)
            return Result.FAILURE
        job = workflow.job
        reporter.set_steps(len(job.steps))
        reporter.log(f"job {job.id} ({job.name}): {len(job.steps)} steps, host executor")
        problem = _job_problem(job)
        if problem is not None:
            reporter.log(f"Error: {problem}")
            for step in job.steps:
                reporter.skip_step(step.index)
            return Result.FAILURE
        try:
            job_timeout = _minutes(job.timeout_minutes, "the job's timeout-minutes")
        except Unsupported as exc:
            reporter.log(f"Error: {exc}")
            for step in job.steps:
                reporter.skip_step(step.index)
            return Result.FAILURE
        if job.outputs:
            reporter.log(f"Warning: job outputs are not sent: evaluating them {NEEDS_FULL}")

        paths = _paths(self.work_root, task.id)
        await _remove_tree(paths.root, self.cleanup_timeout)  # left over by a crashed run
        try:
            _prepare(paths, task)
            reporter.log(f"workspace: {paths.workspace}")
            return await self._run_steps(task, workflow, paths, reporter, job_timeout)
        finally:
            with trio.CancelScope(shield=True):
                await _remove_tree(paths.root, self.cleanup_timeout)

    async def _run_steps(
        self,
        task: Task,
        workflow: Workflow,
        paths: _Paths,
        reporter: TaskReporter,
        job_timeout: float | None,
    ) -> Result:
        job = workflow.job
        failed = False
        current: Step | None = None
        base = _base_env(task, workflow, paths)
        with trio.move_on_after(math.inf if job_timeout is None else job_timeout) as job_scope:
            for step in job.steps:
                if failed:
                    if step.condition is None:
                        reporter.skip_step(step.index)
                        continue
                    # It might have been meant to run anyway (``if: always()``); say why not.
                reporter.start_step(step.index)
                current = step
                outcome = await self._run_step(step, workflow, base, paths, reporter)
                if outcome is Result.FAILURE:
                    if _continue_on_error(step):
                        reporter.log(
                            "Failed to execute step (but continue-on-error is true), "
                            "the job goes on"
                        )
                    else:
                        failed = True
                reporter.finish_step(step.index, outcome)
                current = None
        if job_scope.cancelled_caught:
            minutes = _shown(job.timeout_minutes)
            if current is not None:
                reporter.log(
                    f"Error: the job exceeded its timeout-minutes ({minutes}) and was stopped"
                )
                reporter.finish_step(current.index, Result.FAILURE)
            else:
                reporter.log(f"Error: the job exceeded its timeout-minutes ({minutes})")
            for step in job.steps[(current.index + 1) if current is not None else 0 :]:
                if not reporter.steps[step.index].result.is_final:
                    reporter.skip_step(step.index)
            return Result.FAILURE
        return Result.FAILURE if failed else Result.SUCCESS

    async def _run_step(
        self,
        step: Step,
        workflow: Workflow,
        base: Mapping[str, str],
        paths: _Paths,
        reporter: TaskReporter,
    ) -> Result:
        """Run one step (already started); its outcome."""
        try:
            argv, script, cwd, env, timeout = _prepare_step(step, workflow, base, paths)
        except Unsupported as exc:
            reporter.log(f"Error: {exc}")
            return Result.FAILURE
        _write_script(script, step.run or "")
        try:
            done = await run_command(
                argv,
                cwd=cwd,
                env=env,
                on_line=reporter.output,
                time_limit=timeout,
                kill_grace=self.kill_grace,
                drain_timeout=self.drain_timeout,
            )
        except OSError as exc:
            reporter.log(f"Error: cannot start {argv[0]}: {exc.strerror or exc}")
            return Result.FAILURE
        if done.timed_out:
            reporter.log(
                f"Error: the step exceeded its timeout-minutes ({_shown(step.timeout_minutes)}) "
                "and was stopped"
            )
            return Result.FAILURE
        code = done.returncode
        if code == 0:
            return Result.SUCCESS
        if code is not None and code < 0:
            reporter.log(f"Error: the process was killed by signal {-code}")
        else:
            reporter.log(f"Error: Process completed with exit code {code}.")
        return Result.FAILURE


# --- what a step needs, checked -------------------------------------------------------


def _job_problem(job: Job) -> str | None:
    if job.uses is not None:
        return f"`uses:` (a reusable workflow) on job {job.id} {NEEDS_FULL}"
    if job.container:
        return f"`container:` {NEEDS_FULL}"
    if job.services:
        return f"`services:` {NEEDS_FULL}"
    if job.condition is not None:
        return f"`if:` on the job {NEEDS_FULL} (expressions)"
    return None


def _expression(value: str, what: str) -> None:
    if "${{" in value:
        raise Unsupported(f"{what} uses an expression (${{{{ }}}}), which {NEEDS_FULL}")


def _minutes(value: str | float | None, what: str) -> float | None:
    """``timeout-minutes`` in seconds. Fractions are accepted (GitHub does too)."""
    if value is None:
        return None
    if isinstance(value, str):
        _expression(value, what)
        try:
            value = float(value)
        except ValueError:
            raise Unsupported(f"{what} is not a number: {value!r}") from None
    if not value > 0 or math.isinf(value):
        raise Unsupported(f"{what} must be a positive number, not {value}")
    return value * 60.0


def _shown(minutes: str | float | None) -> str:
    """``timeout-minutes`` as the workflow wrote it (``5``, not ``5.0``)."""
    return f"{minutes:g}" if isinstance(minutes, float) else str(minutes)


def _continue_on_error(step: Step) -> bool:
    value = step.continue_on_error
    if isinstance(value, bool):
        return value
    return value.strip().lower() == "true"


def _prepare_step(
    step: Step, workflow: Workflow, base: Mapping[str, str], paths: _Paths
) -> tuple[list[str], Path, Path, dict[str, str], float | None]:
    """Everything to start the step's process, or :class:`Unsupported`."""
    if step.uses is not None:
        raise Unsupported(f"`uses:` {NEEDS_FULL} ({step.uses})")
    if step.condition is not None:
        raise Unsupported(f"`if:` {NEEDS_FULL} (expressions)")
    if isinstance(step.continue_on_error, str):
        _expression(step.continue_on_error, "continue-on-error")
        if step.continue_on_error.strip().lower() not in ("true", "false"):
            raise Unsupported(
                f"continue-on-error must be true or false, not {step.continue_on_error!r}"
            )
    run = step.run or ""
    _expression(run, "the script")
    timeout = _minutes(step.timeout_minutes, "timeout-minutes")

    job = workflow.job
    shell = step.shell or job.defaults.shell or workflow.defaults.shell or "bash"
    _expression(shell, "shell")
    if shell in SHELLS:
        template, suffix = SHELLS[shell]
    elif "{0}" in shell:
        template, suffix = tuple(shlex.split(shell)), ""
    else:
        raise Unsupported(f"shell {shell!r} {NEEDS_FULL}")
    script = paths.scripts / f"{step.index}{suffix}"
    argv = [part.replace("{0}", str(script)) for part in template]

    directory = (
        step.working_directory
        or job.defaults.working_directory
        or workflow.defaults.working_directory
    )
    cwd = paths.workspace
    if directory:
        _expression(directory, "working-directory")
        cwd = paths.workspace / directory
        if not cwd.is_dir():
            raise Unsupported(f"working-directory {directory!r} does not exist")

    env = dict(base)
    env["GITHUB_ACTION"] = env["FORGEJO_ACTION"] = step.id
    for layer, what in ((workflow.env, "workflow env"), (job.env, "job env"), (step.env, "env")):
        for key, value in layer.items():
            _expression(value, f"{what} {key}")
            if not key or "=" in key or "\0" in key:
                raise Unsupported(f"{what}: invalid variable name {key!r}")
            if "\0" in value:
                raise Unsupported(f"{what} {key} contains a NUL character")
            env[key] = value
    return argv, script, cwd, env, timeout


def _base_env(task: Task, workflow: Workflow, paths: _Paths) -> dict[str, str]:
    """The environment every step starts from; workflow, job and step ``env:`` go on top."""
    env = {
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "HOME": os.environ.get("HOME", str(paths.root)),
    }
    for name in PASSED_THROUGH:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(
        CI="true",
        GITHUB_ACTIONS="true",
        FORGEJO_ACTIONS="true",
        GITEA_ACTIONS="true",
        RUNNER_OS="Linux" if platform.system() == "Linux" else platform.system(),
        RUNNER_ARCH=_arch(),
        RUNNER_TEMP=str(paths.temp),
        TMPDIR=str(paths.temp),
    )
    twins: dict[str, str] = {
        "WORKSPACE": str(paths.workspace),
        "EVENT_PATH": str(paths.event),
        "JOB": workflow.job.id,
        "WORKFLOW": workflow.name or str(task.context.get("workflow", "")),
    }
    for key in CONTEXT_ENV:
        value = _context_str(task.context.get(key))
        if value is not None:
            twins[key.upper()] = value
    token = _token(task)
    if token:
        # forgejo-runner exports the task token to every step (executor.md §1.4).
        twins["TOKEN"] = token
    for key, value in twins.items():
        env[f"GITHUB_{key}"] = env[f"FORGEJO_{key}"] = value
    return env


def _token(task: Task) -> str:
    for name in ("FORGEJO_TOKEN", "GITEA_TOKEN", "GITHUB_TOKEN"):
        if task.secrets.get(name):
            return task.secrets[name]
    return _context_str(task.context.get("token")) or ""


def _context_str(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    return None


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "X64", "amd64": "X64", "aarch64": "ARM64", "arm64": "ARM64"}.get(
        machine, machine.upper()
    )


# --- the task's directory -------------------------------------------------------------


def _paths(work_root: Path, task_id: int) -> _Paths:
    root = work_root / str(task_id)
    return _Paths(
        root=root,
        workspace=root / "workspace",
        temp=root / "tmp",
        scripts=root / "scripts",
        event=root / "event.json",
    )


def _prepare(paths: _Paths, task: Task) -> None:
    """Create the task's directories and ``event.json`` (small, local: done inline)."""
    for directory in (paths.workspace, paths.temp, paths.scripts):
        directory.mkdir(parents=True, exist_ok=True)
    event = task.context.get("event")
    paths.event.write_text(json.dumps(event if isinstance(event, dict) else {}))


def _write_script(path: Path, run: str) -> None:
    path.write_text(run + "\n")
    path.chmod(0o755)


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


def _show_payload(payload: bytes, reporter: TaskReporter) -> None:
    """Print the payload with line numbers, as forgejo-runner does when it cannot parse it."""
    text = payload.decode("utf-8", errors="replace")
    if not text.strip():
        return
    reporter.log("The workflow payload:")
    for number, line in enumerate(text.splitlines(), start=1):
        reporter.log(f"{number:4d}: {line}")
