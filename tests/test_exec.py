"""``forgejo-scheduler exec``: a real process running a real workflow file through the
simulator, the service and the host executor, printing the job's log as it runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import trio

from tests.support.daemon import CLI, ROOT

SECRET = "hunter2-exec-secret"

PASSING = """\
name: try
on: [push]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - name: hello
        run: echo "hello from ${{ github.event_name }}, var ${{ vars.COLOUR }}"
      - run: echo "the secret is ${{ secrets.TOKEN }}"
      - run: echo "answer=42" >> "$GITHUB_OUTPUT"; echo "done"
"""

FAILING = """\
on: push
jobs:
  test:
    runs-on: docker
    steps:
      - run: echo "before the failure"
      - run: exit 3
      - run: echo "never printed"
"""

MULTI = """\
on: push
env:
  ANSWER: yes
jobs:
  first:
    runs-on: self-hosted
    steps:
      - run: echo "first says $ANSWER"
  second:
    needs: first
    runs-on: self-hosted
    steps:
      - run: echo "second runs"
"""


def exec_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    unset = {k: v for k, v in os.environ.items() if k != "UNSET_FOR_SURE"}
    return subprocess.run([*CLI, "exec", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False, env={**unset, **(env or {})})


def test_a_passing_job_prints_its_log_and_exits_0(tmp_path: Path) -> None:
    wf = tmp_path / "ci.yml"
    wf.write_text(PASSING)
    proc = exec_cli(str(wf), "--secret", "TOKEN", "--var", "COLOUR=green",
                    "--event", "workflow_dispatch", env={"TOKEN": SECRET})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    hello = lines.index("hello from workflow_dispatch, var green")
    assert lines.index("the secret is ***") > hello  # in order, the secret masked
    assert "done" in lines and "🏁 Job succeeded" in lines
    assert SECRET not in proc.stdout + proc.stderr
    assert "job build: success" in proc.stderr


def test_a_failing_job_exits_1(tmp_path: Path) -> None:
    wf = tmp_path / "ci.yml"
    wf.write_text(FAILING)
    proc = exec_cli(str(wf))  # runs-on docker: exec runs it on the host all the same
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "before the failure" in proc.stdout
    assert "never printed" not in proc.stdout
    assert "Error: Process completed with exit code 3." in proc.stdout
    assert "job test: failure" in proc.stderr


def test_several_jobs_need_job_which_runs_alone(tmp_path: Path) -> None:
    wf = tmp_path / "multi.yml"
    wf.write_text(MULTI)
    proc = exec_cli(str(wf))
    assert proc.returncode == 2
    assert "2 jobs (first, second): pick one with --job" in proc.stderr
    proc = exec_cli(str(wf), "--job", "first")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "first says yes" in proc.stdout  # YAML 1.2: `yes` stays a string when split
    assert "second runs" not in proc.stdout
    proc = exec_cli(str(wf), "-j", "second")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "second runs" in proc.stdout and "needs first" in proc.stderr


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, (), "cannot read the workflow"),
        ("jobs: [", (), "not valid YAML"),
        ("name: no jobs\n", (), "`jobs:` is missing"),
        (PASSING, ("--job", "nope"), "--job nope: no such job (the workflow has: build)"),
        (PASSING, ("--secret", "BAD NAME=1"), "argument --secret/-s: expected NAME=VALUE"),
        (PASSING, ("--secret", "UNSET_FOR_SURE"), "no such environment variable"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2(
    tmp_path: Path, content: str | None, args: tuple[str, ...], message: str
) -> None:
    wf = tmp_path / "ci.yml"
    if content is not None:
        wf.write_text(content)
    proc = exec_cli(str(wf), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_log_rows_are_printed_while_the_job_runs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = tmp_path / "wait.yml"
    wf.write_text(
        "on: push\njobs:\n  wait:\n    runs-on: host\n    steps:\n"
        '      - run: echo "waiting for the gate"\n'
        f'      - run: while [ ! -e "{gate}" ]; do sleep 0.05; done; echo "gate opened"\n'
    )
    proc = await trio.lowlevel.open_process(
        [*CLI, "exec", str(wf)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    out = b""
    try:
        with trio.fail_after(60):
            while b"waiting for the gate" not in out:  # printed before the job can end
                chunk = await proc.stdout.receive_some(65536)
                assert chunk, out.decode()
                out += chunk
            assert b"gate opened" not in out
            gate.touch()
            while chunk := await proc.stdout.receive_some(65536):
                out += chunk
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert b"gate opened" in out and "🏁 Job succeeded".encode() in out
