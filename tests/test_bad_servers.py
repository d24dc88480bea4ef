"""Bad servers: one connection talks to a misbehaving Forgejo, the other to the simulator.

Each case runs the whole service on a MockClock, over real loopback sockets, for a few
virtual minutes and checks four things:

* **bounded wait**: every exchange with the bad server ends within ``fetch_timeout``
  (30 s), whatever the server does (checked on the fetch-duration histogram, or on the
  server's side when no FetchTask gets that far);
* **a metric**: ``fetch_requests_total{outcome=...}`` (or ``connection_up`` when the
  connection never gets past Declare) counts what happened;
* **one log line per state change**: "down" once (after three failed exchanges in a
  row, or at once when refused) and "up" once when the server heals, however many
  probes there were in between; ``connection_up`` follows;
* **the other connection keeps its pickup latency**: a job queued on the healthy
  instance is picked up within one fetch interval (1 s ± 10 %), as with no bad server.

TLS failures (plain HTTP behind https://, a self-signed certificate) are in
``test_tls.py``, with the same checks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

import attrs
import pytest
import trio
import trio.testing

from scheduler.errors import OversizedAnswer, TransportFailure
from scheduler.protocol import RunnerClient
from scheduler.service import Service
from tests.support.fake_forgejo import FakeForgejo, fake_connection
from tests.support.logs import lines
from tests.support.metrics import metric
from tests.support.pickup import FETCH_TIMEOUT, PICKUP, beside_fine, declared, pickup_latencies
from tests.support.polling import wait_for
from tests.support.rawhttp import RawRequest, Stream, serve_raw


def fetches(service: Service, outcome: str, name: str = "bad") -> float:
    return metric(service, "fetch_requests_total", connection=name, outcome=outcome)


# --- FetchTask never answered, or answered badly ---------------------------------------


async def never_answer(stream: Stream, req: RawRequest) -> None:
    """Read the request, then nothing: the server black-holes the call."""
    await trio.sleep_forever()


async def trickle(stream: Stream, req: RawRequest) -> None:
    """A valid answer, one byte per second: each read is quick, the whole is not."""
    body = b'{"tasksVersion":"5"}'.ljust(1000)
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                          b"content-length: 1000\r\nconnection: close\r\n\r\n")
    for byte in body:
        await stream.send_all(bytes([byte]))
        await trio.sleep(1)


async def wrong_content_type(stream: Stream, req: RawRequest) -> None:
    body = b"<html><body>Please log in</body></html>"
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n"
                          b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)


async def oversized(stream: Stream, req: RawRequest) -> None:
    """Declares 100 MiB (the client's limit is 64 MiB) and starts sending them."""
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                          b"content-length: 104857600\r\nconnection: close\r\n\r\n")
    await stream.send_all(b" " * 65536)
    await trio.sleep_forever()


async def throttled(stream: Stream, req: RawRequest) -> None:
    body = b'{"code":"resource_exhausted","message":"too many requests"}'
    await stream.send_all(b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)


@attrs.define
class Timed:
    """Wraps a FetchTask behaviour; records how long each exchange kept the client, from
    the request to the answer's end or the client hanging up, whichever comes first."""

    behaviour: Callable[[Stream, RawRequest], Awaitable[None]]
    held_for: list[float] = attrs.field(factory=list)

    async def __call__(self, stream: Stream, req: RawRequest) -> None:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def until_hangup() -> None:
                try:
                    while await stream.receive_some(65536):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()

            async def answer() -> None:
                try:
                    await self.behaviour(stream, req)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_hangup)
            nursery.start_soon(answer)
        self.held_for.append(trio.current_time() - start)


FETCH_CASES: dict[str, tuple[Callable[[Stream, RawRequest], Awaitable[None]], str, str]] = {
    # connection: (FetchTask behaviour, outcome label, what the log line says)
    "blackholed": (never_answer, "timeout", "no answer within 30s"),
    "trickling": (trickle, "timeout", "no answer within 30s"),
    "html": (wrong_content_type, "error", "content type 'text/html'"),
    "oversized": (oversized, "error", "oversized"),
    "throttled": (throttled, "throttled", "resource_exhausted"),
}


async def test_five_bad_fetch_answers_at_once_are_bounded_counted_logged_and_isolated(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    """Five connections whose FetchTask is black-holed, trickled, answered in HTML,
    oversized or throttled, beside a healthy one, six slots: each bad one keeps its key
    and at most its share (one slot) in doubt, and the healthy one picks up as usual."""
    caplog.set_level(logging.INFO, logger="scheduler")
    fakes = {name: FakeForgejo(uuid=f"uuid-{name}") for name in FETCH_CASES}
    async with trio.open_nursery() as servers:
        conns = {}
        for name, fake in fakes.items():
            port = await servers.start(serve_raw, fake.handle)
            conns[name] = fake_connection(fake, port)
        async with beside_fine(conns, capacity=6) as w:
            await wait_for(lambda: all(declared(w.service, n) for n in fakes))
            timed = {name: Timed(FETCH_CASES[name][0]) for name in fakes}
            for name, fake in fakes.items():
                fake.fetch = timed[name]
            await trio.sleep(5)
            latencies = await pickup_latencies(w, jobs=6)
            await trio.sleep(60)  # about two minutes of bad answers in all
            for name, (_, outcome, _) in FETCH_CASES.items():
                loop = w.service.loops[name]
                assert loop.phase.value in ("fetching", "unresolved"), name
                assert loop.pending is not None, name
                assert w.service.ledger.reserved(name) <= 1, name  # its share, no more
                attempts = fetches(w.service, outcome, name)
                assert attempts >= 3, (name, attempts)
                # Each exchange ended by the 30 s timeout, whatever the server did.
                assert max(timed[name].held_for) <= FETCH_TIMEOUT + 0.01, name
                # Three failed exchanges in a row: down, whatever the key's fate.
                assert metric(w.service, "connection_up", connection=name) == 0, name
            for fake in fakes.values():
                fake.fetch = None  # the servers heal
            await wait_for(lambda: all(w.service.loops[n].pending is None for n in fakes),
                           within=120)
        servers.cancel_scope.cancel()
    for name, (_, _, says) in FETCH_CASES.items():
        warnings = lines(caplog, f"connection {name}: FetchTask outcome unknown")
        assert len(warnings) == 1 and says in warnings[0], (name, warnings)
        resolved = lines(caplog, f"connection {name}: request key resolved", logging.INFO)
        assert len(resolved) == 1, name
        down = lines(caplog, f"connection {name}: down")
        assert len(down) == 1 and says in down[0], (name, down)
        # Up once at the first Declare, once when it healed.
        assert len(lines(caplog, f"connection {name}: up", logging.INFO)) == 2, name
    assert max(latencies) <= PICKUP, latencies


async def test_unknown_fetch_outcome_is_logged_once_per_state_change(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scheduler")
    fake = FakeForgejo()
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_raw, fake.handle)
        async with beside_fine({"bad": fake_connection(fake, port)}, fine=False) as w:
            await wait_for(lambda: declared(w.service))
            fake.fetch = wrong_content_type
            await trio.sleep(300)
            attempts = fetches(w.service, "error")
            fake.fetch = None
            await wait_for(lambda: w.service.loops["bad"].pending is None)
        servers.cancel_scope.cancel()
    assert attempts >= 5
    assert len(lines(caplog, "connection bad: FetchTask outcome unknown")) == 1


# --- the whole server gone: black hole, refused ---------------------------------------


@attrs.define
class BlackHole:
    """Accepts TCP connections and never answers (reads, to notice the client leave)."""

    held_for: list[float] = attrs.field(factory=list)

    async def handler(self, stream: trio.SocketStream) -> None:
        start = trio.current_time()
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        self.held_for.append(trio.current_time() - start)

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.handler, listeners)


async def free_port() -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    return port


async def test_unreachable_servers_black_holed_or_refusing_for_minutes(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    """Three unreachable servers beside a healthy one:

    * ``hole`` accepts and never answers, from the start: down once, probed with
      Declare (each probe ends at the 30 s timeout), holds no slot;
    * ``refused`` refuses connections for three minutes from the start: down once,
      then up once when it listens again;
    * ``gone`` declares, then refuses for three minutes: its FetchTask fails at once
      (no wait), the key and its slot are kept, the key resolves when it is back; it
      is down after three failures and up again when the key resolves.
    """
    caplog.set_level(logging.INFO, logger="scheduler")
    hole, refused, gone = BlackHole(), FakeForgejo(uuid="uuid-r"), FakeForgejo(uuid="uuid-g")
    refused_port, gone_port = await free_port(), await free_port()
    async with trio.open_nursery() as servers:
        hole_port = await servers.start(hole.serve)
        gone_scope = trio.CancelScope()

        async def gone_for_a_while(*, task_status: trio.TaskStatus[int]) -> None:
            with gone_scope:
                await serve_raw(gone.handle, port=gone_port, task_status=task_status)

        await servers.start(gone_for_a_while)
        conns: dict[str, dict[str, object]] = {
            "hole": {"url": f"http://127.0.0.1:{hole_port}", "uuid": "u", "token": "b1ack" * 8},
            "refused": fake_connection(refused, refused_port),
            "gone": fake_connection(gone, gone_port),
        }
        async with beside_fine(conns, capacity=4) as w:
            await wait_for(lambda: declared(w.service, "gone"))
            gone_scope.cancel()  # its port now refuses connections
            await wait_for(lambda: fetches(w.service, "error", "gone") >= 1)
            latencies = await pickup_latencies(w, jobs=6)
            await trio.sleep(180 - trio.current_time())
            service = w.service
            assert metric(service, "connection_up", connection="hole") == 0
            assert metric(service, "connection_up", connection="refused") == 0
            assert service.ledger.held("hole") == service.ledger.held("refused") == 0
            assert fetches(service, "timeout", "hole") == 0  # probed with Declare only
            assert fetches(service, "error", "gone") >= 5
            assert service.loops["gone"].pending is not None
            assert service.ledger.reserved("gone") >= 1
            assert metric(service, "connection_up", connection="gone") == 0
            await servers.start(partial(serve_raw, refused.handle, port=refused_port))
            await servers.start(partial(serve_raw, gone.handle, port=gone_port))
            await wait_for(lambda: service.loops["gone"].pending is None and metric(
                service, "connection_up", connection="refused") == 1, within=120)
            fine = w.sim.instances["fine"]
            job = fine.add_job(duration=1)
            await wait_for(lambda: fine.task_for_job(job) is not None)
        servers.cancel_scope.cancel()
    assert len(hole.held_for) >= 4
    assert max(hole.held_for) <= FETCH_TIMEOUT + 0.1, hole.held_for
    down = lines(caplog, "connection hole: down")
    assert len(down) == 1 and "no answer within 30s" in down[0]
    down = lines(caplog, "connection refused: down")
    assert len(down) == 1 and "Connection refused" in down[0], down
    assert len(lines(caplog, "connection refused: up", logging.INFO)) == 1
    unknown = lines(caplog, "connection gone: FetchTask outcome unknown")
    assert len(unknown) == 1 and "Connection refused" in unknown[0], unknown
    assert len(lines(caplog, "connection gone: request key resolved", logging.INFO)) == 1
    down = lines(caplog, "connection gone: down")
    assert len(down) == 1 and "Connection refused" in down[0], down
    assert len(lines(caplog, "connection gone: up", logging.INFO)) == 2  # declared, back
    assert max(latencies) <= PICKUP, latencies


# --- the client's own limits, at their real defaults ----------------------------------


async def test_answer_larger_than_the_default_limit_is_cut_off() -> None:
    """A chunked answer without a length, streamed past the client's 64 MiB limit: the
    client stops reading at the limit instead of buffering whatever comes. (Real clock:
    with the sockets' buffers full, a MockClock would jump to the client's timeout.)"""
    sent = [0]

    async def endless(stream: Stream, req: RawRequest) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                              b"transfer-encoding: chunked\r\n\r\n")
        chunk = b"100000\r\n" + b" " * 0x100000 + b"\r\n"  # 1 MiB chunks
        while True:
            await stream.send_all(chunk)
            sent[0] += 0x100000

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_raw, endless)
        async with RunnerClient(f"http://127.0.0.1:{port}", uuid="u", token="t",
                                timeout=FETCH_TIMEOUT, verify=False) as client:
            with pytest.raises(TransportFailure) as info:
                await client.fetch_task(tasks_version=0, task_capacity=1, request_key="k")
        nursery.cancel_scope.cancel()
    assert isinstance(info.value, OversizedAnswer) and "67108864" in str(info.value)
    assert sent[0] < 80 * 0x100000  # it stopped reading (the socket buffers hold a few MiB)
