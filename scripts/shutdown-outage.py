#!/usr/bin/env python3
"""Shutdown during an outage: seconds from SIGTERM to exit of the real daemon.

For each case (0 and 2 running tasks) this starts the simulator (one instance, in this
process, on loopback), a real ``forgejo-scheduler run`` child on a config for it
(capacity 2, every other setting at its default: shutdown_timeout 10m), waits until
the case holds (the connection polling; or two jobs of ``--job-seconds`` running),
stops the simulator (its port now refuses connections: the Forgejo is down), waits
two seconds so the daemon has met the outage, sends SIGTERM and times the exit. A
daemon still running after ``--cap`` seconds is killed and reported as "> cap".

``--tree DIR`` runs the daemon from another source tree (e.g. the code before a
change, from ``git archive <commit> | tar -x -C DIR``); the simulator always comes
from this one. Usage::

    .venv/bin/python scripts/shutdown-outage.py [--tree DIR] [--cap 240] [--job-seconds 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.sim import Simulator  # noqa: E402


async def wait_until(what: str, probe: Callable[[], bool], within: float = 60) -> None:
    """Poll ``probe`` until it holds; TooSlowError (naming ``what``) after ``within`` s."""
    try:
        with trio.fail_after(within):
            while not probe():  # noqa: ASYNC110 (the simulator's state has no event)
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise SystemExit(f"gave up waiting for {what}") from None


async def one_case(tree: Path, running: int, job_seconds: float, cap: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        sim = Simulator(("a",), seed=1)
        log_path = home / "run.log"
        async with trio.open_nursery() as nursery:
            sim_scope = trio.CancelScope()

            async def serve(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
                with sim_scope:
                    await sim.serve("127.0.0.1", 0, task_status=task_status)

            await nursery.start(serve)
            config = sim.write_runner_config(home / "config.toml", capacity=2,
                                             state_dir=home / "state", fetch_interval="1s")
            for _ in range(running):
                sim.instances["a"].add_job(duration=job_seconds)
            with log_path.open("wb") as log:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "scheduler", "run", "--config", str(config)],
                    cwd=tree, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"},
                )
            inst = sim.instances["a"]
            if running:  # both slots busy: the daemon does not poll meanwhile
                await wait_until(f"{running} running task(s)", lambda: sum(
                    1 for t in inst.tasks.values() if t.updates) >= running)
            else:
                await wait_until("the daemon polling",
                                 lambda: inst.rpc_counts.get("FetchTask", 0) >= 2)
            sim_scope.cancel()  # the Forgejo is gone: connections are refused
            await trio.sleep(2)
            t0 = trio.current_time()
            proc.send_signal(signal.SIGTERM)
            code: int | None = None
            with trio.move_on_after(cap):
                code = await proc.wait()
            took = trio.current_time() - t0
            if code is None:
                proc.kill()
                await proc.wait()
            nursery.cancel_scope.cancel()
        text = log_path.read_text(errors="replace")
        if os.environ.get("SHUTDOWN_OUTAGE_LOG"):
            print(text, file=sys.stderr)
        stopped = [line for line in text.splitlines() if "stopped:" in line]
        waiting = [line for line in text.splitlines() if "shutting down for" in line]
        return {
            "running": running,
            "seconds": None if code is None else round(took, 1),
            "exit": code,
            "last": stopped[-1].split(": ", 1)[-1] if stopped else "(no 'stopped' line)",
            "progress_lines": len(waiting),
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree of the daemon")
    parser.add_argument("--cap", type=float, default=240.0,
                        help="kill a daemon still running after this many seconds")
    parser.add_argument("--job-seconds", type=float, default=20.0,
                        help="duration of each running job (the job runs locally)")
    args = parser.parse_args()
    print(f"daemon from {args.tree}; Forgejo down (simulator stopped, connections refused) "
          f"2 s before SIGTERM; shutdown_timeout default (10m); jobs of {args.job_seconds:g}s")
    print(f"{'running tasks':>13}  {'SIGTERM -> exit':>15}  {'exit':>4}  "
          f"{'progress lines':>14}  last line")
    for running in (0, 2):
        r = await one_case(args.tree, running, args.job_seconds, args.cap)
        took = f"> {args.cap:g} s (killed)" if r["seconds"] is None else f"{r['seconds']} s"
        code = "-" if r["exit"] is None else str(r["exit"])
        print(f"{r['running']:>13}  {took:>15}  {code:>4}  {r['progress_lines']:>14}  {r['last']}",
              flush=True)


if __name__ == "__main__":
    trio.run(main)
