"""A raw loopback HTTP/1.1 server: one request per connection, and the handler writes
whatever bytes it likes (or nothing, ever), which httpx-based servers cannot do.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


@attrs.frozen
class RawRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def rpc(self) -> str:
        """The last path segment: ``FetchTask``, ``Declare``..."""
        return self.path.rsplit("/", 1)[-1]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}


RawHandler = Callable[[Stream, RawRequest], Awaitable[None]]


async def read_request(stream: Stream) -> RawRequest | None:
    """One request (head and a content-length body), or None if the client went away."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        body += chunk
    return RawRequest(method, path, headers, body)


def http_response(
    status: int,
    body: bytes,
    ctype: str | None = "application/json",
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A complete response that closes the connection (so every request is a new one)."""
    head = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}", "connection: close"]
    if ctype is not None:
        head.append(f"content-type: {ctype}")
    head += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def send_json(stream: Stream, doc: object, status: int = 200) -> None:
    await stream.send_all(http_response(status, json.dumps(doc).encode()))


async def serve_raw(
    handler: RawHandler,
    *,
    port: int = 0,
    ssl_context: Any = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on 127.0.0.1 (over TLS with ``ssl_context``), one request per
    connection; the handler writes whatever bytes it likes (or nothing, ever)."""

    async def conn(sock: trio.SocketStream) -> None:
        stream: Stream = sock
        try:
            if ssl_context is not None:
                stream = trio.SSLStream(sock, ssl_context, server_side=True)
                await stream.do_handshake()
            req = await read_request(stream)
            if req is not None:
                await handler(stream, req)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away (timeout, TLS refused): its business
        finally:
            with trio.CancelScope(shield=True):
                await sock.aclose()

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(conn, listeners)
