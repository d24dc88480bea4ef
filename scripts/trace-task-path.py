"""Trace one task from FetchTask to its final UpdateTask through the real service.

Run from a source tree's root:  python scripts/trace-task-path.py
(the figures of issue 10: which modules one task passes through, and the
caller -> callee edges between them; an edge into service.py is a callback upwards).
Counts the scheduler modules (not the simulator, not the executor's job) that run
while one task flows through, and the caller→callee edges between different modules.
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.getcwd())
import trio
import trio.testing

from scheduler.config import load_config
from scheduler.executor.simulated import SimulatedExecutor
from scheduler.service import Service
from scheduler.sim import InstanceSpec, Simulator

ROOT = str(Path.cwd() / "scheduler")
files: dict[str, int] = {}
edges: dict[tuple[str, str], int] = {}
order: list[str] = []


def mod(filename: str) -> str | None:
    if not filename.startswith(ROOT) or "/sim/" in filename:
        return None
    return filename[len(ROOT) - len("scheduler") :]


def prof(frame, event, arg):
    if event != "call":
        return
    callee = mod(frame.f_code.co_filename)
    if callee is None:
        return
    files[callee] = files.get(callee, 0) + 1
    if callee not in order:
        order.append(callee)
    back = frame.f_back
    caller = mod(back.f_code.co_filename) if back is not None else None
    if caller and caller != callee:
        edges[(caller, callee)] = edges.get((caller, callee), 0) + 1


async def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    sim = Simulator([InstanceSpec("a")], seed=7)
    async with trio.open_nursery() as n:
        await n.start(sim.serve, "127.0.0.1", 0)
        path = sim.write_runner_config(
            tmp / "config.toml",
            capacity=1,
            state_dir=tmp / "state",
            fetch_interval=1.0,
            fetch_timeout=30.0,
            shutdown_timeout=60.0,
            connections={},
        )
        service = Service(load_config(path), executor=SimulatedExecutor())
        await n.start(service.run)
        await trio.sleep(3)  # declared, idle polling
        inst = sim.instances["a"]
        sys.setprofile(prof)
        inst.add_job(duration=1)
        for _ in range(200):
            await trio.sleep(0.5)
            done = [t for t in inst.tasks.values() if t.result.name == "SUCCESS"]
            if done:
                break
        sys.setprofile(None)
        print("task finished:", bool(done), file=sys.stderr)
        service.request_stop()
        n.cancel_scope.cancel()


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
print(f"modules run while one task flows (FetchTask → final UpdateTask): {len(files)}")
for f in order:
    print("  ", f)
print(f"cross-module caller→callee edges: {len(edges)}")
for a, b in sorted(edges):
    print(f"   {a} -> {b}")
