"""The small HTTP server: ``/metrics``, ``/healthz``, ``/readyz``, served by hypercorn on trio.

Why hypercorn on the service's own trio loop (shared/reference/python-stack.md §4):
``prometheus_client.start_http_server`` would run a thread that serves the metrics
page on every path and reads health state from another thread; a raw h11 server would
make us own keep-alive, HEAD and slow-client handling. ``hypercorn.trio.serve`` runs
in the current ``trio.run``, reports its bound address, and installs no signal
handlers, so SIGTERM stays with the service.

The ASGI app is written by hand instead of using ``prometheus_client.make_asgi_app``
directly because that app asserts ``scope["type"] == "http"`` (hypercorn then logs
"ASGI Framework Lifespan error") and answers 200 on any path and any method.

Health semantics (shared/reference/anchors.md §4.5): ``/healthz`` is liveness (the
loops are alive; waiting for a slot or on a slow server is alive), ``/readyz`` is
readiness (config loaded, at least one connection declared). One unreachable Forgejo
is visible in ``forgejo_scheduler_connection_up``, never in the probes, so it cannot
get the whole runner restarted.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

log = logging.getLogger(__name__)


class _DropBanner(logging.Filter):
    """Drop hypercorn's "Running on ... (CTRL + C to quit)": wrong here (signals are
    ours) and redundant with the line ``serve_http`` logs itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on ")


# hypercorn's error log: its warnings and tracebacks reach the service's handlers.
_server_log = logging.getLogger(__name__ + ".server")
_server_log.addFilter(_DropBanner())

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Header = tuple[bytes, bytes]

ALLOWED_METHODS = ("GET", "HEAD")
_ALLOW = ", ".join(ALLOWED_METHODS).encode()
_JSON = b"application/json"


class HealthSource(Protocol):
    """What the probes ask; implemented by the service (cheap, synchronous, no I/O)."""

    def live(self) -> bool:
        """Loops alive (waiting for a slot or a slow server counts as alive)."""
        ...

    def ready(self) -> bool:
        """Config loaded and at least one connection has declared."""
        ...

    def status(self) -> Mapping[str, object]:
        """Small JSON-able detail for the probe body (no secrets)."""
        ...


def make_app(registry: CollectorRegistry, health: HealthSource) -> ASGIApp:
    """Build the ASGI app serving ``registry`` and the two probes of ``health``.

    Every route accepts GET and HEAD only (405 with ``Allow`` otherwise), mirroring
    GitLab runner's metrics server: the endpoints are read-only, and a scraper that
    POSTs is misconfigured and should be told so. Unknown paths get 404 rather than
    the metrics page, so a typo in a probe path fails loudly.
    """

    def metrics_response(headers: Mapping[bytes, bytes]) -> tuple[int, list[Header], bytes]:
        # choose_encoder picks OpenMetrics when the scraper asks for it, else text 0.0.4.
        encoder, content_type = choose_encoder(headers.get(b"accept", b"").decode("latin-1"))
        body: bytes = encoder(registry)
        out: list[Header] = [(b"content-type", content_type.encode())]
        if b"gzip" in headers.get(b"accept-encoding", b"").lower():
            body = gzip.compress(body)
            out.append((b"content-encoding", b"gzip"))
        out.append((b"vary", b"Accept, Accept-Encoding"))
        return 200, out, body

    def probe_response(ok_fn: Callable[[], bool], check: str) -> tuple[int, list[Header], bytes]:
        try:
            ok = bool(ok_fn())
            detail: Mapping[str, object] = health.status()
        except Exception:
            # A broken health source is a failed probe, not a 500 with a traceback.
            log.exception("health check %s raised", check)
            ok, detail = False, {"error": "health source raised"}
        status = 200 if ok else 503
        doc = {"status": "ok" if ok else "unavailable", "check": check, "detail": detail}
        return status, [(b"content-type", _JSON)], _json(doc)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            # e.g. a websocket upgrade: refuse it; nothing here speaks websocket.
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return

        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.lower(): v for k, v in scope.get("headers", [])}

        routes: dict[str, Callable[[], tuple[int, list[Header], bytes]]] = {
            "/metrics": lambda: metrics_response(headers),
            "/healthz": lambda: probe_response(health.live, "live"),
            "/readyz": lambda: probe_response(health.ready, "ready"),
        }
        route = routes.get(path)
        if route is None:
            status, out, body = 404, [(b"content-type", _JSON)], _json({"status": "not found"})
        elif method not in ALLOWED_METHODS:
            status, out = 405, [(b"content-type", _JSON), (b"allow", _ALLOW)]
            body = _json({"status": "method not allowed", "allow": list(ALLOWED_METHODS)})
        else:
            status, out, body = route()

        out.append((b"content-length", str(len(body)).encode()))
        out.append((b"cache-control", b"no-store"))
        await send({"type": "http.response.start", "status": status, "headers": out})
        # HEAD: same headers (including the GET body's length), no body.
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    return app


def _json(doc: Mapping[str, object]) -> bytes:
    # default=str: a status detail that is not JSON-able (a datetime, a Path) still renders.
    return json.dumps(doc, default=str, separators=(",", ":")).encode() + b"\n"


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown: nothing to set up, but hypercorn must hear back.

    Without this hypercorn logs "ASGI Framework Lifespan error, continuing without
    Lifespan support" on every start.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _display(host: str, port: int) -> str:
    """``host:port`` with IPv6 literals bracketed (``[::]:9464``), as in a URL."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _parse_bound(bind: str) -> tuple[str, int]:
    """``http://127.0.0.1:9464`` or ``http://[::1]:9464`` → (host, port)."""
    hostport = bind.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def _listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """Bind and listen ourselves instead of letting hypercorn do it from ``host:port``.

    Why: hypercorn binds inside its own nursery, so an occupied port surfaces as an
    ExceptionGroup, and the socket of a failed bind is left for the garbage
    collector (a ResourceWarning). Here a bad address is a plain ``OSError`` with
    nothing leaked. The name is resolved synchronously, once, at startup, exactly as
    hypercorn would (numeric addresses need no lookup at all).
    """
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # A restart may rebind at once while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(addr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_http(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` inside the current trio run until cancelled.

    Start it with ``await nursery.start(serve_http, app, host, port)``: the value is
    the bound ``(host, port)``, so ``port=0`` yields the real port (tests; and the
    log line an operator reads). A port in use raises ``OSError`` from ``start``.
    Cancellation closes the listener and every open connection; there is no
    graceful drain because scrapes are short and idempotent.

    Inside a container the host must be ``0.0.0.0`` (or ``::``): ``127.0.0.1`` there
    is the container's own loopback and Prometheus could not reach it.
    """
    config = Config()
    config.accesslog = None  # a scrape every 15 s per Prometheus is noise, not information
    config.errorlog = _server_log
    config.include_server_header = False
    config.graceful_timeout = 1.0

    # hypercorn adopts the descriptor (``fd://``, its documented bind syntax) and
    # closes it when it stops.
    fd = _listen_socket(host, port, config.backlog).detach()
    config.bind = [f"fd://{fd}"]
    started = False
    try:
        async with trio.open_nursery() as nursery:
            # Our ASGIApp is the generic ASGI 3 shape (as in Starlette); hypercorn's
            # stubs spell scopes and events as TypedDicts, which MutableMapping cannot
            # satisfy.
            framework = cast("ASGIFramework", app)
            binds: list[str] = await nursery.start(partial(serve, framework, config, mode="asgi"))
            started = True
            bound = _parse_bound(binds[0])
            log.debug("serving /metrics, /healthz, /readyz on http://%s", _display(*bound))
            task_status.started(bound)
    finally:
        if not started:
            # Cancelled (or failed) during hypercorn's startup, before it adopted the
            # descriptor: it is still only ours to close.
            with contextlib.suppress(OSError):
                os.close(fd)
