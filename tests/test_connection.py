"""scheduler.connection alone: the loop's transitions against a scripted client, its
statistics() and repr, and the outcome labels of failed fetches."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from scheduler.config import ConnectionSettings, RunnerSettings
from scheduler.connection import ConnectionLoop, Phase
from scheduler.errors import (
    ConnectError,
    MalformedAnswer,
    OversizedAnswer,
    RpcError,
    RpcTimeout,
    TransportBroken,
)
from scheduler.executor import Executor
from scheduler.fetch import POLL_GROWTH, POLL_HOLD, PollPace, classify
from scheduler.health import DOWN_AFTER, Health, ObservedClient
from scheduler.keys import KeyStore, PendingFetch, on_the_event_loop
from scheduler.metrics import Metrics
from scheduler.pool import SlotPool
from scheduler.protocol import FetchTaskResponse, Runner, RunnerClient, TaskState
from scheduler.slots import SlotLedger
from tests.support.logs import lines


class ScriptedClient:
    """Declare always works; each FetchTask waits for the test to say what it returns."""

    def __init__(self) -> None:
        self.send, self._receive = trio.open_memory_channel[FetchTaskResponse | RpcError](0)
        self.fetches: list[tuple[str, int, int]] = []  # (key, capacity, tasks_version)

    async def declare(self, version: str, labels: tuple[str, ...]) -> Runner:
        return Runner(uuid="u", labels=labels)

    async def fetch_task(
        self, *, tasks_version: int, task_capacity: int, request_key: str
    ) -> FetchTaskResponse:
        self.fetches.append((request_key, task_capacity, tasks_version))
        outcome = await self._receive.receive()
        if isinstance(outcome, RpcError):
            raise outcome
        return outcome


def make_loop(tmp_path: Path, client: ScriptedClient) -> ConnectionLoop:
    settings = ConnectionSettings(
        name="home", url="http://forgejo.invalid", uuid="u", token="t", token_source="config",
        labels=("debian:host",), max_slots=2, fetch_interval=5.0,
    )
    metrics = Metrics(capacity=2, connections=["home"], version="0")
    ledger = SlotLedger(2)
    ledger.add("home", settings.share)
    store = KeyStore(tmp_path, "home", disk_write=on_the_event_loop)
    store.load()
    return ConnectionLoop(
        settings=settings,
        runner=RunnerSettings(capacity=2, state_dir=tmp_path),
        client=cast(RunnerClient, client),
        pool=SlotPool(ledger, metrics),
        store=store,
        executor=cast(Executor, None),  # no task ever arrives here
        metrics=metrics,
        rng=random.Random(1),
    )


@asynccontextmanager
async def running(loop: ConnectionLoop) -> AsyncIterator[ConnectionLoop]:
    """``loop`` running (its first FetchTask in flight); cancelled on exit."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(loop.run, nursery)
        await trio.testing.wait_all_tasks_blocked()
        yield loop
        nursery.cancel_scope.cancel()


async def step(client: ScriptedClient, outcome: FetchTaskResponse | RpcError) -> None:
    """Answer the FetchTask in flight, then let the loop act on it."""
    await client.send.send(outcome)
    await trio.testing.wait_all_tasks_blocked()


async def test_unknown_outcome_keeps_key_and_slots_until_an_answer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    client = ScriptedClient()
    async with running(make_loop(tmp_path, client)) as loop:
        first = loop.statistics()
        assert first.phase is Phase.FETCHING and first.up and first.declared
        assert first.pending is not None and first.pending == loop.store.state.pending
        assert first.attempts == 1 and not first.unresolved

        await step(client, RpcTimeout("FetchTask: no answer within 30s"))
        doubt = loop.statistics()
        assert doubt.phase is Phase.UNRESOLVED and doubt.unresolved
        assert doubt.pending == first.pending  # the store still holds the same key
        assert doubt.last_error == "timeout: FetchTask: no answer within 30s"
        assert loop.pool.statistics().slots.connections["home"].reserved == 2

        await trio.sleep(120)  # past any backoff: the same key went out again
        assert client.fetches[1] == client.fetches[0]
        assert loop.statistics().attempts == 2

        await step(client, FetchTaskResponse(tasks=(), tasks_version=7))
        done = loop.statistics()
        assert done.phase is Phase.IDLE and done.pending is None and not done.unresolved
        assert done.tasks_version == 7 and done.last_error == ""
        assert loop.store.state.pending is None
        assert loop.pool.statistics().slots.connections["home"].reserved == 0

        loop.stop(trio.current_time())
        await trio.testing.wait_all_tasks_blocked()
        assert loop.statistics().phase is Phase.STOPPED and loop.statistics().stopping


async def test_refusal_drops_key_and_marks_down(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    client = ScriptedClient()
    async with running(make_loop(tmp_path, client)) as loop:
        await step(client, ConnectError("unauthenticated", "bad token", 401))
        down = loop.statistics()
        assert down.phase is Phase.DOWN and down.up is False
        assert down.pending is None and loop.store.state.pending is None
        assert down.last_error == "unauthenticated: bad token"
        assert loop.pool.statistics().slots.connections["home"].held == 0


async def test_retune_changes_settings_and_asks_for_a_new_declare(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, ScriptedClient())
    settings = loop.settings
    runner = RunnerSettings(capacity=2, state_dir=tmp_path, report_interval=9.0)
    loop.retune(settings, runner)
    assert loop.runner is runner and not loop.redeclare
    loop.retune(settings, runner, relabel=True)
    loop.retune(settings, runner)  # a later retune does not cancel a pending relabel
    assert loop.redeclare


async def test_repr_shows_name_phase_health_and_key(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, ScriptedClient())
    assert repr(loop) == "<ConnectionLoop home starting ?>"
    loop.health.up, loop.phase = False, Phase.UNRESOLVED
    key = PendingFetch.new(2, 0)
    await loop.store.set_pending(key)
    loop.doubt.attempts, loop.doubt.unresolved = 3, True
    assert repr(loop) == (
        f"<ConnectionLoop home unresolved down key {key.key[:8]}… for 2 (3 sent, in doubt)>"
    )


@pytest.mark.parametrize(
    ("exc", "label"),
    [
        (RpcTimeout("FetchTask: no answer within 30s"), "timeout"),
        (TransportBroken("FetchTask: ConnectError: refused"), "error"),
        (MalformedAnswer("FetchTask: invalid JSON"), "error"),
        (OversizedAnswer("answer larger than 10 bytes"), "error"),
        (ConnectError("unauthenticated", "x"), "unauthorized"),
        (ConnectError("permission_denied", "x"), "unauthorized"),
        (ConnectError("resource_exhausted", "x"), "throttled"),
        (ConnectError("unavailable", "HTTP 429", 429), "throttled"),
        (ConnectError("deadline_exceeded", "x"), "timeout"),
        (ConnectError("internal", "x"), "error"),
    ],
)
def test_classify_by_type(exc: RpcError, label: str) -> None:
    assert classify(exc) == label


async def test_down_after_three_failed_exchanges_and_up_again_one_line_each(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Health follows the exchanges, the fetch rules do not: the key stays the same and
    keeps its reservation while the connection is down."""
    caplog.set_level(logging.INFO, logger="scheduler")
    client = ScriptedClient()
    async with running(make_loop(tmp_path, client)) as loop:
        assert loop.up is True  # Declare worked
        gauge = loop.metrics.connection("home").up
        for n in range(1, DOWN_AFTER + 2):
            await step(client, TransportBroken("FetchTask: ConnectError: refused"))
            assert loop.up is (n < DOWN_AFTER), n
            assert gauge._value.get() == (1 if n < DOWN_AFTER else 0), n
            await trio.sleep(120)  # past the backoff: the same key goes out again
        assert len({f[0] for f in client.fetches}) == 1  # one key throughout
        assert loop.pool.statistics().slots.connections["home"].reserved == 2
        assert loop.statistics().last_error == "transport: FetchTask: ConnectError: refused"
        await step(client, FetchTaskResponse(tasks=(), tasks_version=1))
        assert loop.up is True and loop.pending is None
    down = lines(caplog, "connection home: down")
    assert down == ["connection home: down: transport: FetchTask: ConnectError: refused "
                    "(3 exchanges failed in a row)"]
    assert len(lines(caplog, "connection home: up", logging.INFO)) == 2  # Declare, back


async def test_task_reports_count_as_exchanges(autojump_clock: trio.testing.MockClock) -> None:
    """UpdateTask/UpdateLog through ObservedClient: failures count, a definite answer
    (the log was archived) is the server working."""
    metrics = Metrics(capacity=1, connections=["home"], version="0")
    health = Health("home", "http://forgejo.invalid", metrics.connection("home").up)
    health.succeeded()

    class Failing:
        async def update_task(self, state: TaskState, outputs: object = None) -> object:
            raise RpcTimeout("UpdateTask: no answer within 30s")

        async def update_log(self, task_id: int, index: int, rows: object, no_more: bool) -> int:
            raise ConnectError("already_exists", "log file has been archived")

    client = ObservedClient(cast(RunnerClient, Failing()), health)
    for _ in range(DOWN_AFTER - 1):
        with pytest.raises(RpcTimeout):
            await client.update_task(TaskState(id=1))
    with pytest.raises(ConnectError):
        await client.update_log(1, 0, (), True)
    assert health.up is True and health.failures == 0
    for _ in range(DOWN_AFTER):
        with pytest.raises(RpcTimeout):
            await client.update_task(TaskState(id=1))
    assert health.up is False
    assert health.last_error == "timeout: UpdateTask: no answer within 30s"


def test_poll_pace_holds_then_grows_to_the_ceiling_and_a_task_resets_it() -> None:
    pace, waits = PollPace(), []
    for _ in range(20):
        pace = pace.after(0, 2.0, 20.0)
        waits.append(pace.interval)
    assert waits[:POLL_HOLD] == [2.0] * POLL_HOLD
    assert waits[POLL_HOLD] == 2.0 * POLL_GROWTH
    assert waits == sorted(waits) and waits[-1] == 20.0
    assert pace.after(1, 2.0, 20.0) == PollPace(0, 2.0)
    assert PollPace().after(0, 5.0, 1.0).interval == 5.0  # never below fetch_interval


async def test_idle_polls_reuse_the_key_without_writing_and_back_off(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    client = ScriptedClient()
    async with running(make_loop(tmp_path, client)) as loop:  # fetch_interval 5 s, max 50 s
        answered_at = []
        for _ in range(POLL_HOLD + 6):
            await client.send.send(FetchTaskResponse(tasks=(), tasks_version=3))
            answered_at.append(trio.current_time())
            await trio.testing.wait_all_tasks_blocked()
        waits = [b - a for a, b in itertools.pairwise(answered_at)]
        assert all(4.5 <= w <= 5.5 for w in waits[:POLL_HOLD - 1])  # 5 s ± 10 % jitter
        assert waits[POLL_HOLD] > 5.5 * 1.2 and max(waits) <= 55
        # Every empty answer left the key unused on the server: it went out again,
        # without a write (the one write put it on disk before the first FetchTask).
        assert len({key for key, _, _ in client.fetches}) == 1
        assert loop.store.writes == 1
        assert KeyStore(tmp_path, "home").load().pending == PendingFetch(
            client.fetches[0][0], 2, 0)
