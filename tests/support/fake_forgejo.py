"""A programmable fake Forgejo on the raw server: honest books for reports, scripted
FetchTask answers and report noise, for the tests of misbehaving servers."""

from __future__ import annotations

import json
from collections.abc import Mapping

import attrs

from scheduler.errors import DecodeError
from scheduler.protocol import UpdateTaskResponse
from tests.support.rawhttp import RawHandler, RawRequest, Stream, http_response, send_json


def _claimed_final(raw: bytes) -> tuple[int, str] | None:
    """(task id, result) when a raw UpdateTask answer states a final result, else None.

    Read with the runner's own decoder: what counts is what the runner understood (a
    result may be spelt ``"RESULT_SUCCESS"`` or ``1``, an id ``"42"`` or ``42``).
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    try:
        answer = UpdateTaskResponse.from_json(json.loads(body))
    except (ValueError, RecursionError, DecodeError):
        return None
    if not answer.result.is_final:
        return None
    return answer.task_id, f"RESULT_{answer.result.name}"


@attrs.define
class FakeForgejo:
    """A runner.v1 server whose FetchTask (and optionally report) answers are scripted.

    Declare always works; UpdateTask and UpdateLog keep honest books (an UpdateLog
    acknowledges the rows stored, like Forgejo) unless ``report_noise`` holds a raw
    answer to send instead (then nothing is stored). FetchTask sends ``fetch(stream,
    request)`` if set, else an empty answer.
    """

    uuid: str = "fake-runner-uuid"
    token: str = "fa4e0000fa4e0000fa4e0000fa4e0000fa4e0000"
    fetch: RawHandler | None = None
    report_noise: list[bytes] = attrs.field(factory=list)
    counts: dict[str, int] = attrs.field(factory=dict)
    final: dict[int, str] = attrs.field(factory=dict)
    rows: dict[int, list[str]] = attrs.field(factory=dict)
    headers_seen: list[Mapping[str, str]] = attrs.field(factory=list)

    async def handle(self, stream: Stream, req: RawRequest) -> None:
        rpc = req.rpc
        self.counts[rpc] = self.counts.get(rpc, 0) + 1
        self.headers_seen.append(req.headers)
        if req.headers.get("x-runner-token") != self.token:
            await send_json(stream, {"code": "unauthenticated", "message": "no"}, 401)
        elif rpc == "Declare":
            runner = {"id": "1", "uuid": self.uuid, "name": "fake", "version": "x"}
            await send_json(stream, {"runner": runner})
        elif rpc == "FetchTask":
            if self.fetch is None:
                await send_json(stream, {"tasksVersion": "1"})
            else:
                await self.fetch(stream, req)
        elif rpc in ("UpdateTask", "UpdateLog") and self.report_noise:
            noise = self.report_noise.pop(0)
            if rpc == "UpdateTask" and (claim := _claimed_final(noise)) is not None:
                # A server that tells the runner a task's final result keeps it in its
                # books (as Forgejo does): what it answers later must agree.
                self.final.setdefault(*claim)
            await stream.send_all(noise)
        elif rpc == "UpdateTask":
            state = req.json().get("state", {})
            task_id = int(state.get("id", "0"))
            result = state.get("result", "RESULT_UNSPECIFIED")
            if result != "RESULT_UNSPECIFIED":
                self.final.setdefault(task_id, result)
            server_view = self.final.get(task_id, "RESULT_UNSPECIFIED")
            await send_json(stream, {"state": {"id": str(task_id), "result": server_view}})
        elif rpc == "UpdateLog":
            body = req.json()
            task_id, index = int(body.get("taskId", "0")), int(body.get("index", "0"))
            stored = self.rows.setdefault(task_id, [])
            rows = [r.get("content", "") for r in body.get("rows", [])]
            if index <= len(stored):
                stored.extend(rows[len(stored) - index :])
            await send_json(stream, {"ackIndex": str(len(stored))})
        else:
            await stream.send_all(http_response(404, b"404 page not found\n", "text/plain"))


def fake_connection(fake: FakeForgejo, port: int, scheme: str = "http",
                    **extra: object) -> dict[str, object]:
    """A connection table (for :func:`tests.support.config.write_config`) to ``fake``."""
    return {"url": f"{scheme}://127.0.0.1:{port}", "uuid": fake.uuid, "token": fake.token,
            **extra}
