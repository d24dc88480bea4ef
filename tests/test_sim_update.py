"""UpdateTask and UpdateLog as protocol.md §8 describes the server side."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from scheduler.sim import Result, Simulator
from tests.support.sim import Rpc, final_state, ids_of, running_sim


def rows(*lines: str) -> list[dict[str, str]]:
    return [{"time": "2026-04-01T10:00:00.5Z", "content": line} for line in lines]


async def start_task(sim: Simulator, rpc: Rpc) -> int:
    sim.instances[rpc.name].add_job()
    (task_id,) = ids_of(await rpc.fetch())
    return task_id


async def log(rpc: Rpc, task_id: int, index: int, lines: list[str], no_more: bool = False) -> Any:
    body: dict[str, Any] = {"taskId": str(task_id), "index": str(index), "rows": rows(*lines)}
    if no_more:
        body["noMore"] = True
    return await rpc.ok("UpdateLog", body)


async def test_update_log_ack_semantics() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        task_id = await start_task(sim, rpc)
        task = sim.instances["a"].tasks[task_id]
        assert await log(rpc, task_id, 0, []) == {}  # ack 0 is omitted
        assert await log(rpc, task_id, 0, ["l0", "l1", "l2"]) == {"ackIndex": "3"}
        # a resend of stored rows changes nothing
        assert await log(rpc, task_id, 0, ["l0", "l1", "l2"]) == {"ackIndex": "3"}
        assert await log(rpc, task_id, 1, ["l1"]) == {"ackIndex": "3"}
        # overlap: only the rows past the ack are appended
        assert await log(rpc, task_id, 2, ["l2", "l3", "l4"]) == {"ackIndex": "5"}
        # a gap is refused by answering the current ack
        assert await log(rpc, task_id, 7, ["l7"]) == {"ackIndex": "5"}
        # an empty batch with noMore does not archive
        assert await log(rpc, task_id, 5, [], no_more=True) == {"ackIndex": "5"}
        assert not task.log_archived
        assert await log(rpc, task_id, 5, ["l5"], no_more=True) == {"ackIndex": "6"}
        assert task.log_archived
        assert task.log_lines == ["l0", "l1", "l2", "l3", "l4", "l5"]
        assert task.log_rows[0].time == dt.datetime(2026, 4, 1, 10, 0, 0, 500000, dt.UTC)
        # after archiving: resends are still acknowledged, new rows are refused
        assert await log(rpc, task_id, 4, ["l4", "l5"]) == {"ackIndex": "6"}
        resp = await rpc.call(
            "UpdateLog", {"taskId": str(task_id), "index": "6", "rows": rows("l6")}
        )
        assert resp.status_code == 409
        assert resp.json() == {"code": "already_exists", "message": "log file has been archived"}
        assert len(task.log_rows) == 6


async def test_update_log_for_unknown_or_foreign_task_is_internal() -> None:
    async with running_sim("a", "b") as sim, httpx.AsyncClient() as client:
        a, b = Rpc(sim, client, "a"), Rpc(sim, client, "b")
        task_b = await start_task(sim, b)
        for task_id in (999, task_b):  # ids are unique across instances
            resp = await a.call("UpdateLog", {"taskId": str(task_id), "rows": rows("x")})
            assert resp.status_code == 500 and resp.json()["code"] == "internal"
            resp = await a.call("UpdateTask", final_state(task_id))
            assert resp.status_code == 500 and resp.json()["code"] == "internal"
        assert sim.instances["b"].tasks[task_b].log_rows == []


async def test_update_task_heartbeat_then_final() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        task_id = await start_task(sim, rpc)
        version = inst.tasks_version
        beat = {
            "state": {
                "id": task_id,  # a number is fine too
                "startedAt": "2026-04-01T10:00:00Z",
                "steps": [
                    {"id": "0", "result": "RESULT_SUCCESS", "logIndex": "0", "logLength": "3"},
                    {"id": "1", "startedAt": "2026-04-01T10:00:02Z", "logIndex": "3"},
                ],
            },
            "outputs": {"k": "v"},
        }
        got = await rpc.ok("UpdateTask", beat)
        assert got == {"state": {"id": str(task_id)}, "sentOutputs": ["k"]}
        task = inst.tasks[task_id]
        assert [s.status for s in task.steps] == ["RESULT_SUCCESS", "running"]
        assert (task.steps[0].log_index, task.steps[0].log_length) == (0, 3)
        assert sim.ledger.finished_count == 0 and inst.tasks_version == version
        got = await rpc.ok(
            "UpdateTask",
            {
                "state": {**final_state(task_id)["state"], "result": 1},
                "outputs": {"k": "changed", "k2": "w", "x" * 256: "too long key"},
            },
        )
        # first value wins, oversized keys are dropped; sentOutputs lists all stored keys
        assert got == {
            "state": {"id": str(task_id), "result": "RESULT_SUCCESS"},
            "sentOutputs": ["k", "k2"],
        }
        assert task.outputs == {"k": "v", "k2": "w"}
        got = await rpc.ok("UpdateTask", final_state(task_id))
        assert got["sentOutputs"] == ["k", "k2"]
        assert task.result is Result.SUCCESS
        assert task.stopped_at == dt.datetime(2026, 4, 1, 10, 1, tzinfo=dt.UTC)
        assert inst.tasks_version == version + 1
        # every UpdateTask is recorded, in order
        assert [u.result for u in task.updates] == [
            Result.UNSPECIFIED,
            Result.SUCCESS,
            Result.SUCCESS,
        ]
        assert task.updates[0].steps[1].started_at == dt.datetime(
            2026, 4, 1, 10, 0, 2, tzinfo=dt.UTC
        )
        snap = sim.ledger.statistics()
        assert snap.finished == 1 and snap.lost == 0 and snap.outstanding == 0
        assert snap.results == {"RESULT_SUCCESS": 1}


async def test_done_task_is_not_changed_by_later_updates() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        task_id = await start_task(sim, rpc)
        await rpc.ok("UpdateTask", final_state(task_id, "RESULT_FAILURE"))
        got = await rpc.ok("UpdateTask", final_state(task_id, "RESULT_SUCCESS"))
        assert got["state"]["result"] == "RESULT_FAILURE"
        assert sim.instances["a"].tasks[task_id].result is Result.FAILURE
        assert sim.ledger.tasks[task_id].result is Result.FAILURE
        assert sim.ledger.duplicate_executions == 0  # final retries are not duplicates


async def test_cancel_reaches_the_runner_in_the_next_update_task_answer() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        task_id = await start_task(sim, rpc)
        await rpc.ok(
            "UpdateTask",
            {"state": {"id": str(task_id), "steps": [{"id": "0", "result": "RESULT_SUCCESS"}]}},
        )
        assert inst.cancel_task(task_id)
        assert not inst.cancel_task(task_id)
        assert [s.status for s in inst.tasks[task_id].steps] == [
            "RESULT_SUCCESS",
            "RESULT_CANCELLED",
        ]
        got = await rpc.ok("UpdateTask", {"state": {"id": str(task_id)}})
        assert got["state"] == {"id": str(task_id), "result": "RESULT_CANCELLED"}
        # The runner acknowledges with its own final report; the server keeps CANCELLED.
        got = await rpc.ok("UpdateTask", final_state(task_id, "RESULT_CANCELLED"))
        assert got["state"]["result"] == "RESULT_CANCELLED"
        snap = sim.ledger.statistics()
        assert snap.cancelled == 1 and snap.finished == 1 and snap.lost == 0
        assert snap.duplicate_executions == 0
        assert sim.ledger.tasks[task_id].runner_final


async def test_cancel_a_waiting_job() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        inst = sim.instances["a"]
        job = inst.add_job()
        assert inst.cancel_job(job) and not inst.cancel_job(job)
        assert "task" not in await Rpc(sim, client).fetch()
