"""The commands as a user runs them: real processes, real signals, real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import attrs
import httpx
import trio

from scheduler.connection import Phase
from scheduler.demo import PHASES, describe_faults
from scheduler.sim import FaultPlan, InstanceSpec
from tests.support.daemon import CLI, ROOT
from tests.support.harness import daemon_world
from tests.support.noloss import assert_no_loss


def test_demo_json_report() -> None:
    proc = subprocess.run(
        [*CLI, "demo", "--duration", "4", "--seed", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert report["capacity"] == 4
    assert 0 < report["max_slots_in_use"] <= report["capacity"]
    assert report["lost_tasks"] == 0 and report["duplicate_executions"] == 0
    assert 0.25 <= report["jain_index"] <= 1.0
    assert set(report["connections"]) == {"alpha", "beta", "gamma"}
    for c in report["connections"].values():
        for key in ("weight", "tasks_assigned", "tasks_finished", "fetch_requests",
                    "fetch_retries", "request_keys_reused", "tasks_recovered",
                    "slot_seconds", "fair_share"):
            assert key in c
        assert c["tasks_assigned"] == c["tasks_finished"]
    assert sum(c["tasks_finished"] for c in report["connections"].values()) > 0
    assert "t=" in proc.stderr  # progress went to stderr, not into the JSON
    # Once at the start, on stderr too: each instance's faults, from its FaultPlan, and
    # the legend of the progress line.
    assert proc.stderr.count("simulated instances and the faults they inject") == 1
    assert "alpha: weight 1, fetch_interval 1s" in proc.stderr
    assert "loses 10% of FetchTask answers after assigning their tasks" in proc.stderr
    assert "answers 5% of FetchTasks 503 unavailable" in proc.stderr
    assert "never answers a FetchTask from t=1.4s to t=2s (stall)" in proc.stderr
    assert proc.stderr.count("progress line: t=SECONDS slots IN-USE/CAPACITY") == 1
    assert "unresolved: the last FetchTask's outcome is unknown" in proc.stderr


def test_demo_fault_descriptions_and_legend_cover_everything() -> None:
    every = FaultPlan(drop_after_assign=0.1, error_5xx=0.2, internal_error=0.3,
                      reset_before_assign=0.4, delay=1.5, stall_windows=[(1, 2)],
                      fail_update_log=0.5, fail_update_task=0.6)
    lines = describe_faults(every)
    assert len(lines) == len(attrs.fields(FaultPlan))  # a new fault kind needs its words
    assert "answers every FetchTask 1.5s late" in lines
    assert describe_faults(FaultPlan()) == ["no faults"]
    assert set(PHASES) == set(Phase)


def test_check_config_redacts_and_fails_clearly(tmp_path: Path) -> None:
    token = "f" * 40
    (tmp_path / "tok").write_text(token + "\n")
    (tmp_path / "tok").chmod(0o600)
    good = tmp_path / "good.toml"
    good.write_text(
        "[runner]\ncapacity = 2\n\n[connections.one]\n"
        'url = "https://forgejo.example/"\nuuid = "u-1"\ntoken_file = "tok"\n'
        'labels = ["debian:host"]\n'
    )
    proc = subprocess.run([*CLI, "check-config", "--config", str(good)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "[connections.one]" in proc.stdout and token not in proc.stdout + proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("capacity = 2", "capacity = 0"))
    proc = subprocess.run([*CLI, "check-config", "--config", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "bad.toml" in proc.stderr and "runner.capacity" in proc.stderr
    assert token not in proc.stderr


async def test_run_daemon_serves_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    specs = InstanceSpec("a", faults=FaultPlan(drop_after_assign=0.3)), InstanceSpec("b")
    async with daemon_world(tmp_path, specs, seed=5, capacity=2, fetch_interval=0.2) as w:
        sim = w.sim
        for name in "ab":
            for _ in range(3):
                sim.instances[name].add_job(duration=0.2)
        daemon = await w.start()
        with trio.fail_after(60):
            while sim.ledger.statistics().finished < 6:
                await trio.sleep(0.1)
        async with httpx.AsyncClient(base_url=daemon.metrics_url) as http:
            metrics = (await http.get("/metrics")).text
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
        assert 'forgejo_scheduler_tasks_finished_total{connection="a",result="success"} 3.0' \
            in metrics
        daemon.signal(signal.SIGTERM)
        code = await daemon.wait()
    assert code == 0, daemon.log.decode()[-2000:]
    assert_no_loss(sim)
    for inst in sim.instances.values():
        token = inst.runner.token
        assert token.encode() not in daemon.log and token not in metrics
    assert b"stopped" in daemon.log


async def test_second_sigterm_cancels_running_tasks_and_reports_them(tmp_path: Path) -> None:
    async with daemon_world(tmp_path, ["a"], seed=5, capacity=1, fetch_interval=0.2) as w:
        sim = w.sim
        sim.instances["a"].add_job(duration=300)
        daemon = await w.start()
        with trio.fail_after(30):
            while not any(t.updates for t in sim.instances["a"].tasks.values()):
                await trio.sleep(0.05)
        daemon.signal(signal.SIGTERM)  # drain: would wait up to shutdown_timeout (10 min)
        await trio.sleep(0.5)
        daemon.signal(signal.SIGTERM)  # cancel now
        code = await daemon.wait(within=30)
    assert code == 0
    assert sim.ledger.statistics().results == {"RESULT_CANCELLED": 1}


async def test_a_stop_that_leaves_a_result_unacknowledged_exits_3_and_names_it(
    tmp_path: Path,
) -> None:
    """Forgejo stops acknowledging reports while a task runs; SIGTERM: the task ends, its
    final report gets shutdown_report_timeout (1 s here), the last line names it and the
    exit status is 3 (scheduler.drain.EXIT_NOT_ACKNOWLEDGED)."""
    bounds = {"shutdown_report_timeout": "1s", "shutdown_resolve_timeout": "1s"}
    async with daemon_world(tmp_path, ["a"], seed=5, capacity=1, fetch_interval=0.2,
                            runner_extra=bounds) as w:
        sim = w.sim
        sim.instances["a"].add_job(duration=2)
        daemon = await w.start()
        with trio.fail_after(30):
            while not any(t.updates for t in sim.instances["a"].tasks.values()):
                await trio.sleep(0.05)
        sim.instances["a"].set_faults(FaultPlan(fail_update_log=1.0, fail_update_task=1.0))
        daemon.signal(signal.SIGTERM)
        code = await daemon.wait(within=30)
    (task_id,) = sim.instances["a"].tasks
    assert code == 3, daemon.log.decode()[-2000:]
    assert (f"1 final result(s) NOT acknowledged by a (task {task_id}); exit status 3"
            in daemon.log.decode())
