"""Soak: three simulated Forgejos, hostile answers, and a daemon killed -9 every minute.

    .venv/bin/python scripts/soak.py [--duration 360] [--kill-every 60] [--min-fetches 10000]

The simulator runs in this process (so its ledger outlives every daemon); the daemon
is the real ``forgejo-scheduler run`` as a child process with the host executor
(real bash steps). Faults on every instance: 20 % respond-then-drop, 5 % 5xx. Every
``--kill-every`` seconds the daemon gets SIGKILL and is started again at once. After
``--duration`` (and at least ``--min-fetches`` FetchTask calls) arrivals stop and the
last daemon gets SIGTERM and drains.

Prints assigned, finished, lost, duplicate executions, re-deliveries and the peak of
tasks outstanding on the servers against the capacity. Exit 1 if anything was lost,
ran twice, or the capacity was exceeded. Not part of the default test run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.sim import FaultPlan, InstanceSpec, Simulator  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402

INSTANCES = ("a", "b", "c")


def fetches(sim: Simulator) -> int:
    return sum(inst.rpc_counts.get("FetchTask", 0) for inst in sim.instances.values())


def line(sim: Simulator, t: float, kills: int) -> str:
    s = sim.ledger.statistics()
    return (
        f"t={t:5.0f}s kills={kills} fetches={fetches(sim)} assigned={s.assigned} "
        f"finished={s.finished} outstanding={s.outstanding} "
        f"peak={s.peak_outstanding} dup={s.duplicate_executions}"
    )


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    faults = FaultPlan(drop_after_assign=0.20, error_5xx=0.05)
    specs = [
        InstanceSpec(n, faults=faults, rate=args.rate, duration_range=(0.05, 0.4),
                     zombie_timeout=None)
        for n in INSTANCES
    ]
    sim = Simulator(specs, seed=args.seed)
    kills = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve, "127.0.0.1", 0)
        config = sim.write_runner_config(
            workdir / "config.toml", capacity=args.capacity, state_dir=workdir / "state",
            fetch_interval=0.05, fetch_timeout=5, shutdown_timeout=60,
        )
        t0 = trio.current_time()
        daemon = Daemon(config)
        await daemon.start(nursery)
        next_kill = t0 + args.kill_every
        next_line = t0 + 10
        while trio.current_time() - t0 < args.duration or fetches(sim) < args.min_fetches:
            await trio.sleep(0.2)
            now = trio.current_time()
            if now >= next_line:
                print(line(sim, now - t0, kills), flush=True)
                next_line += 10
            if now >= next_kill:
                daemon.kill9()
                await daemon.wait()
                kills += 1
                daemon = Daemon(config)
                await daemon.start(nursery)
                next_kill = now + args.kill_every
        sim.stop_arrivals()
        print(f"arrivals stopped after {trio.current_time() - t0:.0f}s; draining", flush=True)
        # Let the last daemon take what is queued, then drain it.
        with trio.move_on_after(120):
            while sim.instances and any(inst.waiting_jobs for inst in sim.instances.values()):
                await trio.sleep(0.5)
        daemon.signal(signal.SIGTERM)
        code = await daemon.wait(within=180)
        elapsed = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    snap = sim.ledger.statistics()
    report: dict[str, object] = {
        "seconds": round(elapsed, 1),
        "kills": kills,
        "fetch_task_calls": fetches(sim),
        "assigned": snap.assigned,
        "finished": snap.finished,
        "lost": snap.lost,
        "duplicate_executions": snap.duplicate_executions,
        "redelivered": snap.redelivered,
        "peak_outstanding": snap.peak_outstanding,
        "capacity": args.capacity,
        "results": dict(snap.results),
        "duplicates": {
            str(r.task_id): r.duplicate_reasons for r in sim.ledger.tasks.values() if r.duplicate
        },
        "last_exit_code": code,
    }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--kill-every", type=float, default=60.0)
    parser.add_argument("--min-fetches", type=int, default=10_000)
    parser.add_argument("--capacity", type=int, default=6)
    parser.add_argument("--rate", type=float, default=2.2, help="jobs/s per instance")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="forgejo-scheduler-soak-") as tmp:
        report = trio.run(soak, args, Path(tmp))
    print(json.dumps(report, indent=2))
    ok = (report["lost"] == 0 and report["duplicate_executions"] == 0
          and int(str(report["peak_outstanding"])) <= args.capacity)
    print("SOAK OK: nothing lost, nothing ran twice, capacity never exceeded" if ok
          else "SOAK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
