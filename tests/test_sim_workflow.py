"""``sim --workflow``: a user's own workflow queued on a simulated instance and run by a
real ``run`` process; the simulator's periodic summary while a task runs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import trio

from scheduler.sim import Result
from scheduler.sim.jobparser import split_jobs
from scheduler.sim.ledger import Ledger
from tests.support.daemon import CLI, ROOT, Daemon

SECRET = "sim-workflow-secret-7"


def workflow(gate: Path, out: Path) -> str:
    return (
        "name: mine\non: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n"
        f'      - run: echo "${{{{ secrets.TOKEN }}}}" >> "{out}"\n'
        f'      - run: while [ ! -e "{gate}" ]; do sleep 0.05; done\n'
    )


async def read_until(proc: trio.Process, out: bytearray, pattern: bytes) -> re.Match[bytes]:
    assert proc.stdout is not None
    while (match := re.search(pattern, out)) is None:
        chunk = await proc.stdout.receive_some(65536)
        assert chunk, out.decode()
        out += chunk
    return match


async def test_sim_workflow_is_taken_by_run_and_the_summary_counts_it_running(
    tmp_path: Path,
) -> None:
    gate, written = tmp_path / "gate", tmp_path / "secrets.txt"
    wf = tmp_path / "mine.yml"
    wf.write_text(workflow(gate, written))
    config = tmp_path / "runner.toml"
    sim = await trio.lowlevel.open_process(
        [*CLI, "sim", "--instances", "a,b", "--instance", "b", "--rate", "0",
         "--workflow", str(wf), "--repeat", "2", "--secret", f"TOKEN={SECRET}",
         "--write-config", str(config), "--capacity", "2", "--fetch-interval", "200ms",
         "--summary-interval", "0.1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    out = bytearray()
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(60):
                await read_until(sim, out, b"runner config written")
                assert b"queued 2 x job build" in out and b"on b " in out
                daemon = Daemon(config)
                await daemon.start(nursery)
                # Both tasks run (they wait for the gate): counted running, not lost.
                line = await read_until(sim, out, rb"ledger: assigned=2 .*running=2 .*\n")
                assert b" lost=0 " in line.group(0), line.group(0)
                gate.touch()
                await read_until(sim, out, rb"finished=2 running=0 ")
                daemon.signal(2)
                assert await daemon.wait() == 0
            sim.send_signal(2)
            with trio.fail_after(30):
                await read_until(sim, out, rb"\n}\n")
                assert await sim.wait() == 0
    finally:
        if sim.returncode is None:
            sim.kill()
            await sim.wait()
    text = out.decode()
    report = json.loads(text[text.index("\n{") :])
    assert report["ledger"]["instances"]["b"]["results"] == {"RESULT_SUCCESS": 2}
    assert report["ledger"]["instances"]["a"]["assigned"] == 0
    assert written.read_text().splitlines() == [SECRET, SECRET]  # the secret reached the job
    assert SECRET.encode() not in daemon.log


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, (), "cannot read the workflow"),
        ("jobs: [", (), "not valid YAML"),
        ("- a list\n", (), "not a workflow"),
        ("on: push\njobs:\n  j:\n    steps: []\n", ("--instance", "zz"),
         "--instance zz: no such instance (--instances is a)"),
        ("on: push\njobs:\n  j:\n    steps: []\n", ("--secret", "NO VALUE"),
         "argument --secret: expected NAME=VALUE"),
        ("on: push\njobs:\n  j:\n    steps: []\n", ("--repeat", "0"), "expected a number >= 1"),
    ],
)
def test_sim_workflow_bad_input_exits_2(
    tmp_path: Path, content: str | None, args: tuple[str, ...], message: str
) -> None:
    wf = tmp_path / "wf.yml"
    if content is not None:
        wf.write_text(content)
    proc = subprocess.run([*CLI, "sim", "--workflow", str(wf), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "serving" not in proc.stdout
    assert "Traceback" not in proc.stderr


def test_instance_without_workflow_is_refused() -> None:
    proc = subprocess.run([*CLI, "sim", "--instance", "a"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "go with --workflow FILE" in proc.stderr


def test_split_jobs_keeps_one_job_files_as_written_and_splits_the_others() -> None:
    one = "on: push\njobs:\n  j:\n    runs-on: [a, b]\n    steps: [{run: 'true'}]\n"
    (job,) = split_jobs(one)
    assert (job.id, job.runs_on, job.payload) == ("j", ("a", "b"), one)
    two = split_jobs(
        "name: w\non: push\nenv: {X: yes}\njobs:\n"
        "  a: {runs-on: '${{ matrix.os }}', steps: []}\n"
        "  b: {needs: a, runs-on: {labels: [big]}, steps: []}\n"
    )
    assert [(j.id, j.runs_on, j.needs) for j in two] == [("a", (), ()), ("b", ("big",), ("a",))]
    (b,) = split_jobs(two[1].payload)  # each payload is a one-job workflow of its own
    assert b.id == "b" and "X: 'yes'" in two[1].payload and "'on': push" in two[1].payload


def test_summary_counts_unfinished_tasks_as_running_and_reaped_ones_as_lost() -> None:
    led = Ledger()
    led.add_instance("x")
    first, second, third = led.next_task_id(), led.next_task_id(), led.next_task_id()
    for task in (first, second, third):
        led.assigned("x", task, task, 0.0)
    led.delivered([first, second])  # third: assigned in an answer that never arrived
    assert "running=3 undelivered=1 peak=3 lost=0 " in led.summary()
    led.finished(first, Result.SUCCESS, "runner", 1.0)
    led.finished(second, Result.FAILURE, "zombie", 2.0)
    assert "finished=2 running=1 undelivered=1 peak=3 lost=1 " in led.summary()
    assert led.statistics().lost == 2  # the end-of-run verdict: unfinished counts as lost
