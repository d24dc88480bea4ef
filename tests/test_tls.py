"""TLS: verification on by default, ``ca_file`` with a throwaway CA, ``insecure``, failures.

The simulator speaks plain HTTP; here it sits behind a small TLS-terminating proxy on
loopback whose certificate comes from a ``trustme`` CA made for the test. Everything
else is the real service with its real client (``default_client``: httpx with the
``ssl_context`` the config asks for).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
import trustme

from scheduler.config import config_warnings, load_config
from scheduler.protocol import ssl_context
from scheduler.sim import Simulator
from tests.support.config import sim_connection, write_config
from tests.support.fake_forgejo import FakeForgejo, fake_connection
from tests.support.harness import running_service, world
from tests.support.logs import lines
from tests.support.metrics import metric
from tests.support.pickup import PICKUP, beside_fine, declared, pickup_latencies
from tests.support.polling import wait_for
from tests.support.rawhttp import serve_raw
from tests.support.sim import running_sim


@attrs.define
class TlsProxy:
    """TLS in front of a plain TCP port; counts handshakes that failed."""

    context: ssl.SSLContext
    target: int
    failed_handshakes: int = 0

    async def _pump(self, src: trio.abc.Stream, dst: trio.abc.Stream,
                    scope: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    async def _handle(self, sock: trio.SocketStream) -> None:
        tls = trio.SSLStream(sock, self.context, server_side=True)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.failed_handshakes += 1
            await sock.aclose()
            return
        upstream = await trio.open_tcp_stream("127.0.0.1", self.target)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, tls, upstream, nursery.cancel_scope)
            nursery.start_soon(self._pump, upstream, tls, nursery.cancel_scope)
        await upstream.aclose()
        with trio.CancelScope(shield=True):
            await sock.aclose()

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def rogue_ca() -> trustme.CA:
    """A CA nobody was told about: its certificates are as good as self-signed."""
    return trustme.CA()


@asynccontextmanager
async def sim_behind_tls(ctx: ssl.SSLContext) -> AsyncIterator[tuple[Simulator, str]]:
    """The simulator with instance ``a``, and the https:// URL of ``a`` through the proxy."""
    async with running_sim("a", seed=3) as sim, trio.open_nursery() as nursery:
        assert sim.address is not None
        proxy = TlsProxy(ctx, sim.address[1])
        proxy_port = await nursery.start(proxy.serve)
        yield sim, f"https://127.0.0.1:{proxy_port}/a"
        nursery.cancel_scope.cancel()


def test_verification_is_on_by_default(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {
        "a": {"url": "https://forgejo.example", "uuid": "u", "token": "t0ken-t0ken"}},
        capacity=1)
    (conn,) = load_config(config).connections
    assert (conn.ca_file, conn.insecure) == (None, False)
    default = ssl_context(None, False)  # verifies against httpx's CA bundle (certifi)
    assert isinstance(default, ssl.SSLContext) and default.verify_mode == ssl.CERT_REQUIRED
    assert ssl_context(None, False) is default  # one context shared by every connection
    assert ssl_context(None, True) is False


async def test_ca_file_trusts_a_throwaway_ca_for_a_whole_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, ca: trustme.CA,
) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    async with sim_behind_tls(server_context(ca)) as (sim, url):
        tuning = {"a": {"url": url, "ca_file": str(tmp_path / "ca.pem")}}
        async with world(tmp_path, sim=sim, capacity=2, tuning=tuning,
                         metrics=None) as (_, service, _):
            assert config_warnings(service.config) == []
            job = sim.instances["a"].add_job(duration=2)
            await wait_for(lambda: sim.ledger.statistics().finished == 1)
            service.request_stop()
            await wait_for(lambda: service.phase == "stopped")
    task = sim.instances["a"].task_for_job(job)
    assert task is not None and task.result is not None and task.result.name == "SUCCESS"
    assert metric(service, "connection_up", connection="a") == 1


async def test_insecure_skips_verification_and_says_so(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, rogue_ca: trustme.CA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scheduler")
    async with sim_behind_tls(server_context(rogue_ca)) as (sim, url):
        tuning = {"a": {"url": url, "insecure": True}}
        async with world(tmp_path, sim=sim, capacity=1, tuning=tuning,
                         metrics=None) as (_, service, _):
            sim.instances["a"].add_job(duration=1)
            await wait_for(lambda: sim.ledger.statistics().finished == 1)
            service.request_stop()
            await wait_for(lambda: service.phase == "stopped")
    warned = lines(caplog, "connections.a: insecure = true")
    assert warned == [f"connections.a: insecure = true: TLS certificates of {url} "
                      "are not verified"]


async def test_tls_failures_are_down_once_and_do_not_delay_the_others(
    autojump_clock: trio.testing.MockClock, rogue_ca: trustme.CA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``selfsigned``: a certificate from a CA the config does not name (no ca_file);
    ``plaintext``: an https:// URL on a server that speaks plain HTTP. Both are down
    from their first Declare, logged once, hold no slot, keep being probed (each probe
    fails at once), and the healthy connection's pickup latency does not move."""
    caplog.set_level(logging.INFO, logger="scheduler")
    # plain: a real HTTP/1.1 server, answers 400
    async with running_sim("p", seed=9) as plain, trio.open_nursery() as servers:
        fake = FakeForgejo(uuid="uuid-s")
        fake_port = await servers.start(serve_raw, fake.handle)
        proxy = TlsProxy(server_context(rogue_ca), fake_port)
        proxy_port = await servers.start(proxy.serve)
        bad = {
            "selfsigned": fake_connection(fake, proxy_port, scheme="https"),
            "plaintext": sim_connection(plain, "p"),
        }
        bad["plaintext"]["url"] = plain.base_url("p").replace("http://", "https://")
        async with beside_fine(bad, capacity=3) as w:
            await trio.sleep(5)
            latencies = await pickup_latencies(w, jobs=6)
            await trio.sleep(180 - trio.current_time())
            for name in bad:
                assert metric(w.service, "connection_up", connection=name) == 0, name
                assert w.service.ledger.held(name) == 0, name
                assert not declared(w.service, name)
        servers.cancel_scope.cancel()
    assert proxy.failed_handshakes >= 4  # probed again and again, each time refused
    assert plain.instances["p"].rpc_counts == {}  # nothing ever got through as a request
    assert plain.http.connections_accepted >= 4
    down = lines(caplog, "connection selfsigned: down")
    assert len(down) == 1 and "CERTIFICATE_VERIFY_FAILED" in down[0], down
    down = lines(caplog, "connection plaintext: down")
    assert len(down) == 1 and "SSL" in down[0], down
    assert max(latencies) <= PICKUP, latencies


async def test_a_ca_file_that_does_not_load_fails_closed_for_its_connection_only(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, ca: trustme.CA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found here: ssl.create_default_context raised inside the connection's task and
    took the whole service down. Now that connection verifies against nothing (fails
    closed, logged), check-config and the start-up log warn, and the others run."""
    caplog.set_level(logging.INFO, logger="scheduler")
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    async with sim_behind_tls(server_context(ca)) as (sim, url):
        async with running_sim("b", seed=4) as plain:
            tuning = {"a": {"url": url, "ca_file": str(tmp_path / "broken.pem")}}
            others = {"b": sim_connection(plain, "b")}
            async with world(tmp_path, sim=sim, capacity=2, tuning=tuning, others=others,
                             metrics=None) as (_, service, _):
                job = plain.instances["b"].add_job(duration=1)
                await wait_for(lambda: plain.ledger.statistics().finished == 1)
                await wait_for(lambda: metric(service, "connection_up", connection="a") == 0)
                service.request_stop()
                await wait_for(lambda: service.phase == "stopped")
    assert plain.instances["b"].task_for_job(job) is not None
    assert sim.instances["a"].rpc_counts == {}
    assert any("broken.pem cannot be loaded" in m for m in lines(caplog, "ca_file", logging.ERROR))
    assert any("ca_file" in m and "cannot be loaded as PEM" in m
               for m in lines(caplog, "connections.a:"))
    down = lines(caplog, "connection a: down")
    assert len(down) == 1 and "CERTIFICATE_VERIFY_FAILED" in down[0]


async def test_raw_server_over_tls_with_ca_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, ca: trustme.CA,
) -> None:
    """The raw test server speaks TLS too: the client verifies it with the private CA."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    fake = FakeForgejo()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_raw, fake.handle,
                                           ssl_context=server_context(ca)))
        conn = fake_connection(fake, port, scheme="https", ca_file=str(tmp_path / "ca.pem"))
        config = write_config(tmp_path / "config.toml", {"a": conn}, capacity=1)
        async with running_service(config) as service:
            await wait_for(lambda: fake.counts.get("FetchTask", 0) >= 2)
            assert metric(service, "connection_up", connection="a") == 1
        nursery.cancel_scope.cancel()
    assert all(h.get("x-runner-token") == fake.token for h in fake.headers_seen)
