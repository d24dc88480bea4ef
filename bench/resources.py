"""Figure 6: CPU per task, tasks/s and RSS of ``ours``, in real time, one process per measurement.

Unlike figures 1-5 this is about the process, not the policy, so it runs on the real
clock and measures a real child process:

* **throughput**: the simulator (this process) queues ``tasks`` no-op jobs
  (``sleep 0``) over three instances; a child process runs the real service
  (``Service`` with the ``SimulatedExecutor``, metrics endpoint on, state files on
  disk, as in production minus the job processes) against it over loopback. The
  child measures ``time.process_time()`` and ``time.perf_counter()`` from its first
  task start to its last task's final report: CPU ms per task and tasks/s. The
  simulator's own CPU is measured in this process over the same run and printed
  beside it (it is the other half of every RPC).
* **RSS**: one child per size starts the service with 1, 10 or 100 connections to
  instances with no jobs, waits until every connection has declared and then
  idles for a few fetch intervals, and reports ``VmRSS``/``VmHWM`` from
  ``/proc/self/status`` and ``ru_maxrss``. A child that only imports the same
  modules gives the interpreter's share.

Child command line: ``python -m bench.resources child MODE CONFIG [N]``.
"""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from scheduler.sim import InstanceSpec, Simulator

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- child


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _memory() -> dict[str, float]:
    return {
        "vm_rss_mib": _status_kib("VmRSS") / 1024,
        "vm_hwm_mib": _status_kib("VmHWM") / 1024,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(mode: str, config_path: str, n: int) -> dict[str, Any]:
    from scheduler.config import load_config
    from scheduler.executor.simulated import SimulatedExecutor
    from scheduler.protocol import Result, Task
    from scheduler.service import Service
    from scheduler.task.log import TaskLog

    if mode == "imports":
        return _memory()

    class Timed(SimulatedExecutor):
        def __init__(self) -> None:
            super().__init__()
            self.first: tuple[float, float] | None = None

        async def execute(self, task: Task, log: TaskLog) -> Result:
            if self.first is None:
                self.first = (time.perf_counter(), time.process_time())
            return await super().execute(task, log)

    logging.basicConfig(level=logging.ERROR)
    config = load_config(Path(config_path))
    executor = Timed()
    service = Service(config, executor=executor, seed=1)

    def finished() -> int:
        # Started, and no slot held any more: every final report went out. (Cheap: a
        # registry scan here would cost more CPU than the service itself.)
        led = service.ledger
        busy = sum(led.running(name) + led.reserved(name) for name in led.names)
        return len(executor.executed) if busy == 0 else -1

    async def main() -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            out: dict[str, Any] = {}
            if mode == "throughput":
                while finished() < n:  # noqa: ASYNC110 (the service exposes no event)
                    await trio.sleep(0.01)
                wall, cpu = time.perf_counter(), time.process_time()
                assert executor.first is not None
                out["tasks"] = n
                out["wall_s"] = wall - executor.first[0]
                out["cpu_s"] = cpu - executor.first[1]
            else:  # idle
                while not (len(service.loops) == n  # noqa: ASYNC110
                           and all(lp.declared for lp in service.loops.values())):
                    await trio.sleep(0.05)
                await trio.sleep(5.0)  # a few fetch intervals of idle polling
                out["connections"] = n
            out.update(_memory())
            service.abort()
        return out

    return trio.run(main)


# --------------------------------------------------------------------------- parent


async def _with_child(sim: Simulator, argv: list[str]) -> tuple[dict[str, Any], float]:
    """Run a child against the serving simulator; its JSON result and our CPU meanwhile."""
    cpu0 = time.process_time()
    proc = await trio.run_process(
        [sys.executable, "-m", "bench.resources", "child", *argv],
        cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False,
    )
    cpu = time.process_time() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed ({proc.returncode}):\n"
                           + proc.stderr.decode(errors="replace")[-3000:])
    return json.loads(proc.stdout.decode().strip().splitlines()[-1]), cpu


def _write_config(sim: Simulator, tmp: Path, capacity: int, interval: float) -> Path:
    return sim.write_runner_config(
        tmp / "config.toml", capacity=capacity, state_dir=tmp / "state",
        fetch_interval=interval, fetch_timeout=30, report_interval=1, shutdown_timeout=5,
    )


async def _throughput(tasks: int, capacity: int) -> dict[str, Any]:
    sim = Simulator(["a", "b", "c"], seed=1)
    names = list(sim.instances)
    for i in range(tasks):
        sim.instances[names[i % 3]].add_job(duration=0)
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve, "127.0.0.1", 0)
            config = _write_config(sim, Path(tmp), capacity, 1.0)
            out, sim_cpu = await _with_child(sim, ["throughput", str(config), str(tasks)])
            nursery.cancel_scope.cancel()
    snap = sim.ledger.statistics()
    out["sim_cpu_s"] = sim_cpu
    out["capacity"] = capacity
    out["finished_on_server"] = snap.finished
    out["lost"] = snap.lost
    out["duplicate_executions"] = snap.duplicate_executions
    return out


async def _idle(connections: int) -> dict[str, Any]:
    sim = Simulator([InstanceSpec(f"i{k}") for k in range(connections)], seed=1)
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve, "127.0.0.1", 0)
            config = _write_config(sim, Path(tmp), 4, 1.0)
            out, _ = await _with_child(sim, ["idle", str(config), str(connections)])
            nursery.cancel_scope.cancel()
    return out


def measure(tasks: int = 2000, capacity: int = 10,
            sizes: tuple[int, ...] = (1, 10, 100)) -> dict[str, Any]:
    result: dict[str, Any] = {"throughput": trio.run(_throughput, tasks, capacity)}
    imports = subprocess.run(
        [sys.executable, "-m", "bench.resources", "child", "imports", "-", "0"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    result["imports"] = json.loads(imports.stdout.strip().splitlines()[-1])
    result["idle"] = [trio.run(_idle, n) for n in sizes]
    return result


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        print(json.dumps(measure(), indent=2))
