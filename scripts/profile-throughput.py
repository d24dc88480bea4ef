"""Profile figure 6a: the service child of bench.resources under cProfile, 1000 no-op tasks.

Usage, from a source tree's root: ``python scripts/profile-throughput.py OUT.prof``.
Prints the child's JSON result (its own CPU time under the profiler), then the top
entries by tottime. The profiler roughly doubles the CPU per task: compare
proportions and entries, not totals (bench/README.md, "Profiling figure 6a").
"""

from __future__ import annotations

import os
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.getcwd())

import trio

from bench import resources
from scheduler.sim import Simulator

TASKS = 1000


async def profile(out: str) -> None:
    sim = Simulator(["a", "b", "c"], seed=1)
    names = list(sim.instances)
    for i in range(TASKS):
        sim.instances[names[i % 3]].add_job(duration=0)
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve, "127.0.0.1", 0)
            config = resources._write_config(sim, Path(tmp), 10, 1.0)
            child = [sys.executable, "-m", "cProfile", "-o", out, "-m", "bench.resources",
                     "child", "throughput", str(config), str(TASKS)]
            proc = await trio.run_process(child, capture_stdout=True, check=True)
            print(proc.stdout.decode().strip().splitlines()[-1])
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(profile, sys.argv[1])
    pstats.Stats(sys.argv[1]).sort_stats("tottime").print_stats(10)
