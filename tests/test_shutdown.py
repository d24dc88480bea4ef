"""A bounded, truthful shutdown, with the Forgejo down (the service against the simulator
over loopback, on trio's MockClock).

The promises (scheduler.service, scheduler.drain): with no running task a stop ends
within ``shutdown_resolve_timeout`` however dead the server is, a key still unresolved
stays on disk for the next start; final reports take at most ``shutdown_report_timeout``
each; a line every 10 s says what the stop waits for; the last line names what was not
acknowledged, and the exit status is 0 only when everything was.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from scheduler.drain import EXIT_NOT_ACKNOWLEDGED, StopReport
from scheduler.keys import KeyStore
from scheduler.service import Service
from scheduler.sim import FaultPlan, InstanceSpec
from tests.support.harness import world
from tests.support.logs import lines
from tests.support.metrics import metric
from tests.support.polling import wait_for

#: Every call of the runner fails: FetchTask and the task reports answer 503.
EVERYTHING_FAILS = FaultPlan(error_5xx=1.0, fail_update_log=1.0, fail_update_task=1.0)


async def stop_and_time(service: Service, *, abort_after: float | None = None) -> float:
    """request_stop (and abort ``abort_after`` seconds later); seconds until stopped."""
    t0 = trio.current_time()
    service.request_stop()
    if abort_after is not None:
        await trio.sleep(abort_after)
        service.abort()
    await wait_for(lambda: service.phase == "stopped", within=3600)
    return trio.current_time() - t0


def waiting(caplog: pytest.LogCaptureFixture) -> list[str]:
    return lines(caplog, "shutting down for ", logging.INFO)


async def test_no_running_task_and_a_black_holed_forgejo_stop_within_the_resolve_bound(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """FetchTask is never answered (a black hole): the key is in doubt. The stop retries
    it for shutdown_resolve_timeout (30 s), cutting the call in flight, then leaves it on
    disk: well inside systemd's 90 s, where it used to wait for shutdown_timeout (10 m)."""
    caplog.set_level(logging.INFO, logger="scheduler")
    black_hole = FaultPlan(stall_windows=((0.0, 1e9),))
    async with world(tmp_path, [InstanceSpec("a", faults=black_hole)], capacity=2) as (
        _, service, _,
    ):
        await wait_for(lambda: "a" in service.loops and service.loops["a"].doubt.unresolved)
        await trio.sleep(7)  # a retry of the key is in flight
        took = await stop_and_time(service)
    assert took <= 30 + 0.5
    report = service.stop_report
    assert report is not None and report.unresolved_keys == ("a",)
    assert report.exit_status == EXIT_NOT_ACKNOWLEDGED
    assert KeyStore(tmp_path / "state", "a").load().pending is not None  # for the next start
    progress = waiting(caplog)
    assert len(progress) == 3, progress  # at 10, 20 and 30 s at most
    assert "connection a (" in progress[0]
    assert "waiting for its request key, unresolved since" in progress[0]
    (last,) = lines(caplog, "stopped:", logging.ERROR)
    assert last == ("stopped: 0 final result(s) acknowledged; 1 request key(s) left "
                    "unresolved for the next start (a); exit status 3")


async def test_two_running_tasks_while_every_call_fails(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Two tasks run when Forgejo starts failing every call. At shutdown_timeout (5 s)
    they are cancelled; their final reports get shutdown_report_timeout (30 s) and are
    named as not acknowledged; the connection went down on the way."""
    caplog.set_level(logging.INFO, logger="scheduler")
    async with world(tmp_path, ["a"], capacity=2, shutdown_timeout=5) as (sim, service, _):
        for _ in range(2):
            sim.instances["a"].add_job(duration=500)
        await wait_for(lambda: service.ledger.running("a") == 2)
        sim.instances["a"].set_faults(EVERYTHING_FAILS)
        took = await stop_and_time(service)
        assert metric(service, "connection_up", connection="a") == 0
    assert took <= 5 + 30 + 0.5
    ids = tuple(sorted(sim.instances["a"].tasks))
    report = service.stop_report
    assert report is not None and report.unacknowledged == {"a": ids}
    assert report.acknowledged == {} and report.exit_status == EXIT_NOT_ACKNOWLEDGED
    progress = waiting(caplog)
    assert f"waiting for 2 final report(s) not yet acknowledged ({ids[0]}, {ids[1]})" \
        in progress[0], progress
    (last,) = lines(caplog, "stopped:", logging.ERROR)
    assert last == (f"stopped: 0 final result(s) acknowledged; 2 final result(s) NOT "
                    f"acknowledged by a (task {ids[0]}, {ids[1]}); exit status 3")


async def test_a_second_signal_cancels_at_once_and_still_tells_the_truth(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path, ["a"], capacity=1) as (sim, service, _):
        sim.instances["a"].add_job(duration=500)
        await wait_for(lambda: service.ledger.running("a") == 1)
        sim.instances["a"].set_faults(EVERYTHING_FAILS)
        took = await stop_and_time(service, abort_after=1)
    assert took <= 1 + 30 + 0.5
    report = service.stop_report
    assert report is not None and report.unacknowledged == {"a": tuple(sim.instances["a"].tasks)}
    assert not report.clean


async def test_a_report_under_way_at_the_stop_gets_the_bound_from_the_stop(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A job that ended before the stop is still retrying its final report (its own
    budget is longer): the stop bounds it, from the stop."""
    async with world(tmp_path, ["a"], capacity=1) as (sim, service, _):
        sim.instances["a"].add_job(duration=5)
        await wait_for(lambda: service.ledger.running("a") == 1)
        sim.instances["a"].set_faults(EVERYTHING_FAILS)
        await wait_for(lambda: bool(service.loops["a"].reports.sending))
        await trio.sleep(20)
        took = await stop_and_time(service)
    assert took <= 30 + 0.5
    report = service.stop_report
    assert report is not None and report.unacknowledged == {"a": tuple(sim.instances["a"].tasks)}


async def test_a_clean_stop_says_so_and_exits_0(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scheduler")
    async with world(tmp_path, ["a"], capacity=2) as (sim, service, _):
        for _ in range(2):
            sim.instances["a"].add_job(duration=25)
        await wait_for(lambda: service.ledger.running("a") == 2)
        await stop_and_time(service)
    report = service.stop_report
    assert report is not None and report.clean and report.exit_status == 0
    assert report.acknowledged == {"a": tuple(sorted(sim.instances["a"].tasks))}
    assert lines(caplog, "stopped:", logging.INFO) == [
        "stopped: every task is finished and reported (2 final result(s) acknowledged "
        "during the shutdown); no request key left unresolved"]
    progress = waiting(caplog)
    assert len(progress) == 2 and "waiting for 2 running task(s)" in progress[0], progress


def test_the_last_line_names_every_loose_end() -> None:
    report = StopReport(acknowledged={"a": (3,)}, unacknowledged={"a": (12, 13), "b": (4,)},
                        unresolved_keys=("c",))
    assert report.line() == (
        "stopped: 1 final result(s) acknowledged; 3 final result(s) NOT acknowledged by a "
        "(task 12, 13); by b (task 4); 1 request key(s) left unresolved for the next start "
        "(c); exit status 3")
    assert report.exit_status == EXIT_NOT_ACKNOWLEDGED == 3
    assert StopReport(acknowledged={}, unacknowledged={}, unresolved_keys=()).exit_status == 0
