"""A small HTTP/1.1 server on ``trio.serve_tcp`` + ``h11``, built for fault injection.

Why not hypercorn: an ASGI app cannot close or reset the TCP connection after doing its
work, nor tell whether the client already left. Here the handler returns either a
``Response`` or a ``Disconnect`` verdict (close without answer, RST, or stall until the
client gives up), and the server tells the caller, via ``Response.on_delivered``, whether
the response was completely written.

While a handler runs, a watcher reads the socket: a client that closes its end (timeout,
cancellation) is noticed at once, the handler is cancelled, and nothing is written.
That keeps "delivered" honest when an answer is delayed or stalled.

Keep-alive works as HTTP/1.1 wants it (httpx reuses connections); requests on one
connection are served one after the other.
"""

from __future__ import annotations

import contextlib
import enum
import gzip
import json
import socket
import struct
from collections.abc import Awaitable, Callable

import attrs
import h11
import trio

MAX_BODY = 32 * 1024 * 1024
_RECV = 65536


@attrs.frozen
class Request:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


@attrs.frozen
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    #: Called once the whole response has been handed to the kernel.
    on_delivered: Callable[[], None] | None = None


class Disconnect(enum.Enum):
    """Verdicts that end the connection without a response."""

    CLOSE = "close"  # orderly FIN, no response ("respond-then-drop" after work was done)
    RESET = "reset"  # RST via SO_LINGER 0
    STALL = "stall"  # never answer; wait until the client goes away


Handler = Callable[[Request], Awaitable[Response | Disconnect]]


class HttpServer:
    """Serves ``handler`` on each accepted connection; ``nursery.start(srv.serve, host, port)``."""

    def __init__(self, handler: Handler, *, gzip_min_bytes: int | None = 1024) -> None:
        self._handler = handler
        self._gzip_min = gzip_min_bytes
        self.connections_accepted = 0
        self.connections_open = 0
        self.errors: list[str] = []

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        sockname = listeners[0].socket.getsockname()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._serve_connection, listeners)
            task_status.started((str(sockname[0]), int(sockname[1])))

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        self.connections_accepted += 1
        self.connections_open += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                try:
                    request = await _read_request(conn, stream)
                except h11.RemoteProtocolError as exc:
                    await _send_simple(conn, stream, exc.error_status_hint, b"bad request\n")
                    return
                except _BodyTooLarge:
                    await _send_simple(conn, stream, 413, b"request body too large\n")
                    return
                if request is None:
                    return
                verdict, client_gone = await self._run_handler(request, conn, stream)
                if client_gone or verdict is None:
                    return
                if verdict is Disconnect.RESET:
                    with contextlib.suppress(OSError):
                        stream.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    return
                if isinstance(verdict, Disconnect):  # CLOSE (STALL ends as client_gone)
                    return
                if not await self._send_response(conn, stream, request, verdict):
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except (h11.LocalProtocolError, h11.RemoteProtocolError, OSError) as exc:
            # One broken connection must not take the whole server down; keep a trace.
            self.errors.append(repr(exc))
            return
        finally:
            self.connections_open -= 1
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.aclose()

    async def _run_handler(
        self, request: Request, conn: h11.Connection, stream: trio.SocketStream
    ) -> tuple[Response | Disconnect | None, bool]:
        """Run the handler while watching for the client to hang up; (verdict, client_gone)."""
        verdict: Response | Disconnect | None = None
        gone = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal gone
                while True:
                    try:
                        data = await stream.receive_some(_RECV)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    if not data:
                        gone = True
                        nursery.cancel_scope.cancel()
                        return
                    conn.receive_data(data)  # pipelined bytes: h11 keeps them for the next cycle

            nursery.start_soon(watch)
            try:
                verdict = await self._handler(request)
            except Exception as exc:  # a simulator bug must not kill the server
                verdict = Response(
                    500,
                    json.dumps({"code": "internal", "message": f"simulator: {exc!r}"}).encode(),
                )
            if verdict is Disconnect.STALL:
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()
        return verdict, gone

    async def _send_response(
        self, conn: h11.Connection, stream: trio.SocketStream, request: Request, resp: Response
    ) -> bool:
        body = resp.body
        headers = [("content-type", resp.content_type), *resp.headers]
        accepts_gzip = "gzip" in request.headers.get("accept-encoding", "")
        if self._gzip_min is not None and accepts_gzip and len(body) >= self._gzip_min:
            body = gzip.compress(body, mtime=0)
            headers.append(("content-encoding", "gzip"))
        headers.append(("content-length", str(len(body))))
        headers.append(("server", "forgejo-scheduler-sim"))
        data = conn.send(h11.Response(status_code=resp.status, headers=headers))
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        if resp.on_delivered is not None:
            resp.on_delivered()
        return True


class _BodyTooLarge(Exception):
    pass


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> Request | None:
    """Next full request on the connection, or None when the client closed it."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:  # curl does this for larger bodies
                await stream.send_all(
                    conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                )
            try:
                data = await stream.receive_some(_RECV)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _BodyTooLarge
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            headers: dict[str, str] = {}
            for name, value in head.headers:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            target = head.target.decode("latin-1")
            path = target.split("?", 1)[0]
            raw = bytes(body)
            if headers.get("content-encoding", "identity").strip().lower() == "gzip":
                try:
                    raw = gzip.decompress(raw)
                except (OSError, EOFError):
                    raw = b"\x00"  # undecodable; the JSON parser rejects it
            return Request(head.method.decode("ascii"), path, headers, raw)
        else:  # ConnectionClosed, PAUSED
            return None


async def _send_simple(
    conn: h11.Connection, stream: trio.SocketStream, status: int, body: bytes
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    with contextlib.suppress(h11.LocalProtocolError, trio.BrokenResourceError):
        data = conn.send(
            h11.Response(
                status_code=status,
                headers=[
                    ("content-type", "text/plain; charset=utf-8"),
                    ("content-length", str(len(body))),
                    ("connection", "close"),
                ],
            )
        )
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
