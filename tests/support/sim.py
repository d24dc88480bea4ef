"""The simulator running on loopback, and a plain-httpx RPC caller for the simulator tests.

Deliberately no use of ``scheduler.protocol``: these tests pin the simulator to
protocol.md with hand-written JSON, independently of the client codec.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from scheduler.sim import InstanceSpec, Simulator

RUNNER = "runner.v1.RunnerService"


@asynccontextmanager
async def running_sim(*specs: InstanceSpec | str, seed: int = 1) -> AsyncIterator[Simulator]:
    """A simulator with ``specs`` (one instance ``a`` by default), serving on loopback."""
    sim = Simulator(specs or ("a",), seed=seed)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve, "127.0.0.1", 0)
        try:
            yield sim
        finally:
            nursery.cancel_scope.cancel()


class Rpc:
    """Calls one instance's RPCs as the pre-provisioned runner (or anonymous)."""

    def __init__(
        self, sim: Simulator, client: httpx.AsyncClient, name: str = "a", *, auth: bool = True
    ) -> None:
        self.sim = sim
        self.client = client
        self.name = name
        inst = sim.instances[name]
        self.headers = (
            {"x-runner-uuid": inst.runner.uuid, "x-runner-token": inst.runner.token} if auth else {}
        )

    def url(self, method: str, service: str = RUNNER) -> str:
        return f"{self.sim.base_url(self.name)}/api/actions/{service}/{method}"

    async def call(
        self,
        method: str,
        body: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        service: str = RUNNER,
        http_timeout: float | None = 10.0,
    ) -> httpx.Response:
        hdrs = {"content-type": "application/json", **self.headers, **(headers or {})}
        if key is not None:
            hdrs["x-runner-request-key"] = key
        return await self.client.post(
            self.url(method, service), json=dict(body or {}), headers=hdrs, timeout=http_timeout
        )

    async def ok(self, method: str, body: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        resp = await self.call(method, body, **kw)
        assert resp.status_code == 200, (resp.status_code, resp.text)
        return resp.json()

    async def fetch(self, version: int = 0, capacity: int | None = None, **kw: Any) -> Any:
        body: dict[str, Any] = {"tasksVersion": str(version)}
        if capacity is not None:
            body["taskCapacity"] = str(capacity)
        return await self.ok("FetchTask", body, **kw)


def tasks_of(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    first = [answer["task"]] if "task" in answer else []
    return first + list(answer.get("additionalTasks", []))


def ids_of(answer: Mapping[str, Any]) -> list[int]:
    return [int(t["id"]) for t in tasks_of(answer)]


def payload_of(task: Mapping[str, Any]) -> str:
    return base64.b64decode(task["workflowPayload"]).decode()


def final_state(task_id: int, result: str = "RESULT_SUCCESS") -> dict[str, Any]:
    return {
        "state": {
            "id": str(task_id),
            "result": result,
            "startedAt": "2026-04-01T10:00:00Z",
            "stoppedAt": "2026-04-01T10:01:00Z",
        }
    }
