"""The Connect client against real loopback servers that misbehave in chosen ways."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio

from scheduler.errors import (
    ConnectError,
    MalformedAnswer,
    OversizedAnswer,
    RpcTimeout,
    TransportBroken,
    TransportFailure,
)
from scheduler.protocol import RunnerClient

Handler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


async def serve(handler: Handler, *, task_status: trio.TaskStatus[int]) -> None:
    async def conn(stream: trio.SocketStream) -> None:
        async with stream:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            while len(body) < length:
                body += await stream.receive_some(65536)
            await handler(stream, head)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(conn, listeners)


def reply(status: int, body: bytes, ctype: str = "application/json") -> Handler:
    async def handler(stream: trio.SocketStream, head: bytes) -> None:
        await stream.send_all(
            f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n".encode() + body
        )

    return handler


async def client_for(nursery: trio.Nursery, handler: Handler, **kw: object) -> RunnerClient:
    port = await nursery.start(partial(serve, handler))
    return RunnerClient(f"http://127.0.0.1:{port}/sub/", uuid="u", token="t0ken", timeout=5, **kw)  # type: ignore[arg-type]


async def test_request_shape(nursery: trio.Nursery) -> None:
    seen: list[bytes] = []

    async def handler(stream: trio.SocketStream, head: bytes) -> None:
        seen.append(head)
        await reply(200, b'{"tasksVersion":"3"}')(stream, head)

    async with await client_for(nursery, handler) as client:
        resp = await client.fetch_task(tasks_version=2, task_capacity=3, request_key="key-1")
    assert resp.tasks == () and resp.tasks_version == 3
    head = seen[0].decode().lower()
    assert head.startswith("post /sub/api/actions/runner.v1.runnerservice/fetchtask http/1.1")
    for header in ("x-runner-uuid: u", "x-runner-token: t0ken", "x-runner-request-key: key-1",
                   "content-type: application/json", "connect-protocol-version: 1"):
        assert header in head


@pytest.mark.parametrize(
    ("status", "body", "ctype", "code", "unknown"),
    [
        (401, b'{"code":"unauthenticated","message":"unregistered runner"}', "application/json",
         "unauthenticated", False),
        (503, b"<html>bad gateway</html>", "text/html", "unavailable", True),
        (500, b'{"code":"internal","message":"db"}', "application/json", "internal", True),
        (404, b"", "text/plain", "unimplemented", False),
        (429, b"", "text/plain", "unavailable", True),
        (400, b'{"code":"invalid_argument"}', "application/json", "invalid_argument", False),
    ],
)
async def test_connect_errors(
    nursery: trio.Nursery, status: int, body: bytes, ctype: str, code: str, unknown: bool
) -> None:
    async with await client_for(nursery, reply(status, body, ctype)) as client:
        with pytest.raises(ConnectError) as info:
            await client.fetch_task(tasks_version=0, task_capacity=1, request_key="k")
    assert info.value.code == code and info.value.outcome_unknown is unknown
    assert "t0ken" not in str(info.value)


@pytest.mark.parametrize(
    ("handler_body", "ctype", "kind"),
    [
        (b"not json", "application/json", MalformedAnswer),
        (b"[1,2]", "application/json", MalformedAnswer),
        (b'{"task":{"id":"x"}}', "application/json", MalformedAnswer),
        (b"{}", "text/html", MalformedAnswer),
    ],
)
async def test_malformed_answers_are_unknown_outcomes(
    nursery: trio.Nursery, handler_body: bytes, ctype: str, kind: type[TransportFailure]
) -> None:
    async with await client_for(nursery, reply(200, handler_body, ctype)) as client:
        with pytest.raises(TransportFailure) as info:
            await client.fetch_task(tasks_version=0, task_capacity=1, request_key="k")
    assert type(info.value) is kind and info.value.outcome_unknown


async def chunked_huge(stream: trio.SocketStream, head: bytes) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                          b"transfer-encoding: chunked\r\n\r\n")
    for _ in range(50):
        await stream.send_all(b"2710\r\n" + b" " * 10000 + b"\r\n")


@pytest.mark.parametrize("handler", [reply(200, b" " * 200_000), chunked_huge])
async def test_oversized_answer(nursery: trio.Nursery, handler: Handler) -> None:
    client = await client_for(nursery, handler, max_response_bytes=100_000)
    async with client:
        with pytest.raises(TransportFailure) as info:
            await client.fetch_task(tasks_version=0, task_capacity=1, request_key="k")
    assert isinstance(info.value, OversizedAnswer)


async def test_dropped_connection_is_transport_failure(nursery: trio.Nursery) -> None:
    async def drop(stream: trio.SocketStream, head: bytes) -> None:
        return  # read the request, close without a response

    async with await client_for(nursery, drop) as client:
        with pytest.raises(TransportFailure) as info:
            await client.fetch_task(tasks_version=0, task_capacity=1, request_key="k")
    assert isinstance(info.value, TransportBroken)


async def test_trickling_server_is_bounded_as_a_whole(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def trickle(stream: trio.SocketStream, head: bytes) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                              b"content-length: 1000\r\n\r\n")
        for _ in range(1000):
            await stream.send_all(b" ")
            await trio.sleep(1)  # each read is quick; the whole call is not

    async with await client_for(nursery, trickle) as client:
        with pytest.raises(TransportFailure) as info:
            await client.fetch_task(tasks_version=0, task_capacity=1, request_key="k")
    assert isinstance(info.value, RpcTimeout)


async def test_connection_refused() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    async with RunnerClient(f"http://127.0.0.1:{port}", uuid="u", token="t", timeout=5) as client:
        with pytest.raises(TransportFailure) as info:
            await client.update_log(1, 0, (), True)
    assert isinstance(info.value, TransportBroken)


@pytest.mark.parametrize(
    ("cls", "prefix"),
    [
        (RpcTimeout, "timeout"),
        (TransportBroken, "transport"),
        (MalformedAnswer, "malformed"),
        (OversizedAnswer, "oversized"),
    ],
)
def test_transport_failures_keep_their_message_prefix(
    cls: type[TransportFailure], prefix: str
) -> None:
    exc = cls("FetchTask: detail")
    assert str(exc) == f"{prefix}: FetchTask: detail" and exc.detail == "FetchTask: detail"
    assert isinstance(exc, TransportFailure) and exc.outcome_unknown
