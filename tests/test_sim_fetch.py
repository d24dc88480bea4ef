"""FetchTask as protocol.md §5 describes it: versions, capacity, labels, the Task message,
Forgejo 15 replay by request key, Forgejo 14 ignoring it, FetchSingleTask."""

from __future__ import annotations

import httpx
import pytest
import trio
import yaml

from scheduler.sim import FaultPlan, InstanceSpec, Simulator
from tests.support.sim import Rpc, ids_of, payload_of, running_sim, tasks_of


async def test_empty_queue_answers_a_nonzero_version_and_cheap_polls() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        got = await rpc.fetch()
        assert got == {"tasksVersion": "1"}  # never 0, no task key
        assert await rpc.fetch(version=1) == {"tasksVersion": "1"}
        # adding a job bumps the version, so the client's old version gets a real query
        inst.add_job()
        assert inst.tasks_version == 2
        got = await rpc.fetch(version=1)
        assert got["tasksVersion"] == "2" and "task" in got
        assert sim.ledger.assigned_count == 1


async def test_cheap_poll_does_not_look_at_the_queue() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        inst.add_job()
        version = inst.tasks_version
        # A client claiming the latest version gets nothing, although a job waits.
        assert await rpc.fetch(version=version) == {"tasksVersion": str(version)}
        assert len(inst.waiting_jobs) == 1
        assert "task" in await rpc.fetch(version=0)


async def test_task_message_contents() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        sim.instances["a"].add_job(duration=0.4)
        task = (await rpc.fetch())["task"]
        task_id = int(task["id"])
        assert isinstance(task["id"], str)
        workflow = yaml.safe_load(payload_of(task))
        (job,) = workflow["jobs"].values()
        assert job["runs-on"] == ["sim"]
        assert [s["run"] for s in job["steps"]] == [f'echo "task {task_id} on a"', "sleep 0.4"]
        ctx = task["context"]
        token = ctx["token"]
        assert len(token) == 40
        for key in (
            "forgejo_default_actions_url",
            "gitea_default_actions_url",
            "repository",
            "run_id",
            "event_name",
            "event",
            "sha",
            "ref",
            "actor",
        ):
            assert key in ctx, key
        assert ctx["server_url"] == sim.base_url("a")
        assert {
            k: task["secrets"][k] for k in ("GITHUB_TOKEN", "GITEA_TOKEN", "FORGEJO_TOKEN")
        } == {
            "GITHUB_TOKEN": token,
            "GITEA_TOKEN": token,
            "FORGEJO_TOKEN": token,
        }
        assert task["vars"] == {"SIM_INSTANCE": "a"}


async def test_custom_workflow_secrets_and_vars() -> None:
    workflow = "on: push\njobs:\n  t:\n    runs-on: sim\n    steps:\n      - run: exit 3\n"
    async with running_sim() as sim, httpx.AsyncClient() as client:
        inst = sim.instances["a"]
        job = inst.add_job(workflow=workflow, secrets={"S": "x"}, vars={"V": "y"})
        task = (await Rpc(sim, client).fetch())["task"]
        assert payload_of(task) == workflow
        assert task["secrets"]["S"] == "x" and task["vars"]["V"] == "y"
        sim_task = inst.task_for_job(job)
        assert sim_task is not None and len(sim_task.steps) == 1


async def test_capacity_returns_up_to_n_tasks_absent_means_one() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        for _ in range(5):
            inst.add_job()
        one = await rpc.fetch()
        assert len(tasks_of(one)) == 1 and "additionalTasks" not in one
        three = await rpc.fetch(capacity=3)
        assert len(tasks_of(three)) == 3 and len(three["additionalTasks"]) == 2
        rest = await rpc.fetch(capacity=10)  # fewer waiting than asked
        assert len(tasks_of(rest)) == 1
        assert sorted(ids_of(one) + ids_of(three) + ids_of(rest)) == list(range(1, 6))
        assert sim.ledger.assigned_count == 5 and sim.ledger.delivered_count == 5


async def test_every_runs_on_label_must_match() -> None:
    async with running_sim(InstanceSpec("a", labels=("sim", "linux:host"))) as sim:
        async with httpx.AsyncClient() as client:
            rpc = Rpc(sim, client)
            inst = sim.instances["a"]
            gpu = inst.add_job(runs_on=("sim", "gpu"))
            linux = inst.add_job(runs_on=("sim", "linux"))
            got = await rpc.fetch(capacity=5)
            assert ids_of(got) == [inst.task_for_job(linux).id]  # type: ignore[union-attr]
            assert [j.id for j in inst.waiting_jobs] == [gpu]
            inst.add_job(runs_on=())  # empty runs-on never matches
            assert "task" not in await rpc.fetch(capacity=5)


async def test_forgejo15_replays_the_tasks_recorded_under_a_key() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        for _ in range(4):
            inst.add_job()
        first = await rpc.fetch(capacity=2, key="K1")
        ids = ids_of(first)
        assert len(ids) == 2
        # Same key again: the same tasks, fresh tokens, tasks_version 0 (key omitted),
        # capacity and tasks_version of the retry ignored, nothing new assigned.
        again = await rpc.fetch(version=first_version(first), capacity=1, key="K1")
        assert ids_of(again) == ids
        assert "tasksVersion" not in again
        for old, new in zip(tasks_of(first), tasks_of(again), strict=True):
            assert old["context"]["token"] != new["context"]["token"]
            assert new["secrets"]["FORGEJO_TOKEN"] == new["context"]["token"]
            assert payload_of(old) == payload_of(new)
        assert sim.ledger.assigned_count == 2 and len(inst.waiting_jobs) == 2
        # Re-delivered, counted as such; only a second start would be a second execution.
        assert sim.ledger.statistics().redelivered == 2
        assert sim.ledger.duplicate_executions == 0
        # A key that recorded nothing behaves like a fresh request and records new tasks.
        fresh = await rpc.fetch(key="K2")
        assert len(ids_of(fresh)) == 1
        assert ids_of(await rpc.fetch(key="K2")) == ids_of(fresh)


def first_version(answer: dict[str, str]) -> int:
    return int(answer.get("tasksVersion", "0"))


async def test_forgejo15_empty_answer_records_nothing_under_the_key() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        assert "task" not in await rpc.fetch(key="K")
        sim.instances["a"].add_job()
        assert len(ids_of(await rpc.fetch(key="K"))) == 1


async def test_keys_are_scoped_to_the_runner() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        inst = sim.instances["a"]
        rpc = Rpc(sim, client)
        anon = Rpc(sim, client, auth=False)
        reg = await anon.ok(
            "Register", {"name": "r2", "token": inst.registration_token, "labels": ["sim"]}
        )
        other = Rpc(sim, client, auth=False)
        other.headers = {
            "x-runner-uuid": reg["runner"]["uuid"],
            "x-runner-token": reg["runner"]["token"],
        }
        inst.add_job()
        assert len(ids_of(await rpc.fetch(key="K"))) == 1
        assert "task" not in await other.fetch(key="K")


async def test_forgejo14_ignores_the_key_so_a_dropped_task_is_lost() -> None:
    spec = InstanceSpec("a", forgejo14=True, faults=FaultPlan(drop_after_assign=1.0))
    async with running_sim(spec) as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        inst.add_job()
        inst.add_job()
        with pytest.raises(httpx.TransportError):
            await rpc.call("FetchTask", {"tasksVersion": "0"}, key="K")
        inst.set_faults(FaultPlan())
        got = await rpc.fetch(key="K")
        (second,) = ids_of(got)
        assert second != 1 and sim.ledger.assigned_count == 2
        assert inst.tasks[1].request_key is None
        await rpc.ok("UpdateTask", {"state": {"id": str(second), "result": "RESULT_SUCCESS"}})
        snap = sim.ledger.statistics()
        assert snap.assigned == 2 and snap.delivered == 1 and snap.finished == 1
        assert snap.lost == 1 and snap.outstanding == 1


async def test_fetch_single_task_with_handle_and_recovery() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        inst.add_job()
        wanted = inst.add_job()
        handle = inst.jobs[wanted].handle
        got = await rpc.ok("FetchSingleTask", {"tasksVersion": "0", "handle": handle}, key="S")
        assert got["task"]["id"] == str(inst.task_for_job(wanted).id)  # type: ignore[union-attr]
        assert got["tasksVersion"] == str(inst.tasks_version)
        again = await rpc.ok("FetchSingleTask", {"tasksVersion": "0"}, key="S")
        assert again["task"]["id"] == got["task"]["id"] and "tasksVersion" not in again
        assert "task" not in await rpc.ok("FetchSingleTask", {"handle": "nope"})
        # a key that recorded several tasks cannot be recovered by FetchSingleTask
        inst.add_job()
        inst.add_job()
        await rpc.fetch(capacity=2, key="M")
        resp = await rpc.call("FetchSingleTask", {}, key="M")
        assert resp.status_code == 500
        assert resp.json() == {
            "code": "internal",
            "message": "cannot recover 2 tasks because runner requested only one",
        }


async def test_jobs_can_be_queued_before_serving() -> None:
    sim = Simulator(["a"])
    job = sim.instances["a"].add_job()
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve, "127.0.0.1", 0)
        async with httpx.AsyncClient() as client:
            got = await Rpc(sim, client).fetch()
        assert ids_of(got) == [sim.instances["a"].task_for_job(job).id]  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()
