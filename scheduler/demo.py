"""``forgejo-scheduler demo``: the real service against three simulated Forgejos.

Three instances with different weights, fetch intervals and loads, all of them
dropping 10 % of FetchTask answers after assigning (the lost-response case that
idempotent fetch exists for), one answering some 5xx, one stalling for a while.
The service runs exactly as ``run`` does (config file, loopback HTTP, host
executor running real bash steps) with capacity 4. First what each instance injects
(read from its FaultPlan) and a legend of the progress line; every second a progress line;
at the end a report whose numbers come from the simulator's ledger (what the
servers saw) and from the service's own metrics.

Exit status 1 if any task was lost, ran twice, or the capacity was exceeded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from scheduler.config import load_config
from scheduler.connection import Phase
from scheduler.logs import setup_logging
from scheduler.service import Service, Started
from scheduler.sim import FaultPlan, InstanceSpec, Simulator
from scheduler.slots import jain_index

DESCRIPTION = (
    "The real service against three simulated Forgejo instances with different weights, "
    "loads and injected faults. Prints the faults and a legend first, then a progress line "
    "every second, then a report from the simulator's ledger and the service's metrics. "
    "Exit 1 if a task was lost, ran twice, or the capacity was exceeded."
)
SAMPLE_EVERY = 0.05


@attrs.frozen
class DemoConnection:
    name: str
    weight: float
    fetch_interval: float
    rate: float  # jobs per second arriving on the simulated instance
    durations: tuple[float, float]
    error_5xx: float = 0.0
    stall: tuple[float, float] | None = None  # fractions of the run


SCENARIO = (
    DemoConnection("alpha", weight=1, fetch_interval=1.0, rate=1.5, durations=(0.5, 2.0)),
    DemoConnection("beta", weight=1, fetch_interval=2.0, rate=1.0, durations=(0.5, 3.0),
                   error_5xx=0.05),
    DemoConnection("gamma", weight=2, fetch_interval=0.5, rate=2.0, durations=(0.5, 2.0),
                   stall=(0.35, 0.5)),
)
DROP_AFTER_ASSIGN = 0.10
FETCH_TIMEOUT = 3.0
SHUTDOWN_TIMEOUT = 10.0


PHASES = {
    Phase.STARTING: "Declare not answered yet",
    Phase.IDLE: "waiting fetch_interval before the next FetchTask",
    Phase.HUNGRY: "waiting for the pool to grant slots",
    Phase.FETCHING: "a FetchTask in flight",
    Phase.UNRESOLVED: "the last FetchTask's outcome is unknown (answer dropped or timed "
    "out): the same request key is retried and its slots stay reserved",
    Phase.DOWN: "refused (e.g. bad token): probing with Declare, holding no slot",
    Phase.STOPPED: "stopped",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of job arrivals")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the simulated arrivals, durations and faults (default 1)")
    parser.add_argument("--capacity", type=int, default=4,
                        help="slots of the runner, shared by the three connections (default 4)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.capacity < 1:
        print("error: --duration must be > 0 and --capacity >= 1", file=sys.stderr)
        return 2
    # Progress lines tell the story; per-task INFO lines would drown them.
    setup_logging("WARNING" if args.log_level.upper() == "INFO" else args.log_level,
                  fmt=args.log_format)
    progress = sys.stderr if args.json else sys.stdout
    report = trio.run(run_demo, args.duration, args.seed, args.capacity, progress)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_report(report, sys.stdout)
    return 0 if report["ok"] else 1


def write_config(
    sim: Simulator, directory: Path, *, capacity: int, scenario: tuple[DemoConnection, ...]
) -> Path:
    """The same kind of config file an operator writes; tokens in private files."""
    lines = [
        "[runner]",
        f"capacity = {capacity}",
        f'fetch_timeout = "{FETCH_TIMEOUT}s"',
        'report_interval = "1s"',
        f'shutdown_timeout = "{SHUTDOWN_TIMEOUT}s"',
        f'state_dir = "{directory / "state"}"',
        'labels = ["sim:host"]',
        "",
        "[metrics]",
        'listen = "127.0.0.1:0"',
    ]
    for c in scenario:
        inst = sim.instances[c.name]
        token_file = directory / f"{c.name}.token"
        token_file.touch(mode=0o600)
        token_file.write_text(inst.runner.token + "\n")
        lines += [
            "",
            f"[connections.{c.name}]",
            f'url = "{sim.base_url(c.name)}"',
            f'uuid = "{inst.runner.uuid}"',
            f'token_file = "{token_file}"',
            f"weight = {c.weight}",
            f'fetch_interval = "{c.fetch_interval}s"',
        ]
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def instance_specs(duration: float, scenario: tuple[DemoConnection, ...]) -> list[InstanceSpec]:
    specs = []
    for c in scenario:
        stalls = [(c.stall[0] * duration, c.stall[1] * duration)] if c.stall else []
        specs.append(
            InstanceSpec(
                name=c.name,
                labels=("sim",),
                rate=c.rate,
                duration_range=c.durations,
                faults=FaultPlan(
                    drop_after_assign=DROP_AFTER_ASSIGN,
                    error_5xx=c.error_5xx,
                    stall_windows=stalls,
                ),
            )
        )
    return specs


@attrs.define
class Sampler:
    """Integrates slots in use and the fair-share target over time, from the ledger."""

    service: Service
    slot_seconds: dict[str, float] = attrs.field(factory=dict)  # held: running + reserved
    busy_seconds: dict[str, float] = attrs.field(factory=dict)  # running only
    share_seconds: dict[str, float] = attrs.field(factory=dict)

    async def run(self) -> None:
        last = trio.current_time()
        while True:
            await trio.sleep(SAMPLE_EVERY)
            now = trio.current_time()
            dt, last = now - last, now
            for name, s in self.service.ledger.statistics().connections.items():
                self.slot_seconds[name] = self.slot_seconds.get(name, 0.0) + s.held * dt
                self.busy_seconds[name] = self.busy_seconds.get(name, 0.0) + s.running * dt
                self.share_seconds[name] = self.share_seconds.get(name, 0.0) + s.fair_share * dt

    @property
    def max_in_use(self) -> int:
        """The most slots held at once: the pool notes it after every change."""
        return self.service.pool.statistics().peak_in_use


async def run_demo(
    duration: float, seed: int, capacity: int, progress: TextIO,
    scenario: tuple[DemoConnection, ...] = SCENARIO,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="forgejo-scheduler-demo-") as tmp:
        sim = Simulator(instance_specs(duration, scenario), seed=seed)
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve, "127.0.0.1", 0)
            print_scenario(sim, scenario, progress)
            config = load_config(write_config(sim, Path(tmp), capacity=capacity,
                                              scenario=scenario))
            service = Service(config, seed=seed)
            sampler = Sampler(service)
            done = trio.Event()

            async def run_service(task_status: trio.TaskStatus[Started]) -> None:
                try:
                    await service.run(task_status=task_status)
                finally:
                    done.set()

            started: Started = await nursery.start(run_service)
            if started.metrics_address:
                host, port = started.metrics_address
                print(f"metrics: http://{host}:{port}/metrics", file=progress)
            nursery.start_soon(sampler.run)
            t0 = trio.current_time()
            nursery.start_soon(print_progress, service, sim, t0, progress)
            await trio.sleep(duration)
            sim.stop_arrivals()
            print(f"t={duration:.0f}s arrivals stopped; draining", file=progress)
            service.request_stop()
            with trio.move_on_after(SHUTDOWN_TIMEOUT + 4):
                await done.wait()
            elapsed = trio.current_time() - t0
            nursery.cancel_scope.cancel()
        return build_report(service, sim, sampler, capacity, duration, elapsed, scenario)


def describe_faults(plan: FaultPlan) -> list[str]:
    """What a simulated instance does wrong, in words, from its actual FaultPlan."""
    out = []
    if plan.drop_after_assign:
        out.append(f"loses {plan.drop_after_assign:.0%} of FetchTask answers after assigning "
                   "their tasks")
    if plan.error_5xx:
        out.append(f"answers {plan.error_5xx:.0%} of FetchTasks 503 unavailable")
    if plan.internal_error:
        out.append(f"answers {plan.internal_error:.0%} of FetchTasks 500 internal")
    if plan.reset_before_assign:
        out.append(f"resets {plan.reset_before_assign:.0%} of FetchTask connections")
    if plan.delay:
        out.append(f"answers every FetchTask {plan.delay:g}s late")
    for start, end in plan.stall_windows:
        out.append(f"never answers a FetchTask from t={start:g}s to t={end:g}s (stall)")
    if plan.fail_update_log:
        out.append(f"answers {plan.fail_update_log:.0%} of UpdateLogs 503")
    if plan.fail_update_task:
        out.append(f"answers {plan.fail_update_task:.0%} of UpdateTasks 503")
    return out or ["no faults"]


def print_scenario(sim: Simulator, scenario: tuple[DemoConnection, ...], out: TextIO) -> None:
    """Once at the start: each instance's load and injected faults, and the legend."""
    print("simulated instances and the faults they inject (a lost answer's tasks come back "
          "when the runner retries its request key):", file=out)
    for c in scenario:
        faults = "; ".join(describe_faults(sim.instances[c.name].faults.plan))
        print(f"  {c.name}: weight {c.weight:g}, fetch_interval {c.fetch_interval:g}s, "
              f"{c.rate:g} jobs/s of {c.durations[0]:g}-{c.durations[1]:g}s; {faults}",
              file=out)
    print("progress line: t=SECONDS slots IN-USE/CAPACITY | per connection "
          "NAME: RUNNING+RESERVEDr share FAIR-SHARE qQUEUED PHASE | finished, outstanding "
          "(tasks done / assigned and not done, as the servers count them)", file=out)
    print("  RUNNING+RESERVEDr: slots running its tasks + slots reserved for its FetchTask; "
          "share: its fair share of the slots now; qQUEUED: jobs waiting on its server",
          file=out)
    print("  PHASE: " + "; ".join(f"{p.value}: {text}" for p, text in PHASES.items()),
          file=out, flush=True)


async def print_progress(service: Service, sim: Simulator, t0: float, out: TextIO) -> None:
    while True:
        await trio.sleep(1.0)
        t = trio.current_time() - t0
        stats = service.statistics()
        slots = stats.pool.slots
        parts = []
        for name, s in slots.connections.items():
            loop = stats.connections.get(name)
            phase = loop.phase.value if loop else "-"
            queued = len(sim.instances[name].waiting_jobs) if name in sim.instances else 0
            parts.append(
                f"{name}: {s.running}+{s.reserved}r share {s.fair_share:.1f} q{queued} {phase}"
            )
        server = sim.ledger.statistics()
        print(
            f"t={t:4.0f}s slots {slots.in_use}/{slots.capacity} | "
            + " | ".join(parts)
            + f" | finished {server.finished} outstanding {server.outstanding}",
            file=out,
            flush=True,
        )


def build_report(
    service: Service, sim: Simulator, sampler: Sampler, capacity: int, duration: float,
    elapsed: float, scenario: tuple[DemoConnection, ...],
) -> dict[str, Any]:
    server = sim.ledger.statistics()
    reg = service.metrics.registry

    def metric(name: str, **labels: str) -> float:
        return reg.get_sample_value(f"forgejo_scheduler_{name}", labels) or 0.0

    connections: dict[str, Any] = {}
    ratios = []
    for c in scenario:
        n = c.name
        fetches = sum(
            metric("fetch_requests_total", connection=n, outcome=o)
            for o in ("tasks", "empty", "error", "timeout", "unauthorized", "throttled")
        )
        ss, share = sampler.slot_seconds.get(n, 0.0), sampler.share_seconds.get(n, 0.0)
        if share > 0:
            ratios.append(ss / share)
        inst = server.instances.get(n)
        connections[n] = {
            "weight": c.weight,
            "fetch_interval": c.fetch_interval,
            "tasks_assigned": inst.assigned if inst else 0,
            "tasks_finished": inst.finished if inst else 0,
            "fetch_requests": int(fetches),
            "fetch_retries": int(metric("fetch_retries_total", connection=n)),
            "request_keys_reused": int(metric("request_keys_reused_total", connection=n)),
            "tasks_recovered": int(metric("tasks_recovered_total", connection=n)),
            "tasks_rejected": int(metric("tasks_rejected_total", connection=n)),
            "slot_seconds": round(ss, 2),
            "busy_slot_seconds": round(sampler.busy_seconds.get(n, 0.0), 2),
            "fair_share_slot_seconds": round(share, 2),
            "fair_share": round(share / elapsed, 3) if elapsed else 0.0,
        }
    lost = server.lost
    duplicates = server.duplicate_executions
    peak = server.peak_outstanding
    ok = lost == 0 and duplicates == 0 and peak <= capacity and sampler.max_in_use <= capacity
    return {
        "ok": ok,
        "capacity": capacity,
        "duration_s": duration,
        "elapsed_s": round(elapsed, 2),
        "max_slots_in_use": sampler.max_in_use,
        "peak_outstanding_on_servers": peak,
        "tasks_assigned": server.assigned,
        "tasks_finished": server.finished,
        "lost_tasks": lost,
        "duplicate_executions": duplicates,
        "jain_index": round(jain_index(ratios), 4),
        "connections": connections,
    }


def print_report(report: dict[str, Any], out: TextIO) -> None:
    print("", file=out)
    print(f"capacity {report['capacity']}, max slots in use {report['max_slots_in_use']}, "
          f"peak tasks outstanding on the servers {report['peak_outstanding_on_servers']}",
          file=out)
    print(f"assigned {report['tasks_assigned']}, finished {report['tasks_finished']}, "
          f"lost {report['lost_tasks']}, duplicate executions {report['duplicate_executions']}, "
          f"Jain index {report['jain_index']}", file=out)
    header = ("connection", "weight", "assigned", "finished", "fetches", "retries",
              "reused", "recovered", "slot-s", "fair slot-s")
    print("  ".join(f"{h:>11}" for h in header), file=out)
    for name, c in report["connections"].items():
        row = (name, c["weight"], c["tasks_assigned"], c["tasks_finished"], c["fetch_requests"],
               c["fetch_retries"], c["request_keys_reused"], c["tasks_recovered"],
               c["slot_seconds"], c["fair_share_slot_seconds"])
        print("  ".join(f"{v!s:>11}" for v in row), file=out)
    print("OK: nothing lost, nothing ran twice, capacity never exceeded" if report["ok"]
          else "FAILED: see the numbers above", file=out)
    logging.getLogger(__name__).debug("report printed")
