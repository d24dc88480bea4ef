"""The workflow corpus (``tests/workflows/*.yml``), end to end over loopback HTTP.

Each file is one case: a workflow, what the task brings besides it (secrets, vars,
needs, context), actions to serve from git repositories over HTTP (the task's default
actions URL points at them), and what the server must have received: the task's
result, each step's result and exact log rows, the "Set up job" and "Complete job"
rows, and the job outputs. The task is fetched from the simulator with the real
client, then run by ``run_task`` with the :class:`HostExecutor`; needs and extra
context are added to the fetched task, because the simulator sends neither.

Expected rows may hold placeholders: ``<WORKSPACE>``, ``<ROOT>`` (the task's
directory), ``<TASK>`` (its id), ``<ACTIONS_URL>``, ``<SHA:owner/repo>`` (the commit of
a served action), ``<VERSION>``, and ``<*>`` (anything). ``<ACTIONS_URL>`` and
``<SHA:…>`` are also replaced in the workflow text.

Adding a case: write the file, run it, read the rows it produced, and only then write
them down as expected, after checking each one is right.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import yaml

from scheduler import __version__
from scheduler.executor import HostExecutor
from scheduler.protocol import Result, RunnerClient, TaskNeed
from scheduler.sim import InstanceSpec
from scheduler.task.lifecycle import run_task
from scheduler.task.reporter import RetryPolicy
from tests.support.repos import StaticServer, make_repository
from tests.support.sim import running_sim

CORPUS = Path(__file__).parent / "workflows"
CASES = sorted(CORPUS.glob("*.yml"))
FAST = RetryPolicy(attempts=5, initial_delay=0.05, max_delay=0.5, budget=10.0)


def load(path: Path) -> dict[str, Any]:
    case = yaml.safe_load(path.read_text())
    assert isinstance(case, dict) and "workflow" in case and "expect" in case, path
    return case


def substitute(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"<{key}>", value)
    return text


def pattern(expected: str, values: dict[str, str]) -> re.Pattern[str]:
    """An expected row as a regex: placeholders replaced, ``<*>`` matching anything."""
    parts = substitute(expected, values).split("<*>")
    return re.compile(".*".join(re.escape(p) for p in parts), re.DOTALL)


def check_rows(what: str, actual: list[str], expected: list[str], values: dict[str, str]) -> None:
    mismatch = len(actual) != len(expected) or not all(
        pattern(e, values).fullmatch(a) for a, e in zip(actual, expected, strict=False)
    )
    assert not mismatch, f"{what}:\nactual   {actual}\nexpected {expected}"


@attrs.define
class Outcome:
    result: Result  # the runner's final report
    server_result: Result
    steps: list[tuple[str, list[str]]]
    setup: list[str]
    complete: list[str]
    outputs: dict[str, str]
    values: dict[str, str]


async def run_case(case: dict[str, Any], tmp_path: Path) -> Outcome:
    served = tmp_path / "served"
    served.mkdir()
    values = {"VERSION": __version__}
    for name, spec in (case.get("actions") or {}).items():
        sha = make_repository(served, name, spec["files"], spec.get("tags", ["v1"]))
        values[f"SHA:{name}"] = sha
    server = StaticServer(served)
    work = tmp_path / "work"
    spec = InstanceSpec("a", zombie_timeout=None)
    async with running_sim(spec, seed=1) as sim, trio.open_nursery() as nursery:
        values["ACTIONS_URL"] = await nursery.start(server.serve)
        inst = sim.instances["a"]
        workflow = substitute(case["workflow"], values)
        job_id = inst.add_job(
            workflow=workflow, secrets=case.get("secrets"), vars=case.get("vars")
        )
        client = RunnerClient(
            sim.base_url("a"), uuid=inst.runner.uuid, token=inst.runner.token, timeout=10.0
        )
        async with client:
            answer = await client.fetch_task(
                tasks_version=0, task_capacity=1, request_key=str(uuid.uuid4())
            )
            (task,) = answer.tasks
            sim_task = inst.task_for_job(job_id)
            assert sim_task is not None
            context = {
                **task.context,
                **(case.get("context") or {}),
                "forgejo_default_actions_url": values["ACTIONS_URL"],
            }
            needs = {
                name: TaskNeed(outputs=need.get("outputs", {}),
                               result=Result[need["result"].upper()])
                for name, need in (case.get("needs") or {}).items()
            }
            task = attrs.evolve(task, context=context, needs=needs)
            values.update(
                TASK=str(task.id), ROOT=str(work / str(task.id)),
                WORKSPACE=str(work / str(task.id) / "workspace"),
            )
            if "cancel_after" in case:
                nursery.start_soon(cancel_after, inst, sim_task, case["cancel_after"])
            executor = HostExecutor(work, kill_grace=1.0, drain_timeout=2.0, post_timeout=20.0)
            with trio.fail_after(60):
                outcome = await run_task(
                    client, task, executor, report_interval=0.1, connection="a",
                    runner_name="test-runner", retry=FAST,
                )
        nursery.cancel_scope.cancel()
    assert outcome.reported
    final = sim_task.updates[-1]
    assert sim_task.log_archived
    lines = sim_task.log_lines
    steps = [(s.result.name.lower(), lines[s.log_index : s.log_index + s.log_length])
             for s in final.steps]
    # As Forgejo's UI: "Set up job" is everything before the first started step,
    # "Complete job" everything after the steps' rows.
    end = max((s.log_index + s.log_length for s in final.steps), default=len(lines))
    started = [s.log_index for s in final.steps if s.started_at is not None]
    first = min(started) if started else end
    assert not (work / str(task.id)).exists(), "the task's directory is removed"
    return Outcome(
        result=outcome.result,
        server_result=Result(int(sim_task.result)),
        steps=steps,
        setup=lines[1:first],  # the first row is run_task's header
        complete=lines[end:],
        outputs=dict(sim_task.outputs),
        values=values,
    )


async def cancel_after(inst: Any, sim_task: Any, line: str) -> None:
    """Cancel the task on the server (as a user would) once ``line`` was stored."""
    while line not in sim_task.log_lines:
        await trio.sleep(0.02)
    inst.cancel_task(sim_task.id)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
async def test_corpus(path: Path, tmp_path: Path) -> None:
    case = load(path)
    expect = case["expect"]
    got = await run_case(case, tmp_path)
    values = got.values
    assert got.result.name.lower() == expect["result"], (got.result, got.steps, got.setup,
                                                         got.complete)
    if "server_result" in expect:
        assert got.server_result.name.lower() == expect["server_result"]
    assert len(got.steps) == len(expect["steps"]), got.steps
    for index, ((result, rows), want) in enumerate(zip(got.steps, expect["steps"], strict=True)):
        assert result == want["result"], (index, got.steps)
        check_rows(f"step {index}", rows, want.get("log", []), values)
    if "setup" in expect:
        check_rows("set up job", got.setup, expect["setup"], values)
    if "complete" in expect:
        check_rows("complete job", got.complete, expect["complete"], values)
    assert got.outputs == {k: substitute(str(v), values)
                           for k, v in (expect.get("outputs") or {}).items()}


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
