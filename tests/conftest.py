"""Shared test helpers: hypothesis profiles, raw loopback HTTP servers, a programmable
fake Forgejo, config files for arbitrary servers, and a running-service context.

Hypothesis profiles: ``ci`` (the default) keeps hypothesis' own example counts for the
tests that do not set one; ``soak`` (``HYPOTHESIS_PROFILE=soak``, see
``scripts/fuzz-soak.sh``) multiplies the counts of the fuzz tests, which size
themselves with :func:`examples`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from hypothesis import HealthCheck, settings

from scheduler.config import ConnectionSettings, load_config
from scheduler.errors import DecodeError
from scheduler.executor import Executor
from scheduler.executor.simulated import SimulatedExecutor
from scheduler.protocol import RunnerClient, UpdateTaskResponse
from scheduler.service import ClientFactory, Service

settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile(
    "soak",
    deadline=None,
    print_blob=True,
    max_examples=1000,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)

#: How much more the fuzz tests generate under the soak profile.
SOAK_FACTOR = 20 if PROFILE == "soak" else 1


def examples(n: int) -> int:
    """The example count of a fuzz test: ``n`` in CI, ``SOAK_FACTOR`` times more in a soak."""
    return n * SOAK_FACTOR


# --- a raw HTTP/1.1 server --------------------------------------------------------------

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


# --- a fake Forgejo ---------------------------------------------------------------------


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


# --- configs and a running service ------------------------------------------------------


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(
    path: Path,
    connections: Mapping[str, Mapping[str, object]],
    *,
    capacity: int,
    fetch_interval: str = "1s",
    fetch_timeout: str = "30s",
    shutdown_timeout: str = "10m",
    metrics: str | None = None,
    labels: Iterable[str] = ("sim:host",),
) -> Path:
    """A config for any servers. Each connection has ``url``, ``uuid`` and ``token``
    (written to a 0600 token file) or its own token key, plus any other keys.
    ``metrics=None`` disables the metrics server."""
    lines = [
        "[runner]",
        f"capacity = {capacity}",
        f"state_dir = {_toml(str(path.parent / 'state'))}",
        f"labels = {_toml(list(labels))}",
        f"fetch_interval = {_toml(fetch_interval)}",
        f"fetch_timeout = {_toml(fetch_timeout)}",
        f"shutdown_timeout = {_toml(shutdown_timeout)}",
        "",
        "[metrics]",
        f"listen = {_toml(metrics or '')}",
    ]
    for name, conn in connections.items():
        lines += ["", f"[connections.{name}]"]
        for key, value in conn.items():
            if key == "token":
                token_file = path.parent / f"{name}.token"
                fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(str(value))
                lines.append(f"token_file = {_toml(str(token_file))}")
            else:
                lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def sim_connection(sim: Any, name: str, **extra: object) -> dict[str, object]:
    inst = sim.instances[name]
    return {"url": sim.base_url(name), "uuid": inst.runner.uuid, "token": inst.runner.token,
            **extra}


def fake_connection(fake: FakeForgejo, port: int, scheme: str = "http",
                    **extra: object) -> dict[str, object]:
    return {"url": f"{scheme}://127.0.0.1:{port}", "uuid": fake.uuid, "token": fake.token,
            **extra}


@asynccontextmanager
async def running(
    config: Path,
    *,
    executor: Executor | None = None,
    client_factory: ClientFactory | None = None,
    crash: bool = False,
) -> AsyncIterator[Service]:
    """A service from ``config``, started. On exit it is aborted (running tasks cancelled
    and reported) if the test did not stop it; with ``crash`` it is just cancelled, as
    if the process had been killed."""
    kw: dict[str, Any] = {} if client_factory is None else {"client_factory": client_factory}
    service = Service(load_config(config), executor=executor or SimulatedExecutor(), seed=3,
                      **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        if not crash and service.phase != "stopped":
            service.abort()
            await wait_for(lambda: service.phase == "stopped")
        nursery.cancel_scope.cancel()


async def wait_for(
    predicate: Callable[[], bool], *, within: float = 3600.0, poll: float = 0.05
) -> None:
    """Poll a condition on the run's clock (MockClock in most tests). On a MockClock each
    poll is a wake-up of the run, so long waits poll coarsely."""
    with trio.fail_after(within):
        while not predicate():
            await trio.sleep(poll)


def plain_http_client(settings: ConnectionSettings, timeout: float) -> RunnerClient:
    """``default_client`` without loading the system trust store (60 ms per client):
    for http:// servers in tests that start many services."""
    return RunnerClient(settings.url, uuid=settings.uuid, token=settings.token,
                        timeout=timeout, verify=False)


def fast_tmpdir() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory on tmpfs when there is one: the key store fsyncs every
    write, which costs milliseconds on a disk and nothing on tmpfs."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None)


def metric(service: Service, name: str, **labels: str) -> float:
    value = service.metrics.registry.get_sample_value(f"forgejo_scheduler_{name}", labels)
    return value or 0.0
