"""scheduler.http over real loopback HTTP: routes, methods, probes, lifespan, start and stop."""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from scheduler.config import Config, ConnectionSettings, MetricsSettings, RunnerSettings
from scheduler.connection import Phase
from scheduler.http import ASGIApp, Message, _json, _parse_bound, make_app, serve_http
from scheduler.keys import on_the_event_loop
from scheduler.metrics import Metrics
from scheduler.protocol import FetchTaskResponse, Runner
from scheduler.service import Service


class FakeHealth:
    """The input of the probes: flags the test flips."""

    def __init__(self) -> None:
        self.is_live = True
        self.is_ready = False
        self.broken = False

    def live(self) -> bool:
        if self.broken:
            raise RuntimeError("boom")
        return self.is_live

    def ready(self) -> bool:
        return self.is_ready

    def status(self) -> Mapping[str, object]:
        return {"phase": "running", "connections": {"home": {"up": True}}}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(capacity=4, connections=["home", "codeberg"], version="9.9.9")


@pytest.fixture
def health() -> FakeHealth:
    return FakeHealth()


@pytest.fixture
async def client(
    nursery: trio.Nursery, metrics: Metrics, health: FakeHealth
) -> AsyncIterator[httpx.AsyncClient]:
    host, port = await nursery.start(serve_http, make_app(metrics.registry, health), "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=5) as c:
        yield c


# --- /metrics -------------------------------------------------------------------------


async def test_metrics_get_serves_the_registry_as_prometheus_text(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    metrics.tasks_received_total.labels("home").inc(3)
    r = await client.get("/metrics", headers={"accept-encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "content-encoding" not in r.headers
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }
    assert samples[("forgejo_scheduler_tasks_received_total", (("connection", "home"),))] == 3
    assert samples[("forgejo_scheduler_tasks_received_total", (("connection", "codeberg"),))] == 0
    assert samples[("forgejo_scheduler_build_info", (("version", "9.9.9"),))] == 1
    assert "_created" not in r.text


async def test_metrics_are_gzipped_when_asked(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics", headers={"accept-encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    # httpx decoded it; the wire length is the compressed one
    assert int(r.headers["content-length"]) < len(r.content)
    assert gzip.decompress(gzip.compress(r.content)) == r.content
    assert "forgejo_scheduler_capacity_slots 4.0" in r.text


async def test_metrics_openmetrics_when_asked(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")
    assert "_created" not in r.text


async def test_metrics_head_has_headers_and_no_body(client: httpx.AsyncClient) -> None:
    identity = {"accept-encoding": "identity"}
    get = await client.get("/metrics", headers=identity)
    head = await client.head("/metrics", headers=identity)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == str(len(get.content))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
async def test_other_methods_get_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    r = await client.request(method, path, content=b"x=1")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert r.json()["status"] == "method not allowed"


@pytest.mark.parametrize("path", ["/", "/metrics/", "/favicon.ico", "/health", "/METRICS"])
async def test_unknown_paths_are_404_not_the_metrics_page(
    client: httpx.AsyncClient, path: str
) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"status": "not found"}
    assert "forgejo_scheduler" not in r.text


# --- probes ---------------------------------------------------------------------------


async def test_healthz_follows_live(client: httpx.AsyncClient, health: FakeHealth) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "ok"
    assert body["detail"] == {"phase": "running", "connections": {"home": {"up": True}}}

    health.is_live = False
    r = await client.get("/healthz")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"

    health.is_live = True
    assert (await client.get("/healthz")).status_code == 200


async def test_readyz_follows_ready_independently_of_live(
    client: httpx.AsyncClient, health: FakeHealth
) -> None:
    assert (await client.get("/readyz")).status_code == 503
    assert (await client.get("/healthz")).status_code == 200  # alive but not ready
    health.is_ready = True
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert (await client.head("/readyz")).status_code == 200


async def test_a_raising_health_source_fails_the_probe_not_the_server(
    client: httpx.AsyncClient, health: FakeHealth, caplog: pytest.LogCaptureFixture
) -> None:
    health.broken = True
    r = await client.get("/healthz")
    assert r.status_code == 503
    assert r.json()["detail"] == {"error": "health source raised"}
    assert "boom" not in r.text
    assert any("health check live raised" in rec.getMessage() for rec in caplog.records)
    assert (await client.get("/metrics")).status_code == 200


# --- lifespan -------------------------------------------------------------------------


async def test_served_app_speaks_lifespan_without_errors(
    nursery: trio.Nursery,
    metrics: Metrics,
    health: FakeHealth,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.CancelScope() as scope:
        host, port = await nursery.start(
            serve_http, make_app(metrics.registry, health), "127.0.0.1", 0
        )
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as c:
            assert (await c.get("/healthz")).status_code == 200
        scope.cancel()
    messages = [rec.getMessage() for rec in caplog.records]
    assert not [m for m in messages if "Lifespan" in m or "lifespan" in m], messages
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING], messages


async def test_lifespan_protocol_startup_then_shutdown(
    metrics: Metrics, health: FakeHealth
) -> None:
    app: ASGIApp = make_app(metrics.registry, health)
    inbox: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    with trio.fail_after(1):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# --- start and stop ---------------------------------------------------------------------


async def test_port_zero_reports_the_real_bound_port(
    nursery: trio.Nursery, metrics: Metrics, health: FakeHealth
) -> None:
    host, port = await nursery.start(serve_http, make_app(metrics.registry, health), "127.0.0.1", 0)
    assert host == "127.0.0.1"
    assert 0 < port < 65536
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_loopback_bind(
    nursery: trio.Nursery, metrics: Metrics, health: FakeHealth
) -> None:
    host, port = await nursery.start(serve_http, make_app(metrics.registry, health), "::1", 0)
    assert host == "::1" and port > 0
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"http://[::1]:{port}/healthz")).status_code == 200


async def test_cancellation_shuts_the_server_down_cleanly(
    metrics: Metrics, health: FakeHealth
) -> None:
    app = make_app(metrics.registry, health)
    async with httpx.AsyncClient(timeout=2) as idle_client, httpx.AsyncClient(timeout=2) as c:
        with trio.fail_after(5):  # a hang here is the failure, not a slow pass
            async with trio.open_nursery() as n:
                host, port = await n.start(serve_http, app, "127.0.0.1", 0)
                url = f"http://{host}:{port}/metrics"
                # an idle keep-alive connection stays open across the cancellation
                assert (await idle_client.get(url)).status_code == 200
                n.cancel_scope.cancel()
            # the nursery exited without an exception: nothing leaked out of hypercorn
        with pytest.raises(httpx.ConnectError):
            await c.get(url)
        with pytest.raises(httpx.TransportError):
            await idle_client.get(url)


async def test_server_can_restart_on_the_same_port(metrics: Metrics, health: FakeHealth) -> None:
    """A reload (or a quick restart) must not trip over a lingering socket."""
    app = make_app(metrics.registry, health)
    async with trio.open_nursery() as n:
        _, port = await n.start(serve_http, app, "127.0.0.1", 0)
        n.cancel_scope.cancel()
    async with trio.open_nursery() as n:
        _, again = await n.start(serve_http, app, "127.0.0.1", port)
        assert again == port
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 503
        n.cancel_scope.cancel()


async def test_occupied_port_fails_start_loudly(metrics: Metrics, health: FakeHealth) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with trio.open_nursery() as n:
            with pytest.raises(OSError) as info:
                await n.start(serve_http, make_app(metrics.registry, health), "127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


# With trio 0.35 / hypercorn 0.18, 0-6 checkpoints cancel before hypercorn reports
# started, 7+ after it; both sides must end with the socket closed exactly once.
@pytest.mark.parametrize("checkpoints", [0, 2, 4, 6, 7, 9])
async def test_cancelled_during_startup_leaks_no_socket(
    metrics: Metrics, health: FakeHealth, checkpoints: int
) -> None:
    """Cancelled at various points around startup: no descriptor left, port free again."""
    app = make_app(metrics.registry, health)
    port = _free_port()
    fds_before = _open_fds()
    async with trio.open_nursery() as n:

        async def cancel_soon() -> None:
            for _ in range(checkpoints):
                await trio.lowlevel.checkpoint()
            n.cancel_scope.cancel()

        n.start_soon(cancel_soon)
        await n.start(serve_http, app, "127.0.0.1", port)
        await trio.sleep_forever()
    assert _open_fds() == fds_before
    with socket.socket() as again:  # no SO_REUSEADDR: fails if anything still listens
        again.bind(("127.0.0.1", port))
        again.listen()


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("http://127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("http://0.0.0.0:1", ("0.0.0.0", 1)),
        ("http://[::1]:8080", ("::1", 8080)),
        ("http://[::]:9464", ("::", 9464)),
    ],
)
def test_parse_bound(bind: str, expected: tuple[str, int]) -> None:
    assert _parse_bound(bind) == expected


# --- the container's HEALTHCHECK ------------------------------------------------------


def _dockerfile_healthcheck() -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK, as a list."""
    text = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text(encoding="utf-8")
    joined = text.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if ln.startswith("HEALTHCHECK"))
    command: list[str] = json.loads(line.split(" CMD ", 1)[1])
    return command


async def test_dockerfile_healthcheck_command_follows_healthz(
    client: httpx.AsyncClient, health: FakeHealth
) -> None:
    """Run the image's HEALTHCHECK command itself against the live server (other port)."""
    command = _dockerfile_healthcheck()
    assert command[0] == "python3" and "http://127.0.0.1:9464/healthz" in command[-1]
    port = client.base_url.port
    argv = [sys.executable, *command[1:-1], command[-1].replace(":9464/", f":{port}/")]

    ok = await trio.run_process(argv, check=False, capture_stdout=True, capture_stderr=True)
    assert ok.returncode == 0, ok.stderr
    health.is_live = False
    down = await trio.run_process(argv, check=False, capture_stdout=True, capture_stderr=True)
    assert down.returncode != 0


# --- the service's detail: statistics() rendered to the /healthz keys ------------------


class _BlackHole:
    """A client whose Declare works and whose FetchTask never answers."""

    async def __aenter__(self) -> _BlackHole:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def declare(self, version: str, labels: tuple[str, ...]) -> Runner:
        return Runner(uuid="u", labels=labels)

    async def fetch_task(self, **_: object) -> FetchTaskResponse:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_service_status_renders_its_statistics(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    home = ConnectionSettings(
        name="home", url="http://forgejo.invalid", uuid="u", token="t", token_source="config",
        labels=("debian:host",), max_slots=2, fetch_interval=5.0,
    )
    config = Config(
        source=tmp_path / "config.toml",
        runner=RunnerSettings(capacity=2, state_dir=tmp_path),
        metrics=MetricsSettings(enabled=False),
        connections=(home,),
    )
    service = Service(config, client_factory=lambda settings, timeout: cast(Any, _BlackHole()),
                      disk_write=on_the_event_loop)  # virtual time: see scheduler.keys
    assert service.status() == {"phase": "starting", "capacity": 2, "free": 2, "connections": {}}
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        await trio.testing.wait_all_tasks_blocked()
        stats = service.statistics()
        assert stats.phase == "running" and stats.connections["home"].phase is Phase.FETCHING
        assert _json(service.status()) == (
            b'{"phase":"running","capacity":2,"free":0,"connections":{"home":{"phase":'
            b'"fetching","up":true,"running":0,"reserved":2,"last_error":null}}}\n'
        )
        assert repr(service) == "<Service running capacity 2 connections: home>"
        service.abort()
