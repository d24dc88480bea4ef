"""The real service, run from a config file, alone or wired to the simulator.

:func:`running_service` runs a service from any config; :func:`world` is the one
"simulator + real service" of the tests: the simulator on loopback, a config file
pointing at it (and at any other servers), the service started from that file. How a
world ends is chosen with ``end``:

* ``"abort"`` (default): running tasks are cancelled and reported, if the test did not
  stop the service itself;
* ``"drain"``: a graceful stop, after which no connection may hold a slot;
* ``"crash"``: the service is just cancelled, as if the process had been killed; a
  second ``world`` over the same ``home`` and ``sim`` is the restart (its key store and
  state are where the first left them).

The subprocess variant, for a real ``kill -9`` or real signals, is
:func:`daemon_world`: the simulator and a config for it, and as many daemons started
one after the other on that config (and so on the same state directory) as the test
wants.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import attrs
import trio

from scheduler.config import ConnectionSettings, load_config
from scheduler.executor import Executor
from scheduler.executor.simulated import SimulatedExecutor
from scheduler.keys import on_the_event_loop
from scheduler.protocol import RunnerClient
from scheduler.service import ClientFactory, Service
from scheduler.sim import InstanceSpec, Simulator
from tests.support.config import Duration, sim_config
from tests.support.daemon import Daemon
from tests.support.polling import wait_for
from tests.support.sim import running_sim

End = Literal["abort", "drain", "crash"]


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


#: ``executor=DEFAULT_EXECUTOR``: the executor the service builds itself (the host
#: executor, as ``run`` uses), instead of the tests' simulated one.
DEFAULT_EXECUTOR: Literal["default"] = "default"


@asynccontextmanager
async def running_service(
    config: Path,
    *,
    executor: Executor | Literal["default"] | None = None,
    client_factory: ClientFactory | None = None,
    seed: int = 3,
    crash: bool = False,
) -> AsyncIterator[Service]:
    """A service from ``config``, started, with a :class:`SimulatedExecutor` unless told
    otherwise. On exit it is aborted (running tasks cancelled and reported) if the test
    did not stop it; with ``crash`` it is just cancelled, as if the process had been
    killed."""
    kw: dict[str, Any] = {} if client_factory is None else {"client_factory": client_factory}
    if executor != DEFAULT_EXECUTOR:
        kw["executor"] = executor or SimulatedExecutor()
    # Virtual time in most tests: state files are written inline (scheduler.keys).
    service = Service(load_config(config), seed=seed, disk_write=on_the_event_loop, **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        if not crash and service.phase != "stopped":
            service.abort()
            await wait_for(lambda: service.phase == "stopped")
        nursery.cancel_scope.cancel()


@attrs.frozen
class World:
    """The simulator, the service wired to it, the service's executor, its config file."""

    sim: Simulator
    service: Service
    executor: Executor
    config: Path

    def __iter__(self) -> Iterator[Any]:
        """``async with world(...) as (sim, service, executor)``."""
        return iter((self.sim, self.service, self.executor))


@asynccontextmanager
async def world(
    home: Path | None,
    specs: Sequence[InstanceSpec | str] = (),
    *,
    capacity: int,
    sim: Simulator | None = None,
    seed: int = 7,
    connect: Iterable[str] | None = None,
    tuning: Mapping[str, Mapping[str, object]] | None = None,
    others: Mapping[str, Mapping[str, object]] | None = None,
    fetch_interval: Duration = "1s",
    fetch_timeout: Duration = "30s",
    shutdown_timeout: Duration = "10m",
    runner_extra: Mapping[str, object] | None = None,
    metrics: str | None = "127.0.0.1:0",
    labels: Iterable[str] = ("sim:host",),
    executor: Executor | Literal["default"] | None = None,
    client_factory: ClientFactory | None = None,
    service_seed: int = 3,
    end: End = "abort",
) -> AsyncIterator[World]:
    """The simulator (``specs`` with ``seed``, or ``sim`` if it is already serving) and a
    service connected to its instances ``connect`` (all by default) and to ``others``,
    from ``home/config.toml`` with its state in ``home/state`` (``home=None``: a fresh
    tmpfs directory, for services whose key stores fsync often). See the module
    docstring for ``end``."""
    async with AsyncExitStack() as stack:
        if home is None:
            home = Path(stack.enter_context(fast_tmpdir()))
        if sim is None:
            sim = await stack.enter_async_context(running_sim(*specs, seed=seed))
        config = sim_config(
            home, sim, capacity=capacity, connect=connect, tuning=tuning, others=others,
            labels=labels, fetch_interval=fetch_interval, fetch_timeout=fetch_timeout,
            shutdown_timeout=shutdown_timeout, metrics=metrics, runner_extra=runner_extra,
        )
        if executor is None:
            executor = SimulatedExecutor()
        async with running_service(config, executor=executor, client_factory=client_factory,
                                   seed=service_seed, crash=end == "crash") as service:
            yield World(sim, service, service.executor, config)
            if end == "drain":
                service.request_stop()
                await wait_for(lambda: service.phase == "stopped")
                for conn in service.config.connections:
                    assert service.ledger.held(conn.name) == 0, conn.name


@attrs.frozen
class DaemonWorld:
    """The simulator and a config for it; :meth:`start` runs a daemon on that config."""

    sim: Simulator
    config: Path
    nursery: trio.Nursery

    async def start(self, *args: str) -> Daemon:
        """One more ``forgejo-scheduler run`` (a restart, after a kill), with more
        options ``args``, once it serves."""
        daemon = Daemon(self.config, args)
        await daemon.start(self.nursery)
        return daemon


@asynccontextmanager
async def daemon_world(
    home: Path,
    specs: Sequence[InstanceSpec | str] = (),
    *,
    capacity: int,
    seed: int = 7,
    fetch_interval: Duration = "1s",
    runner_extra: Mapping[str, object] | None = None,
) -> AsyncIterator[DaemonWorld]:
    """The simulator (``specs`` with ``seed``) and ``home/config.toml`` for all its
    instances, with the metrics server on (a daemon announces its address, and
    :meth:`Daemon.start` waits for that). Daemons still running at the end are killed."""
    async with running_sim(*specs, seed=seed) as sim, trio.open_nursery() as nursery:
        config = sim_config(home, sim, capacity=capacity, fetch_interval=fetch_interval,
                            metrics="127.0.0.1:0", runner_extra=runner_extra)
        yield DaemonWorld(sim, config, nursery)
        nursery.cancel_scope.cancel()
