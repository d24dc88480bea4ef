"""HostExecutor with real bash processes (no mocks), writing to a TaskLog (no server).

These run on the real clock: the processes do.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from scheduler.executor import HostExecutor
from scheduler.executor.host import run_command
from scheduler.executor.workflow import WorkflowError, parse_workflow
from scheduler.protocol import Result, StepState, Task
from scheduler.task.log import TaskLog


class WatchingLog(TaskLog):
    """A task log that can wake a test when a given row arrives."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._waiting: dict[str, trio.Event] = {}

    def seen(self, line: str) -> trio.Event:
        return self._waiting.setdefault(line, trio.Event())

    def log(self, text: str) -> None:
        super().log(text)
        self.seen(text).set()


def workflow(steps: str, *, job_extra: str = "", top: str = "") -> bytes:
    body = textwrap.indent(textwrap.dedent(steps).strip("\n"), " " * 6)
    extra = textwrap.indent(textwrap.dedent(job_extra).strip("\n"), " " * 4)
    text = f"name: ci\non:\n  push:\n{textwrap.dedent(top)}jobs:\n  build:\n    runs-on: host\n"
    if extra:
        text += extra + "\n"
    return (text + "    steps:\n" + body + "\n").encode()


def make_task(payload: bytes, **kw: Any) -> Task:
    context = {"run_id": "77", "run_number": 5, "repository": "o/r", "job": "build"}
    context.update(kw.pop("context", {}))
    return Task(id=kw.pop("id", 4242), workflow_payload=payload, context=context, **kw)


async def run(
    tmp_path: Path, payload: bytes, **kw: Any
) -> tuple[Result, TaskLog, HostExecutor]:
    task = make_task(payload, **kw)
    task_log = TaskLog(task, connection="test")
    executor = HostExecutor(tmp_path / "work", kill_grace=1.0, drain_timeout=2.0)
    result = await executor.execute(task, task_log)
    return result, task_log, executor


def rows(task_log: TaskLog) -> list[str]:
    return [r.content for r in task_log.queued]


def step_rows(task_log: TaskLog, step: StepState) -> list[str]:
    return rows(task_log)[step.log_index : step.log_index + step.log_length]


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie waiting for its (new) parent counts as gone.
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    return True
        except (FileNotFoundError, IndexError):
            return True
        time.sleep(0.05)
    return False


# --- steps, results, rows ---------------------------------------------------------------


async def test_steps_rows_and_exit_codes(tmp_path: Path) -> None:
    payload = workflow(
        """
        - run: |
            echo hello
            echo to-stderr >&2
            printf 'no newline'
        - name: fails
          run: |
            echo before
            exit 3
        - run: echo never
        """
    )
    result, rep, _ = await run(tmp_path, payload)
    assert result is Result.FAILURE
    s0, s1, s2 = rep.steps
    assert [s.result for s in rep.steps] == [Result.SUCCESS, Result.FAILURE, Result.SKIPPED]
    assert step_rows(rep, s0) == ["hello", "to-stderr", "no newline"]
    assert step_rows(rep, s1) == ["before", "Error: Process completed with exit code 3."]
    # Contiguous: step 1 starts where step 0 ends; the skipped step is empty, at the end.
    assert s1.log_index == s0.log_index + s0.log_length
    assert (s2.log_index, s2.log_length) == (s1.log_index + s1.log_length, 0)
    assert s0.started_at is not None and s0.stopped_at is not None
    assert s2.started_at is None and s2.stopped_at is not None
    # Rows before step 0 are the "Set up job" part.
    setup = rows(rep)[: s0.log_index]
    assert any("host executor" in r for r in setup)
    assert "never" not in rows(rep)


async def test_success_and_invalid_utf8(tmp_path: Path) -> None:
    payload = workflow(r"""
        - run: printf 'caf\xc3\xa9 \xff!\r\n'
        """)
    result, rep, _ = await run(tmp_path, payload)
    assert result is Result.SUCCESS
    assert step_rows(rep, rep.steps[0]) == ["café \ufffd!"]


async def test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_PRIVATE_THING", "do-not-leak")
    payload = workflow(
        """
        - env:
            STEP_VAR: step
            JOB_VAR: overridden-by-step
            YAML12: yes
          run: |
            echo "CI=$CI GA=$GITHUB_ACTIONS FA=$FORGEJO_ACTIONS"
            echo "RUN_ID=$GITHUB_RUN_ID NUMBER=$FORGEJO_RUN_NUMBER REPO=$GITHUB_REPOSITORY"
            echo "WF=$WF_VAR JOB=$JOB_VAR STEP=$STEP_VAR Y=$YAML12"
            echo "PRIVATE=${RUNNER_PRIVATE_THING:-unset}"
            echo "HOME_SET=${HOME:+yes} PATH_SET=${PATH:+yes}"
            test "$PWD" = "$GITHUB_WORKSPACE" && echo "cwd is the workspace"
            test -f "$GITHUB_EVENT_PATH" && cat "$GITHUB_EVENT_PATH"; echo
            echo "JOBID=$GITHUB_JOB WORKFLOW=$GITHUB_WORKFLOW ACTION=$GITHUB_ACTION"
        """,
        job_extra="env:\n  JOB_VAR: job\n",
        top="env:\n  WF_VAR: wf\n",
    )
    result, rep, _ = await run(
        tmp_path, payload, context={"event": {"ref": "refs/heads/main"}}
    )
    assert result is Result.SUCCESS, rows(rep)
    assert step_rows(rep, rep.steps[0]) == [
        "CI=true GA=true FA=true",
        "RUN_ID=77 NUMBER=5 REPO=o/r",
        "WF=wf JOB=overridden-by-step STEP=step Y=yes",
        "PRIVATE=unset",
        "HOME_SET=yes PATH_SET=yes",
        "cwd is the workspace",
        '{"ref": "refs/heads/main"}',
        "JOBID=build WORKFLOW=ci ACTION=0",
    ]


async def test_task_token_is_exported_and_masked(tmp_path: Path) -> None:
    payload = workflow("""
        - run: echo "token=$GITHUB_TOKEN same=$FORGEJO_TOKEN"
        """)
    secrets = {"FORGEJO_TOKEN": "0123456789abcdef", "GITHUB_TOKEN": "0123456789abcdef"}
    result, rep, _ = await run(tmp_path, payload, secrets=secrets)
    assert result is Result.SUCCESS
    assert step_rows(rep, rep.steps[0]) == ["token=*** same=***"]


async def test_multiline_secret_and_add_mask(tmp_path: Path) -> None:
    payload = workflow(r"""
        - run: |
            printf 'first-line-AAA\nsecond-line-BBB\n'
            echo "inline first-line-AAA."
            echo "::add-mask::dyn-value-42"
            echo "later dyn-value-42 here"
            echo "::group::Title"
            echo "::endgroup::"
        """)
    secrets = {"KEY": "first-line-AAA\nsecond-line-BBB"}
    result, rep, _ = await run(tmp_path, payload, secrets=secrets)
    assert result is Result.SUCCESS
    assert step_rows(rep, rep.steps[0]) == [
        "***",
        "***",
        "inline ***.",
        "later *** here",
        "##[group]Title",
        "##[endgroup]",
    ]
    assert not any("AAA" in r or "BBB" in r or "dyn-value" in r for r in rows(rep))


async def test_workspace_removed_and_working_directory(tmp_path: Path) -> None:
    payload = workflow(
        """
        - run: mkdir -p sub/dir && echo data > sub/dir/f && chmod -w sub/dir
        - working-directory: sub/dir
          run: pwd && cat f
        - shell: sh
          run: echo "from sh"
        """
    )
    result, rep, _ = await run(tmp_path, payload, id=99)
    assert result is Result.SUCCESS, rows(rep)
    pwd, data = step_rows(rep, rep.steps[1])
    assert pwd == str(tmp_path / "work" / "99" / "workspace" / "sub" / "dir")
    assert data == "data"
    assert step_rows(rep, rep.steps[2]) == ["from sh"]
    # Removed afterwards, read-only directories included.
    assert not (tmp_path / "work" / "99").exists()


async def test_stale_directory_replaced(tmp_path: Path) -> None:
    stale = tmp_path / "work" / "5" / "workspace"
    stale.mkdir(parents=True)
    (stale / "old").write_text("x")
    payload = workflow("""
        - run: ls -A
        """)
    result, rep, _ = await run(tmp_path, payload, id=5)
    assert result is Result.SUCCESS
    assert step_rows(rep, rep.steps[0]) == []


async def test_background_process_does_not_hang(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    payload = workflow(f"""
        - run: |
            sleep 1000 &
            echo $! > {pidfile}
            echo started
        - run: echo next
        """)
    t0 = time.monotonic()
    result, rep, _ = await run(tmp_path, payload)
    assert time.monotonic() - t0 < 10
    assert result is Result.SUCCESS
    assert [step_rows(rep, s) for s in rep.steps] == [["started"], ["next"]]
    assert gone(int(pidfile.read_text()))


async def test_step_timeout(tmp_path: Path) -> None:
    payload = workflow("""
        - timeout-minutes: 0.01
          run: |
            echo going to sleep
            sleep 60
        - run: echo skipped
        """)
    t0 = time.monotonic()
    result, rep, _ = await run(tmp_path, payload)
    assert time.monotonic() - t0 < 10
    assert result is Result.FAILURE
    assert [s.result for s in rep.steps] == [Result.FAILURE, Result.SKIPPED]
    assert step_rows(rep, rep.steps[0]) == [
        "going to sleep",
        "Error: the step exceeded its timeout-minutes (0.01) and was stopped",
    ]


async def test_job_timeout(tmp_path: Path) -> None:
    payload = workflow(
        """
        - run: echo quick
        - run: sleep 60
        - run: echo never
        """,
        job_extra="timeout-minutes: 0.02",  # 1.2 s
    )
    t0 = time.monotonic()
    result, rep, _ = await run(tmp_path, payload)
    assert time.monotonic() - t0 < 10
    assert result is Result.FAILURE
    # As forgejo-runner: no later step runs after a job timeout (not even always()).
    assert [s.result for s in rep.steps] == [Result.SUCCESS, Result.FAILURE, Result.CANCELLED]
    assert step_rows(rep, rep.steps[1]) == [
        "Error: the job exceeded its timeout-minutes (0.02) and was stopped"
    ]


async def test_continue_on_error(tmp_path: Path) -> None:
    payload = workflow("""
        - continue-on-error: true
          run: exit 1
        - run: echo still running
        """)
    result, rep, _ = await run(tmp_path, payload)
    assert result is Result.SUCCESS
    assert [s.result for s in rep.steps] == [Result.FAILURE, Result.SUCCESS]
    assert step_rows(rep, rep.steps[0]) == [
        "Error: Process completed with exit code 1.",
        "Failed to execute step (but continue-on-error is true), the job goes on",
    ]
    assert step_rows(rep, rep.steps[1]) == ["still running"]


async def test_pipefail(tmp_path: Path) -> None:
    payload = workflow("""
        - run: false | cat
        """)
    result, _, _ = await run(tmp_path, payload)
    assert result is Result.FAILURE


# --- cancellation -----------------------------------------------------------------------


async def test_cancellation_kills_the_group_and_cleans_up(tmp_path: Path) -> None:
    bg, fg = tmp_path / "bg.pid", tmp_path / "fg.pid"
    payload = workflow(f"""
        - run: |
            trap '' TERM
            sleep 1000 &
            echo $! > {bg}
            echo $$ > {fg}
            echo waiting
            sleep 1000
        """)
    task = make_task(payload, id=31)
    task_log = WatchingLog(task, connection="test")
    executor = HostExecutor(tmp_path / "work", kill_grace=0.5, drain_timeout=1.0)
    t0 = time.monotonic()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.execute, task, task_log)
            await task_log.seen("waiting").wait()
            await trio.sleep(0.1)
            scope.cancel()
    assert scope.cancelled_caught
    assert time.monotonic() - t0 < 10
    # The shell ignores TERM: it took the KILL after the grace period; its child went too.
    assert gone(int(fg.read_text()))
    assert gone(int(bg.read_text()))
    assert not (tmp_path / "work" / "31").exists()
    assert step_rows(task_log, task_log.steps[0]) == ["waiting"]
    assert task_log.steps[0].result is Result.CANCELLED


async def test_run_command_keeps_output_tail_on_timeout(tmp_path: Path) -> None:
    lines: list[str] = []
    result = await run_command(
        ["bash", "-c", "trap 'echo got TERM; exit 5' TERM; echo up; sleep 100 & wait"],
        cwd=tmp_path, env={"PATH": os.environ["PATH"]}, on_line=lines.append,
        time_limit=0.5, kill_grace=5.0, drain_timeout=2.0,
    )
    assert result.timed_out
    assert result.returncode == 5
    assert lines == ["up", "got TERM"]


async def test_run_command_missing_program(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await run_command(["/nonexistent/prog"], cwd=tmp_path, env={}, on_line=print)


# --- what the host executor refuses, clearly ----------------------------------------------


@pytest.mark.parametrize(
    ("step", "needle"),
    [
        ("- uses: docker://alpine:3\n", "is a docker action, which needs a container executor"),
        ("- uses: ./.github/workflows/x.yml\n", "is a reusable workflow"),
        ("- shell: no-such-shell-xyz {0}\n  run: echo x", "no-such-shell-xyz: command not found"),
        ("- shell: frobnicate\n  run: echo x", "neither a known shell nor a template"),
        ("- shell: pwsh\n  run: echo x", "pwsh: command not found"),
        ("- working-directory: nope\n  run: echo x", "working-directory 'nope' does not exist"),
        ("- timeout-minutes: soon\n  run: echo x", "timeout-minutes is not a number"),
        ("- run: echo ${{ nope( }}", "cannot evaluate"),
        ("- if: nope(\n  run: echo x", "Error in if-expression"),
    ],
)
async def test_step_failures_say_why(tmp_path: Path, step: str, needle: str) -> None:
    if "pwsh" in step and shutil.which("pwsh"):
        pytest.skip("pwsh is installed here")
    result, rep, _ = await run(tmp_path, workflow(step + "\n- run: echo never"))
    assert result is Result.FAILURE
    assert [s.result for s in rep.steps] == [Result.FAILURE, Result.SKIPPED]
    lines = step_rows(rep, rep.steps[0])
    assert any(needle in line for line in lines), lines
    assert "never" not in rows(rep)


@pytest.mark.parametrize(
    ("uses", "needle"),
    [
        ("actions/checkout@v4", "the task context has no forgejo_default_actions_url"),
        ("not-a-reference", "Input string was not in a correct format"),
    ],
)
async def test_remote_actions_are_resolved_while_setting_up(
    tmp_path: Path, uses: str, needle: str
) -> None:
    """As forgejo-runner: fetching actions is the pre stage; it fails the job before step 0."""
    result, rep, _ = await run(tmp_path, workflow(f"- run: echo one\n- uses: {uses}\n"))
    assert result is Result.FAILURE
    assert [s.result for s in rep.steps] == [Result.SKIPPED, Result.SKIPPED]
    assert any(needle in line for line in rows(rep)), rows(rep)
    assert "one" not in rows(rep)


async def test_if_always_runs_after_a_failure(tmp_path: Path) -> None:
    payload = workflow("""
        - run: exit 1
        - run: echo skipped
        - if: always()
          run: echo cleanup
        - if: failure()
          run: echo "status ${{ job.status }}"
        """)
    result, rep, _ = await run(tmp_path, payload)
    assert result is Result.FAILURE
    assert [s.result for s in rep.steps] == [
        Result.FAILURE, Result.SKIPPED, Result.SUCCESS, Result.SUCCESS
    ]
    assert [step_rows(rep, s) for s in rep.steps[2:]] == [["cleanup"], ["status failure"]]


@pytest.mark.parametrize(
    ("job_extra", "needle"),
    [
        ("container: node:20", "`container:` needs a container executor"),
        ("services:\n  db:\n    image: postgres", "`services:` needs a container executor"),
        ("uses: ./.github/workflows/other.yml", "does not run job-level `uses:`"),
    ],
)
async def test_unsupported_job_features(tmp_path: Path, job_extra: str, needle: str) -> None:
    payload = workflow("- run: echo a\n- run: echo b", job_extra=job_extra)
    result, rep, _ = await run(tmp_path, payload)
    assert result is Result.FAILURE
    assert [s.result for s in rep.steps] == [Result.SKIPPED, Result.SKIPPED]
    assert any(needle in r for r in rows(rep))


async def test_job_if_false_skips_the_job(tmp_path: Path) -> None:
    payload = workflow("- run: echo a\n- run: echo b", job_extra="if: github.ref == 'x'")
    result, rep, _ = await run(tmp_path, payload)
    assert result is Result.SKIPPED
    assert [s.result for s in rep.steps] == [Result.SKIPPED, Result.SKIPPED]
    assert "Skipping job 'build' due to 'github.ref == 'x''" in rows(rep)


@pytest.mark.parametrize(
    ("labels", "needle"),
    [
        (["host:docker://node:20"], "picks the label 'host:docker://node:20'"),
        (["host:lxc"], "picks the label 'host:lxc'"),
        (["other:host"], "matches none of this runner's labels"),
    ],
)
async def test_labels_other_than_host_fail_clearly(
    tmp_path: Path, labels: list[str], needle: str
) -> None:
    task = make_task(workflow("- run: echo a"))
    task_log = TaskLog(task, connection="test")
    executor = HostExecutor(tmp_path / "work", labels={"test": labels})
    assert await executor.execute(task, task_log) is Result.FAILURE
    assert task_log.steps[0].result is Result.SKIPPED
    assert any(needle in r and "needs a container executor" in r for r in rows(task_log))
    ok = HostExecutor(tmp_path / "work", labels=["host:host"])
    task_log = TaskLog(task, connection="test")
    assert await ok.execute(task, task_log) is Result.SUCCESS


# --- parsing ------------------------------------------------------------------------------


def test_parse_yaml12_and_on_key() -> None:
    wf = parse_workflow(
        b"name: w\non: [push]\nenv: {A: yes, B: 0o17, C: 1.50, D: true, E: null}\n"
        b"jobs:\n  j:\n    steps:\n      - run: echo\n      -\n      - id: named\n"
        b"        uses: a/b@v1\n        continue-on-error: true\n"
    )
    assert wf.name == "w"
    assert dict(wf.env) == {"A": "yes", "B": "15", "C": "1.5", "D": "true", "E": ""}
    assert wf.job.id == "j"
    assert [(s.index, s.id) for s in wf.job.steps] == [(0, "0"), (1, "named")]
    assert wf.job.steps[1].continue_on_error is True


def test_parse_rejects_nested_env() -> None:
    with pytest.raises(WorkflowError, match="must be a plain value"):
        parse_workflow(b"jobs:\n  j:\n    env: {A: [1]}\n    steps: []\n")


async def test_configured_job_env_precedence(tmp_path: Path) -> None:
    """``envs``/``env_file`` (per connection) as forgejo-runner layers them: over the
    service's environment and the workflow's and job's ``env:``, under the runner's own
    variables, under a step's ``env:`` and ``GITHUB_ENV``; taken literally."""
    payload = workflow(
        """
        - run: |
            echo "wf=$WF job=$JOB plain=$PLAIN path=$PATH home=$HOME"
            echo "server=$GITHUB_SERVER_URL literal=$LITERAL"
            echo "STEP_SET=github-env" >> "$GITHUB_ENV"
        - run: echo "step=$STEP step_set=$STEP_SET"
          env:
            STEP: from-step
        """,
        job_extra="env:\n  JOB: from-job\n",
        top="env:\n  WF: from-workflow\n",
    )
    configured = {
        "WF": "configured", "JOB": "configured", "PLAIN": "configured",
        "PATH": "/opt/x:/usr/bin:/bin",
        "GITHUB_SERVER_URL": "http://configured", "LITERAL": "${{ github.sha }}",
        "STEP": "configured", "STEP_SET": "configured",
    }
    task = make_task(payload, context={"server_url": "https://forgejo.example"})
    task_log = TaskLog(task, connection="test")
    executor = HostExecutor(tmp_path / "work", job_env={"test": configured, "other": {"X": "1"}})
    assert await executor.execute(task, task_log) is Result.SUCCESS, rows(task_log)
    out = rows(task_log)
    home = os.environ.get("HOME", "")
    assert ("wf=configured job=configured plain=configured path=/opt/x:/usr/bin:/bin "
            f"home={home}") in out
    assert "server=https://forgejo.example literal=${{ github.sha }}" in out
    assert "step=from-step step_set=github-env" in out
    # Another connection's variables do not leak in, and none at all is the default.
    assert executor.env_for("nobody") == {}
